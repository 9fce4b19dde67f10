"""The driver's group commit (cnipam.docker.group_commit) on a real SQLite store: requests
that queue while a transaction is in flight share the next one, a failing request is
undone alone, and a failure of the store itself sends each request of the batch through
a transaction of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cnipam.core.errors import NotFound, StoreIOError
from cnipam.docker.driver import Driver
from cnipam.docker.group_commit import GroupCommit
from cnipam.docker.settings import load
from cnipam.store import sqlite as engine
from cnipam.store.sqlite import SQLiteStore

Reply = dict[str, object]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "ipam.db"))
    yield opened
    assert opened.problems() == []
    opened.close()


class Statements:
    """The transactions begun and committed on the store's connection, from SQLite's own trace."""

    def __init__(self, store: SQLiteStore) -> None:
        self.begun = self.committed = 0

        def seen(statement: str) -> None:
            self.begun += statement == "BEGIN IMMEDIATE"
            self.committed += statement == "COMMIT"

        store._db.set_trace_callback(seen)


def driver_with_a_pool(store: SQLiteStore) -> tuple[Driver, str, Statements, GroupCommit]:
    """A driver with one pool, the store's transactions counted from here on, and a group commit."""
    driver = Driver(store, load(["-v4", "10.8.0.0/16"], {}))
    pool = str(driver.handle("/IpamDriver.RequestPool", b"{}")["PoolID"])
    return driver, pool, Statements(store), GroupCommit(store)


def request(driver: Driver, pool: str) -> Callable[[], Reply]:
    return lambda: driver.handle("/IpamDriver.RequestAddress", f'{{"PoolID": "{pool}"}}'.encode())


def queued_behind_a_slow_request(commits: GroupCommit, works: list[Callable[[], Reply]]) -> list[Reply | Exception]:
    """Run `works` while a first request holds the lead, so that they queue together; each
    one's reply or exception, in order."""
    entered, release = threading.Event(), threading.Event()

    def slow() -> Reply:
        entered.set()
        release.wait(10)
        return {}

    outcomes: list[Reply | Exception] = [{}] * len(works)

    def one(index: int) -> None:
        try:
            outcomes[index] = commits.run(works[index])
        except Exception as error:
            outcomes[index] = error

    leader = threading.Thread(target=commits.run, args=(slow,))
    leader.start()
    assert entered.wait(10)
    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(works))]
    for thread in threads:
        thread.start()
    while len(commits._queue) < len(works):  # every one of them waits for the next transaction
        threading.Event().wait(0.001)
    release.set()
    for thread in [leader, *threads]:
        thread.join(10)
    return outcomes


def test_requests_queued_during_a_commit_share_the_next_transaction_and_a_refused_one_is_undone_alone(
    store: SQLiteStore,
) -> None:
    driver, pool, counted, commits = driver_with_a_pool(store)
    works = [request(driver, pool) for _ in range(20)]
    works[7] = request(driver, "no-such-pool")
    outcomes = queued_behind_a_slow_request(commits, works)
    assert isinstance(outcomes[7], NotFound)
    granted = [str(outcome["Address"]) for index, outcome in enumerate(outcomes) if index != 7]  # type: ignore[index]
    assert len(set(granted)) == 19
    assert (counted.begun, counted.committed) == (1, 1)  # the slow request wrote nothing; the 20 shared one
    leased = {lease.ip for lease in store.leases() if lease.kind == "lease"}
    assert leased == {address.partition("/")[0] for address in granted}
    commits.stop()


def test_a_failure_of_the_store_sends_each_request_of_the_batch_through_its_own_transaction(
    store: SQLiteStore,
) -> None:
    driver, pool, counted, commits = driver_with_a_pool(store)

    def failing() -> Reply:
        with engine._Writing(store):  # a statement SQLite refuses: the whole transaction is in doubt
            store._db.execute("INSERT INTO no_such_table VALUES (1)")
        return {}

    works = [request(driver, pool), request(driver, pool), failing, request(driver, pool)]
    outcomes = queued_behind_a_slow_request(commits, works)
    assert isinstance(outcomes[2], StoreIOError) and "no_such_table" in str(outcomes[2])
    granted = [str(outcome["Address"]).partition("/")[0] for outcome in (outcomes[0], outcomes[1], outcomes[3])]  # type: ignore[index]
    assert len(set(granted)) == 3
    # the batch (rolled back), then a transaction for each request, three of them committed
    assert (counted.begun, counted.committed) == (1 + 4, 3)
    assert {lease.ip for lease in store.leases() if lease.kind == "lease"} == set(granted)
    commits.stop()


def test_a_stopped_group_commit_answers_what_was_queued_and_refuses_the_rest(store: SQLiteStore) -> None:
    driver = Driver(store, load(["-v4", "10.8.0.0/16"], {}))
    pool = str(driver.handle("/IpamDriver.RequestPool", b"{}")["PoolID"])
    commits = GroupCommit(store)
    assert "Address" in commits.run(request(driver, pool))
    commits.stop()
    with pytest.raises(Exception, match="stopping"):
        commits.run(request(driver, pool))
