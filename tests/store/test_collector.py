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
from tests.support.store_engines import ENGINES, etcd_store
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
    """Each pass says which sightings the store keeps; the next pass acts on them."""
    for name in ("gone", "back", "live"):
        store.allocate(attachment(name), DUAL)
    live = {("live", "eth0")}
    first = store.collect_garbage("net", live, GRACE)
    assert (sorted({lease.container_id for lease in first.candidates}), first.released) == (["back", "gone"], [])
    assert first.sightings == {"cni:net/back/eth0": T0, "cni:net/gone/eth0": T0}
    now[0] = T0 + GRACE / 2
    second = store.collect_garbage("net", live | {("back", "eth0")}, GRACE)  # back is running again
    assert second.released == [] and second.sightings == {"cni:net/gone/eth0": T0}
    now[0] = T0 + GRACE
    third = store.collect_garbage("net", live, GRACE)  # back is gone again: a first sighting, not a second
    assert sorted(lease.ip for lease in third.released) == ["10.0.0.2", "fd00::2"]  # gone's, both families
    assert containers(store) == ["back", "live"]
    assert third.sightings == {"cni:net/back/eth0": T0 + GRACE}
    now[0] = T0 + 2 * GRACE
    fourth = store.collect_garbage("net", live, GRACE)
    assert [lease.container_id for lease in fourth.released] == ["back", "back"] and fourth.sightings == {}
    assert containers(store) == ["live"]


def test_a_dry_run_says_what_a_pass_would_do_and_writes_nothing(store: Store) -> None:
    for name in ("gone", "live"):
        store.allocate(attachment(name), DUAL)
    live = {("live", "eth0")}
    dry = store.collect_garbage("net", live, GRACE, apply=False)
    assert (dry.released, dry.sightings) == ([], {"cni:net/gone/eth0": T0})
    now[0] = T0 + GRACE
    assert store.collect_garbage("net", live, GRACE, apply=False).released == []  # the dry run recorded nothing
    assert store.collect_garbage("net", live, 0, apply=False).released != []  # no grace: one pass would release
    assert containers(store) == ["gone", "live"]
    store.collect_garbage("net", live, GRACE)
    now[0] = T0 + 2 * GRACE
    dry = store.collect_garbage("net", live, GRACE, apply=False)
    assert sorted(lease.ip for lease in dry.released) == ["10.0.0.2", "fd00::2"] and dry.sightings == {}
    assert sorted(lease.ip for lease in store.collect_garbage("net", live, GRACE).released) == ["10.0.0.2", "fd00::2"]


def test_on_etcd_a_collector_judges_only_its_own_hosts_leases(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A runtime's list names its own host's attachments only: host-a's GC, reconciler or
    `cnipamctl gc` must neither release host-b's live leases nor forget host-b's sightings."""
    hosts = {name: etcd_store(request, tmp_path, name) for name in ("host-a", "host-b")}
    now[0] = T0
    try:
        for store in hosts.values():
            store.clock = lambda: now[0]
        a, b = hosts["host-a"], hosts["host-b"]
        a.allocate(attachment("on-a"), DUAL)
        b.allocate(attachment("on-b"), DUAL)
        b.allocate(attachment("gone-b"), DUAL)
        assert a.collect_garbage("net", {("on-a", "eth0")}).candidates == []  # CNI's GC from host-a: one pass
        assert containers(a) == ["gone-b", "on-a", "on-b"]
        assert b.collect_garbage("net", {("on-b", "eth0")}, GRACE).sightings == {"cni:net/gone-b/eth0": T0}
        now[0] = T0 + GRACE
        assert a.collect_garbage("net", {("on-a", "eth0")}, GRACE).sightings == {}  # host-a's pass keeps b's
        released = b.collect_garbage("net", {("on-b", "eth0")}, GRACE).released
        assert sorted({lease.container_id for lease in released}) == ["gone-b"]
        assert containers(a) == ["on-a", "on-b"]
    finally:
        for store in hosts.values():
            store.close()


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
