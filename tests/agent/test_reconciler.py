"""cnipamd's leak reconciler against a real SQLite store and real libcni cache files, at
the moments that matter: between choosing what to release and releasing it.

It chooses its candidates from one read and releases them in a later write transaction;
a runtime may write the cache entry of a young attachment, or another attachment may
take a freed address, in between. The cache is looked at again inside the releasing
transaction (reconciler.StillValid through Store.collect_garbage), after the writers'
lock, on the one connection the process holds to the file: these tests prove each part.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cnipam.agent.reconciler import reconcile
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Lease, Owner
from cnipam.store.sqlite import SQLiteStore

NET = "recnet"
POOLS = parse_ecs({"ipv4-subnet": "10.31.0.0/24"}).pools
GRACE = 60.0
LATER = 3600.0  # the reconciler's clock, this far ahead: every lease made now is past the grace period


class AtRelease(SQLiteStore):
    """The real store; `meanwhile` runs when the reconciler, its candidates chosen, asks
    for the release (what a runtime may do at that moment)."""

    meanwhile: Callable[[], None] = staticmethod(lambda: None)

    def collect_garbage(self, network: str, valid: set[tuple[str, str]]) -> list[Lease]:
        self.meanwhile()
        return super().collect_garbage(network, valid)


def cache_entry(cache: Path, container: str) -> None:
    """A libcni result cache entry, as a runtime writes it after an ADD."""
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    entry = {"kind": "cniCacheV1", "containerId": container, "config": "", "ifName": "eth0", "networkName": NET}
    (results / f"{NET}-{container}-eth0").write_text(json.dumps(entry))


def add(store: SQLiteStore, container: str) -> str:
    return store.allocate(Owner.for_request(None, NET, container, "eth0"), POOLS)[0].ip


def holders(store: SQLiteStore) -> dict[str, str]:
    return {lease.container_id: lease.ip for lease in store.leases(NET) if lease.container_id}


def test_a_cache_entry_written_while_the_release_waits_for_the_lock_keeps_the_lease(tmp_path: Path) -> None:
    """The entry of "late" appears after the candidates were chosen, while the release
    waits behind another writer: it is seen, because it is judged after the lock."""
    store, cache = AtRelease(str(tmp_path / "r.db")), tmp_path / "cache"
    chosen = threading.Event()
    store.meanwhile = chosen.set
    addresses = {container: add(store, container) for container in ("alive", "late", "gone")}
    cache_entry(cache, "alive")
    other_writer = os.open(
        str(tmp_path / "r.db.lock"), os.O_RDWR | os.O_CLOEXEC
    )  # another process's place in the queue
    released: list[Lease] = []
    try:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        worker = threading.Thread(
            target=lambda: released.extend(reconcile(store, str(cache), GRACE, time.time() + LATER)[1])
        )
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

    store.meanwhile = runtime_acts
    assert reconcile(store, str(cache), GRACE, time.time() + LATER) == (1, [])  # a candidate, gone meanwhile
    assert sorted(holders(store)) == ["alive", "new"]
    store.close()


def test_a_leak_is_released_in_the_same_transaction_as_its_last_look(tmp_path: Path) -> None:
    """The control: nothing happens meanwhile, so the leak goes, and only it."""
    store, cache = AtRelease(str(tmp_path / "r.db")), tmp_path / "cache"
    kept = add(store, "alive")
    leaked = add(store, "gone")
    cache_entry(cache, "alive")
    assert reconcile(store, str(cache), GRACE, time.time()) == (0, [])  # within the grace period: not yet a candidate
    candidates, released = reconcile(store, str(cache), GRACE, time.time() + LATER)
    assert candidates == 1 and [(lease.container_id, lease.ip) for lease in released] == [("gone", leaked)]
    assert holders(store) == {"alive": kept}
    store.close()
