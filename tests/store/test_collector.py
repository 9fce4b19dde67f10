"""A collector that cannot free a live address (core.collector), on both engines: an
owner is released only when two passes at least the grace period apart saw it leaked, an
attachment that reappears between the passes keeps its address, the valid set is asked
again inside the releasing transaction, an owner's leases go together or not at all; the
plugin's GC honours disableGC. The rules alone: tests/core/test_collector.py; cnipamd's
reconciler: tests/agent/test_reconciler.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import LEASE, Owner
from cnipam.store.base import Store
from tests.support.plugin_calls import RunPlugin
from tests.support.store_engines import ENGINES
from tests.support.store_files import held

T0 = 1_800_000_000.0
GRACE = 600.0
DUAL = parse_ecs({"ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "fd00::/64"}).pools


@pytest.fixture(params=sorted(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    engine = ENGINES[request.param](request, tmp_path)
    engine.clock = lambda: now[0]
    now[0] = T0
    yield engine
    assert engine.problems() == []
    engine.close()


now = [T0]


def attachment(container: str) -> Owner:
    return Owner.for_request(None, "net", container, "eth0")


def containers(store: Store) -> list[str]:
    return sorted({lease.container_id for lease in store.leases("net") if lease.kind == LEASE})


def test_an_attachment_that_reappears_between_the_passes_keeps_its_address(store: Store) -> None:
    for name in ("gone", "back", "live"):
        store.allocate(attachment(name), DUAL)
    live = {("live", "eth0")}
    first = store.collect_garbage("net", live, GRACE)
    assert (sorted({lease.container_id for lease in first.candidates}), first.released) == (["back", "gone"], [])
    assert store.sightings("net") == {"cni:net/back/eth0": T0, "cni:net/gone/eth0": T0}
    now[0] = T0 + GRACE / 2
    assert store.collect_garbage("net", live | {("back", "eth0")}, GRACE).released == []  # back is running again
    assert store.sightings("net") == {"cni:net/gone/eth0": T0}
    now[0] = T0 + GRACE
    released = store.collect_garbage("net", live, GRACE)  # back is gone again: a first sighting, not a second
    assert sorted(lease.ip for lease in released.released) == ["10.0.0.2", "fd00::2"]  # gone's, both families
    assert containers(store) == ["back", "live"]
    assert store.sightings("net") == {"cni:net/back/eth0": T0 + GRACE}
    now[0] = T0 + 2 * GRACE
    assert [lease.container_id for lease in store.collect_garbage("net", live, GRACE).released] == ["back", "back"]
    assert containers(store) == ["live"] and store.sightings("net") == {}


def test_a_lease_made_after_the_sighting_is_a_new_attachment(store: Store) -> None:
    store.allocate(attachment("again"), DUAL)
    store.collect_garbage("net", set(), GRACE)
    store.release(attachment("again").handle)  # the runtime DELs and ADDs the same attachment
    now[0] = T0 + 5
    store.allocate(attachment("again"), DUAL)
    now[0] = T0 + GRACE + 1
    assert store.collect_garbage("net", set(), GRACE).released == []
    assert containers(store) == ["again"]


def test_an_owner_goes_whole_or_not_at_all(store: Store) -> None:
    v4, v6 = parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools, parse_ecs({"ipv6-subnet": "fd00::/64"}).pools
    store.allocate(Owner.for_request("task", "net", "c1", "eth0"), v4)  # one ecs id, two attachments
    store.allocate(Owner.for_request("task", "net", "c2", "eth0"), v6)
    assert store.collect_garbage("net", {("c2", "eth0")}).released == []  # c2 is alive: the task keeps both
    assert sorted(lease.ip for lease in store.collect_garbage("net", set()).released) == ["10.0.0.2", "fd00::2"]


class TurnsValid:
    """A valid set whose attachment appears right after the first question (a runtime
    writing its cache entry while the collector is deciding)."""

    def __init__(self) -> None:
        self.asked = 0

    def __contains__(self, attachment: object) -> bool:
        self.asked += 1
        return self.asked > 1


def test_the_valid_set_is_asked_again_inside_the_releasing_transaction(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """etcd judges from a scan, then releases in a Txn of its own: the attachment that
    became valid in between keeps its addresses. (SQLite judges inside the releasing
    transaction itself: there is no in between.)"""
    engine = ENGINES["etcd"](request, tmp_path)
    try:
        engine.allocate(attachment("racing"), DUAL)
        valid = TurnsValid()
        assert engine.collect_garbage("net", valid).released == [] and valid.asked == 2
        assert containers(engine) == ["racing"]
    finally:
        engine.close()


# -- the plugin's GC: disableGC -------------------------------------------------------------------


def gc_config(**top: object) -> dict[str, object]:
    return {"cniVersion": "1.1.0", "name": "gcnet", "ipam": {"type": "cnipam", "subnet": "10.5.0.0/24"}, **top}


@pytest.mark.parametrize(
    ("flag", "kept"), [(True, True), ("TRUE", True), (False, False), ("false", False), (None, False)]
)
def test_the_plugins_gc_honours_disable_gc(run_plugin: RunPlugin, db_path: Path, flag: object, kept: bool) -> None:
    assert run_plugin("ADD", gc_config(), {"CNI_CONTAINERID": "c1"}).code == 0
    top = {} if flag is None else {"disableGC": flag}
    run = run_plugin("GC", gc_config(**top, **{"cni.dev/valid-attachments": []}))
    assert (run.code, run.out) == (0, None), run
    assert bool(held(db_path)) is kept


def test_a_bad_disable_gc_is_code_7(run_plugin: RunPlugin, db_path: Path) -> None:
    assert run_plugin("ADD", gc_config(), {"CNI_CONTAINERID": "c1"}).code == 0
    run = run_plugin("GC", gc_config(disableGC="sometimes"))
    assert (run.code, run.out["code"]) == (1, 7) and "disableGC" in run.out["msg"]
    assert held(db_path)
