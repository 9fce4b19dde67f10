"""Schema version 2 and later: a version-1 store upgrades in place and keeps its leases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore


def test_a_version_1_store_upgrades_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "v1.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.close()
    assert SCHEMA_VERSION >= 2
    store = SQLiteStore(path)
    store.allocate(Owner.for_request("t", "net", "", "eth0"), parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools)
    store.close()
    upgraded = SQLiteStore(path)
    assert [lease.ip for lease in upgraded.leases()] == ["10.0.0.1", "10.0.0.2"]
    assert upgraded.docker_pools() == []
    assert upgraded.problems() == []
    upgraded.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_3_store_gains_the_lease_gateway_column(tmp_path: Path) -> None:
    """Version 4 records on each lease the gateway reserved for its range; leases written
    before it keep None, and nothing else changes."""
    path = str(tmp_path / "v3.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1], *MIGRATIONS[2]):
        db.execute(statement)
    db.execute(
        "INSERT INTO leases VALUES (4, x'0a000002', '10.0.0.2', 'lease', '10.0.0.0/24', '4', 'id:t', 'net', '', "
        "'eth0', 1.0, '', '')"
    )
    db.execute("PRAGMA user_version = 3")
    db.close()
    store = SQLiteStore(path)
    [lease] = store.leases()
    assert (lease.ip, lease.handle, lease.gateway) == ("10.0.0.2", "id:t", None)
    store.close()
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(leases)")]
    assert columns[-1] == "gateway"


def test_a_version_4_store_lets_two_docker_pools_share_a_block(tmp_path: Path) -> None:
    """Version 5 makes the Docker pools' block index non-unique (sibling networks on one
    subnet); a version-4 store keeps its pools and takes a second row on the same block."""
    path = str(tmp_path / "v4.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1], *MIGRATIONS[2], *MIGRATIONS[3]):
        db.execute(statement)
    row = "INSERT INTO docker_pools VALUES (?, 'S', 4, '10.9.0.0/24', x'0a090000', x'0a0900ff', ?, '{}', 1.0)"
    db.execute(row, ("S/10.9.0.0/24/1", "10.9.0.0/25"))
    try:
        db.execute(row, ("S/10.9.0.0/24/2", "10.9.0.128/25"))
        raise AssertionError("version 4 took a second pool on one block")
    except sqlite3.IntegrityError:
        pass
    db.execute("PRAGMA user_version = 4")
    db.close()
    SQLiteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(row, ("S/10.9.0.0/24/2", "10.9.0.128/25"))
    assert [r[0] for r in db.execute("SELECT sub_pool FROM docker_pools ORDER BY id")] == [
        "10.9.0.0/25",
        "10.9.0.128/25",
    ]
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
