"""The history's rules alone: which oldest records a write prunes (core.history), how an
etcd host's log bounds its records by count and by age (store/etcd_history.py), and how
records and current leases pair into tenancies (core.tenancy)."""

from __future__ import annotations

from cnipam.core.history import (
    ALLOCATED,
    IMPORTED,
    PRUNE_EVERY,
    RELEASED,
    HistoryRecord,
    Retention,
    prune_due,
    prune_end,
)
from cnipam.core.leases import LEASE, Lease
from cnipam.core.tenancy import HELD, UNKNOWN, Subject, tenancies
from cnipam.store.etcd_history import MARKS, HistoryLog

DAY = 86400.0


def test_prune_end_takes_the_excess_and_the_expired_as_a_prefix_within_the_batch() -> None:
    retention = Retention(max_age=100.0, max_records=5)
    oldest = [(10 + n, 1000.0 + n) for n in range(8)]  # ids 10..17, written at 1000..1007
    assert prune_end(oldest, 17, retention, now=1050.0, batch=8) == 13  # 8 records, 5 kept: 10, 11, 12 go
    assert prune_end(oldest, 17, retention, now=1050.0, batch=2) == 12  # at most the batch
    assert prune_end(oldest, 17, retention, now=1103.5, batch=8) == 14  # 1000..1003 are past the age
    assert prune_end(oldest[:3], 12, Retention(100.0, 50), now=1050.0, batch=8) == 10  # nothing due
    clock_set_back = [(1, 10.0), (2, 5000.0), (3, 20.0)]
    assert prune_end(clock_set_back, 3, Retention(100.0, 50), now=1000.0, batch=8) == 2  # a prefix only
    assert prune_end([], 0, retention, now=0.0, batch=8) == 0


def test_sqlite_prunes_once_every_prune_every_records() -> None:
    due = [identity for identity in range(1, 5 * PRUNE_EVERY + 1) if prune_due(identity)]
    assert due == [PRUNE_EVERY * n for n in range(1, 6)]


def test_an_etcd_log_counts_and_ages_its_records_without_reading_them() -> None:
    retention = Retention(max_age=MARKS * 100.0, max_records=1000)  # a mark about every 100 s
    log = HistoryLog()
    now = 0.0
    age = retention.max_age
    for _ in range(400):  # a record every 10 s for 4,000 s
        now += 10.0
        log, end = log.appended(1, now, retention)
        assert end == log.oldest
    assert log.next == 400 and log.written == now
    assert len(log.marks) <= 2 * MARKS + 2
    # Every record older than the age is gone but for at most one mark's spacing (100 s).
    assert 4000 - age - 100 <= log.oldest * 10 <= 4000 - age
    small = Retention(max_age=1e9, max_records=50)  # lowered: ~330 records to 50, 8 more pruned per write than added
    counts = []
    for _ in range(40):
        now += 1.0
        log, _ = log.appended(2, now, small)
        counts.append(log.next - log.oldest)
    assert counts[0] == counts[1] + 8 and counts[-1] == 50
    # A silent spell longer than the age: the records written before it age from when they
    # were written, not from the first append after it, so all of them go (9 a write).
    before = log.next
    now += age + 50
    for _ in range(10):
        now += 1.0
        log, _ = log.appended(1, now, retention)
    assert log.oldest == before


def record(at: float, event: str, address: int, held_from: float, container: str = "c") -> HistoryRecord:
    return HistoryRecord(
        at, event, 4, address, "p", "n", f"cni:n/{container}/eth0", container, "eth0", "", "h", "", held_from
    )


def lease(address: int, created: float, container: str) -> Lease:
    return Lease(4, address, LEASE, "p", "4", f"cni:n/{container}/eth0", "n", container, "eth0", created)


def test_records_and_leases_pair_into_tenancies() -> None:
    found = tenancies(
        [
            record(100.0, ALLOCATED, 7, 100.0, "a"),
            record(150.0, RELEASED, 7, 100.0, "a"),
            record(160.0, ALLOCATED, 7, 160.0, "b"),
            record(300.0, RELEASED, 8, 50.0, "old"),  # its allocation record is past the retention
            record(400.0, IMPORTED, 9, 20.0, "moved"),  # held since 20 according to the source, known since 400
            record(410.0, ALLOCATED, 10, 410.0, "lost"),  # over, its end record pruned with another host's
        ],
        [lease(7, 160.0, "b"), lease(9, 20.0, "moved"), lease(11, 5.0, "before")],
    )
    summary = [(t.address, t.container_id, t.held_from, t.held_to, t.started, t.ended) for t in found]
    assert summary == [
        (11, "before", 5.0, None, None, HELD),
        (9, "moved", 20.0, None, IMPORTED, HELD),
        (8, "old", 50.0, 300.0, None, RELEASED),
        (7, "a", 100.0, 150.0, ALLOCATED, RELEASED),
        (7, "b", 160.0, None, ALLOCATED, HELD),
        (10, "lost", 410.0, None, ALLOCATED, UNKNOWN),
    ]
    at = {
        moment: [t.container_id for t in found if t.address == 7 and t.held_at(moment)]
        for moment in (99, 100, 150, 155, 160, 1e9)
    }
    assert at == {99: [], 100: ["a"], 150: [], 155: [], 160: ["b"], 1e9: ["b"]}
    assert [t.container_id for t in found if t.overlaps(140.0, 170.0)] == ["before", "moved", "old", "a", "b"]
    assert found[1].since == 400.0


def test_a_subject_is_an_address_or_owners_and_a_container() -> None:
    assert Subject(address=(4, 7)).matches(4, 7, None, "")
    assert not Subject(address=(4, 7)).matches(6, 7, None, "")
    owners = Subject(handles=("id:task",), container_id="ctr")
    assert owners.matches(4, 1, "id:task", "")
    assert owners.matches(4, 1, "cni:n/ctr/eth0", "ctr")
    assert not owners.matches(4, 1, "cni:n/other/eth0", "other")
    assert not Subject(handles=("id:x",)).matches(4, 1, None, "")  # an anonymous lease has no container to match
