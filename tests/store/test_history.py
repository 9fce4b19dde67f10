"""The address history (core.history) on both engines: every allocation and release is
recorded with the change, by every path that makes one, the records pair back into the
tenancies a model of the same operations kept (thousands of them, the clock replaced),
and the retention bounds them by count and by age, a few records per write. On etcd
each host appends to and prunes its own records; the history merges them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.addresses import parse_cidr, parse_ip
from cnipam.core.docker_pools import PoolClaim
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import AddressConflict
from cnipam.core.history import (
    ALLOCATED,
    COLLECTED,
    IMPORTED,
    PRUNE_BATCH,
    PRUNE_EVERY,
    RELEASED,
    REPAIRED,
    HistoryRecord,
    Retention,
)
from cnipam.core.leases import LEASE, Lease, Owner
from cnipam.core.tenancy import HELD, Subject, tenancies
from cnipam.store.base import Store
from cnipam.store.etcd import EtcdStore
from cnipam.store.etcd_history import MARKS
from tests.support.store_engines import ENGINES, etcd_store

T0 = 1_800_000_000.0
POOLS = parse_ecs({"ipv4-subnet": "10.20.0.0/26"}).pools  # 62 addresses, .1 the gateway: reuse comes quickly
DUAL = parse_ecs({"ipv4-subnet": "10.21.0.0/29", "ipv6-subnet": "fd21::/120"}).pools


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Clock]]:
    clock = Clock()
    store = ENGINES[request.param](request, tmp_path)
    store.clock = clock
    yield store, clock
    assert store.problems() == []
    store.close()


def owner(name: str, network: str = "net", boot: str = "") -> Owner:
    return Owner.for_request(None, network, name, "eth0", f"/run/netns/{name}", boot)


def events(store: Store, subject: Subject | None = None) -> list[tuple[str, str, str]]:
    return [(record.event, record.ip, record.container_id) for record in store.history(subject)]


def test_each_path_records_what_it_did(engine: tuple[Store, Clock]) -> None:
    store, clock = engine
    lease = store.allocate(owner("a"), POOLS)[0]
    clock.now += 1
    (record,) = store.history()
    assert record == HistoryRecord(
        T0, ALLOCATED, 4, lease.address, lease.pool, "net", "cni:net/a/eth0", "a", "eth0", "/run/netns/a",
        store.history_host, "", T0,
    )  # fmt: skip
    with pytest.raises(AddressConflict):  # refused: nothing changed, nothing recorded
        store.allocate(owner("b"), parse_ecs({"ipv4-subnet": "10.20.0.0/26", "ipv4-address": lease.ip + "/26"}).pools)
    store.release(owner("a").handle)
    assert events(store) == [(ALLOCATED, lease.ip, "a"), (RELEASED, lease.ip, "a")]
    assert store.history()[1].at == T0 + 1 and store.history()[1].held_from == T0

    store.allocate(owner("c"), POOLS)
    clock.now += 10
    collection = store.collect_garbage("net", set(), 0.0)
    assert [lease.container_id for lease in collection.released] == ["c"]
    assert events(store)[-1][0::2] == (COLLECTED, "c")

    pool = store.claim_docker_pool(PoolClaim("local", 4, parse_cidr("198.19.0.0/29", "pool")[1], None, 29, None, "{}"))
    address = store.request_docker_address(pool.id, None)
    store.release_docker_address(pool.id, 4, address.address)
    assert [(event, network) for event, network in ((r.event, r.network) for r in store.history())][-2:] == [
        (ALLOCATED, pool.lease_network),
        (RELEASED, pool.lease_network),
    ]


def test_a_reboot_repair_records_its_releases_and_the_returning_attachment_its_allocation(
    engine: tuple[Store, Clock],
) -> None:
    store, clock = engine
    store.boot = "boot-1"
    first = store.allocate(owner("a", boot="boot-1"), POOLS)[0]
    store.allocate(owner("b", boot="boot-1"), POOLS)
    clock.now += 60
    store.boot = "boot-2"
    assert sorted(lease.container_id for lease in store.release_earlier_boots()) == ["a", "b"]
    again = store.allocate(owner("a", boot="boot-2"), POOLS)[0]
    assert again.address == first.address  # kept for it
    mine = [(r.event, r.boot) for r in store.history(Subject(handles=("cni:net/a/eth0",), container_id="a"))]
    assert mine == [(ALLOCATED, "boot-1"), (REPAIRED, "boot-1"), (ALLOCATED, "boot-2")]


def test_an_import_starts_each_leases_history_unless_it_brings_its_own(engine: tuple[Store, Clock]) -> None:
    store, _ = engine
    lease = Lease(4, parse_ip("10.22.0.5")[1], LEASE, "10.22.0.0/24", "4", "id:x", "net", "cx", "eth0", T0 - 500)
    assert store.import_leases([lease], {}) == 1
    (record,) = store.history()
    assert (record.event, record.at, record.held_from) == (IMPORTED, T0, T0 - 500)  # held since, known since
    brought = HistoryRecord(T0 - 900, RELEASED, 4, 99, "p", "n", None, "old", "eth0", "", "elsewhere", "", T0 - 999)
    other = Lease(4, parse_ip("10.22.0.6")[1], LEASE, "10.22.0.0/24", "4", "id:y", "net", "cy", "eth0", T0 - 10)
    store.import_leases([other], {}, [brought])
    # kept as it was, in time order; no IMPORTED record for `other`: the file tells its story
    assert store.history() == [brought, record]


def test_history_at_a_moment_matches_a_model_after_thousands_of_changes(engine: tuple[Store, Clock]) -> None:
    """3,000 allocations and releases at random, the clock moving a little between them;
    a model keeps who held what from when to when. Then, at random moments and at the
    exact edges of tenancies, the history says who held each address exactly as the
    model does."""
    store, clock = engine
    rng = random.Random(15)
    live: dict[str, str] = {}  # container -> ip
    model: list[tuple[str, float, float | None, str]] = []  # (ip, from, to, container)
    opened: dict[str, int] = {}
    for step in range(3000):
        clock.now += rng.choice((0.5, 1.0, 2.0))
        if live and (len(live) > 50 or rng.random() < 0.45):
            container = rng.choice(sorted(live))
            store.release(owner(container).handle)
            index = opened.pop(container)
            ip, start, _, _ = model[index]
            model[index] = (ip, start, clock.now, container)
            del live[container]
        else:
            container = f"c{step}"
            ip = store.allocate(owner(container), POOLS)[0].ip
            live[container] = ip
            opened[container] = len(model)
            model.append((ip, clock.now, None, container))
    assert len(store.history()) == 2 * len(model) - len(live)
    moments = [rng.uniform(T0, clock.now) for _ in range(150)]
    moments += [start for _, start, _, _ in model[::40]] + [end for _, _, end, _ in model[::40] if end is not None]
    by_address: dict[str, list[Any]] = {}
    for ip in {ip for ip, _, _, _ in model}:
        subject = Subject(address=parse_ip(ip))
        current = [lease for lease in (store.lookup(*parse_ip(ip)),) if lease is not None]
        by_address[ip] = tenancies(store.history(subject), current)
    for moment in moments:
        for ip, found in by_address.items():
            expected = [
                c for i, start, end, c in model if i == ip and start <= moment and (end is None or moment < end)
            ]
            assert [t.container_id for t in found if t.held_at(moment)] == expected, (ip, moment)
    held = [t for found in by_address.values() for t in found if t.ended == HELD]
    assert sorted(t.container_id for t in held) == sorted(live)


def test_the_retention_bounds_the_history_by_count_and_by_age(engine: tuple[Store, Clock]) -> None:
    store, clock = engine
    store.set_history_retention(Retention(max_age=3600.0, max_records=40))
    assert store.history_retention() == Retention(3600.0, 40)
    for n in range(150):  # 300 records: each write prunes what it adds and a few more
        clock.now += 1
        store.allocate(owner(f"c{n}"), POOLS)
        store.release(owner(f"c{n}").handle)
        assert len(store.history()) <= 40 + PRUNE_EVERY  # etcd prunes in every write, SQLite every PRUNE_EVERY ids
    assert [r.container_id for r in store.history()][-2:] == ["c149", "c149"]  # the newest are kept
    clock.now += 3600 - 40  # the 40 newest are now around the hour old
    for n in range(2 * PRUNE_EVERY):
        clock.now += 10
        store.allocate(owner(f"late{n}"), POOLS)
    kept = store.history()
    assert all(record.at >= clock.now - 3600 * (1 + 1 / MARKS) for record in kept)  # past the age: gone (etcd: marks)
    assert [r.container_id for r in kept][-1] == f"late{2 * PRUNE_EVERY - 1}"
    assert len(kept) <= 40 + PRUNE_EVERY


def test_a_lowered_retention_is_applied(engine: tuple[Store, Clock]) -> None:
    """At once on SQLite; on etcd by the host's next writes, PRUNE_BATCH more each."""
    store, clock = engine
    for n in range(60):
        clock.now += 1
        store.allocate(owner(f"c{n}"), POOLS)
        store.release(owner(f"c{n}").handle)
    store.set_history_retention(Retention(max_records=10))
    writes = 0
    while len(store.history()) > 10 + 1:
        writes += 1
        store.allocate(owner(f"d{writes}"), POOLS)
    if isinstance(store, EtcdStore):  # 120 records, 1 added and up to 1 + PRUNE_BATCH pruned per write
        assert 1 <= writes <= 120 // PRUNE_BATCH + 1
    else:
        assert writes == 0


