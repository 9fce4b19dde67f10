"""cnipamd's leak reconciler against a real SQLite store and real libcni cache files, at
the moments that matter: between choosing what to release and releasing it.

An owner is released by the second of two passes at least the grace period apart
(core.collector); in that pass, a runtime may write the cache entry of a young
attachment, or another attachment may take a freed address, while the release waits for
the writers' lock. The cache is looked at again inside the releasing transaction
(reconciler.CacheEntries through Store.collect_garbage), after that lock, on the one
connection the process holds to the file: these tests prove each part. Then, on both
engines, which networks it judges (disableGC) and the counters it keeps for the metrics.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Container, Iterator
from pathlib import Path

import pytest

from cnipam.agent.reconciler import Reconciler, collected_networks
from cnipam.core.collector import Collection
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Lease, Owner
from cnipam.store.base import Store
from cnipam.store.sqlite import SQLiteStore
from tests.support.store_engines import ENGINES

NET = "recnet"
POOLS = parse_ecs({"ipv4-subnet": "10.31.0.0/24"}).pools
GRACE = 60.0
LATER = 3600.0  # the second pass's clock, this far ahead of the first: past the grace period


class AtRelease(SQLiteStore):
    """The real store; `meanwhile` runs when the reconciler, its candidates chosen, asks
    for the release (what a runtime may do at that moment)."""

    meanwhile: Callable[[], None] = staticmethod(lambda: None)

    def collect_garbage(
        self, network: str, valid: Container[tuple[str, str]], grace: float = 0.0, apply: bool = True
    ) -> Collection:
        self.meanwhile()
        return super().collect_garbage(network, valid, grace, apply)


def first_pass(store: AtRelease, cache: Path) -> Reconciler:
    """The reconciler after a first pass now: it has seen the leaks, released nothing."""
    reconciler = Reconciler(str(cache), GRACE)
    now = time.time()
    store.clock = lambda: now
    assert reconciler.reconcile(store) == []
    store.clock = lambda: now + LATER
    return reconciler


def second_pass(reconciler: Reconciler, store: AtRelease, meanwhile: Callable[[], None] = lambda: None) -> list[Lease]:
    """The pass past the grace period, `meanwhile` running as it asks for its release."""
    store.meanwhile = meanwhile
    return reconciler.reconcile(store)


def cache_entry(cache: Path, container: str, network: str = NET, config: dict[str, object] | None = None) -> None:
    """A libcni result cache entry, as a runtime writes it after an ADD (`config`: the
    network config it records, which the reconciler reads for disableGC)."""
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    recorded = base64.b64encode(json.dumps(config).encode()).decode() if config is not None else ""
    entry = {
        "kind": "cniCacheV1", "containerId": container, "config": recorded, "ifName": "eth0", "networkName": network,
    }  # fmt: skip
    (results / f"{network}-{container}-eth0").write_text(json.dumps(entry))


def add(store: SQLiteStore, container: str) -> str:
    return store.allocate(Owner.for_request(None, NET, container, "eth0"), POOLS)[0].ip


def holders(store: SQLiteStore) -> dict[str, str]:
    return {lease.container_id: lease.ip for lease in store.leases(NET) if lease.container_id}


def test_a_cache_entry_written_while_the_release_waits_for_the_lock_keeps_the_lease(tmp_path: Path) -> None:
    """The entry of "late" appears after the candidates were chosen, while the release
    waits behind another writer: it is seen, because it is judged after the lock."""
    store, cache = AtRelease(str(tmp_path / "r.db")), tmp_path / "cache"
    chosen = threading.Event()
    addresses = {container: add(store, container) for container in ("alive", "late", "gone")}
    cache_entry(cache, "alive")
    reconciler = first_pass(store, cache)
    other_writer = os.open(
        str(tmp_path / "r.db.lock"), os.O_RDWR | os.O_CLOEXEC
    )  # another process's place in the queue
    released: list[Lease] = []
    try:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: released.extend(second_pass(reconciler, store, chosen.set)))
        worker.start()
        assert chosen.wait(10), "the reconciler never asked for a release"
        time.sleep(0.2)  # it is now queued behind the lock
        assert worker.is_alive()
        cache_entry(cache, "late")
    finally:
        fcntl.flock(other_writer, fcntl.LOCK_UN)
        os.close(other_writer)
    worker.join(10)
    assert [(lease.container_id, lease.ip) for lease in released] == [("gone", addresses["gone"])]
    assert holders(store) == {"alive": addresses["alive"], "late": addresses["late"]}
    store.close()


def test_an_address_taken_by_another_attachment_meanwhile_is_not_released(tmp_path: Path) -> None:
    """A candidate, "gone", gets its DEL before the release, and "new" (no cache
    entry yet, as its runtime has not written one) is given an address. Only what is
    still a candidate inside the releasing transaction goes: nothing here."""
    store, cache = AtRelease(str(tmp_path / "r.db")), tmp_path / "cache"
    add(store, "alive")
    add(store, "gone")
    cache_entry(cache, "alive")

    def runtime_acts() -> None:
        store.release(f"cni:{NET}/gone/eth0")
        add(store, "new")

    assert second_pass(first_pass(store, cache), store, runtime_acts) == []
    assert sorted(holders(store)) == ["alive", "new"]
    store.close()


def test_a_leak_is_released_in_the_same_transaction_as_its_last_look(tmp_path: Path) -> None:
    """The control: nothing happens meanwhile, so the leak goes, and only it."""
    store, cache = AtRelease(str(tmp_path / "r.db")), tmp_path / "cache"
    kept = add(store, "alive")
    leaked = add(store, "gone")
    cache_entry(cache, "alive")
    assert [(lease.container_id, lease.ip) for lease in second_pass(first_pass(store, cache), store)] == [
        ("gone", leaked)
    ]
    assert holders(store) == {"alive": kept}
    store.close()


# -- which networks it judges, and what it counts ---------------------------------------------------


def test_the_reconciler_skips_networks_whose_config_disables_gc(tmp_path: Path) -> None:
    cache_entry(tmp_path, "c1", "collected", {"name": "collected"})
    cache_entry(tmp_path, "c2", "kept", {"name": "kept", "disableGC": "true"})
    cache_entry(tmp_path, "c3", "broken", {"name": "broken", "disableGC": 3})
    assert collected_networks(str(tmp_path)) == {"collected"}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = ENGINES[request.param](request, tmp_path)
    yield store
    assert store.problems() == []
    store.close()


def test_the_reconciler_counts_passes_candidates_and_releases(engine: Store, tmp_path: Path) -> None:
    """On both engines: the counters the metrics export (issue 15)."""
    now = time.time()
    engine.clock = lambda: now
    cache = tmp_path / "cache"
    for name in ("alive", "gone"):
        engine.allocate(Owner.for_request(None, NET, name, "eth0"), POOLS)
    cache_entry(cache, "alive", config={"name": NET})
    reconciler = Reconciler(str(cache), GRACE)
    counters = ("passes", "candidates", "last_candidates", "released")
    assert reconciler.reconcile(engine) == []
    assert [getattr(reconciler, name) for name in counters] == [1, 1, 1, 0]
    engine.clock = lambda: now + LATER
    assert [lease.container_id for lease in reconciler.reconcile(engine)] == ["gone"]
    assert [getattr(reconciler, name) for name in counters] == [2, 2, 1, 1]
    assert sorted({lease.container_id for lease in engine.leases(NET) if lease.container_id}) == ["alive"]