# -- etcd: each host its own records ---------------------------------------------------------


@pytest.fixture
def two_hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store, Clock]]:
    clock = Clock()
    a, b = (etcd_store(request, tmp_path, host) for host in ("host-a", "host-b"))
    a.clock = b.clock = clock
    yield a, b, clock
    for store in (a, b):
        store.close()


def test_etcd_hosts_keep_their_own_records_and_the_history_merges_them(two_hosts: tuple[Store, Store, Clock]) -> None:
    a, b, clock = two_hosts
    assert isinstance(a, EtcdStore) and isinstance(b, EtcdStore)
    lease = a.allocate(owner("x"), POOLS)[0]
    clock.now += 5
    b.release(None, [(4, lease.address)])  # another host frees it (DEL by address, cnipamctl release)
    clock.now += 5
    (again,) = b.allocate(
        owner("y"), parse_ecs({"ipv4-subnet": "10.20.0.0/26", "ipv4-address": lease.ip + "/26"}).pools
    )
    records = a.history(Subject(address=(4, lease.address)))
    assert [(r.event, r.container_id, r.host) for r in records] == [
        (ALLOCATED, "x", "host-a"),
        (RELEASED, "x", "host-a"),  # written by host-b, about host-a's lease
        (ALLOCATED, "y", "host-b"),
    ]
    keys = {kv.key.split(b"/")[-2] for kv in a.client.range(*_under(a, "history"))[0]}
    assert keys == {b"host-a", b"host-b"}
    found = tenancies(records, [again])
    assert [(t.container_id, t.held_from, t.held_to) for t in found] == [("x", T0, T0 + 5), ("y", T0 + 10, None)]


def test_etcd_a_host_silent_for_longer_than_the_age_loses_its_history(two_hosts: tuple[Store, Store, Clock]) -> None:
    a, b, clock = two_hosts
    assert isinstance(a, EtcdStore) and isinstance(b, EtcdStore)
    a.set_history_retention(Retention(max_age=600.0))
    a.allocate(owner("x"), POOLS)
    clock.now += 300
    b.allocate(owner("y"), POOLS)
    assert a.prune_silent_history() == []
    clock.now += 400  # host-a last wrote 700 s ago, host-b 400 s ago
    assert b.prune_silent_history() == ["host-a"]
    assert [r.container_id for r in b.history()] == ["y"]


def _under(store: EtcdStore, kind: str) -> tuple[bytes, bytes]:
    from cnipam.store.etcdv3 import prefix_end

    start = store.keys.under(kind)
    return start, prefix_end(start)


def test_dual_stack_records_both_addresses_in_the_one_change(engine: tuple[Store, Clock]) -> None:
    store, _ = engine
    leases = store.allocate(owner("d"), DUAL)
    assert sorted(events(store)) == sorted((ALLOCATED, lease.ip, "d") for lease in leases)


def test_a_version_5_store_upgrades_and_its_leases_are_tenancies_from_before_the_history(tmp_path: Path) -> None:
    import sqlite3

    from cnipam.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore

    path = str(tmp_path / "v5.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for step in MIGRATIONS[:5]:
        for statement in step:
            db.execute(statement)
    db.execute("PRAGMA user_version = 5")
    db.close()
    store = SQLiteStore(path)
    try:
        store.clock = Clock()
        (lease,) = store.allocate(owner("old"), POOLS)
        store.close()
        db = sqlite3.connect(path)  # as version 5 left it: a lease no history record tells of
        db.execute("DELETE FROM history")
        db.commit()
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.close()
        store = SQLiteStore(path)
        (tenancy,) = tenancies(store.history(Subject(address=(4, lease.address))), [lease])
        assert (tenancy.container_id, tenancy.started, tenancy.ended, tenancy.held_from) == ("old", None, HELD, T0)
        assert store.problems() == []
    finally:
        store.close()
