"""Schema version 3 (boot, netns, released addresses, sightings): a version-2 store
upgrades in place, keeps its leases and Docker pools, and its old leases record no boot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore

V3_TABLES = {"released", "repaired_boot", "sightings"}


def version_2_store(path: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for step in MIGRATIONS[:2]:
        for statement in step:
            db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    # A lease and its gateway as version 2 wrote them (no boot, no netns columns).
    columns = (
        "INSERT INTO leases (ip, family, address, kind, pool, slot, handle, network, container_id, ifname, created)"
    )
    lease = "'10.0.0.2', 4, x'0a000002', 'lease', '10.0.0.0/24', '4', 'cni:net/c1/eth0', 'net', 'c1', 'eth0', 1.5"
    db.execute(f"{columns} VALUES ({lease})")
    db.execute(
        f"{columns} VALUES ('10.0.0.1', 4, x'0a000001', 'gateway', '10.0.0.0/24', 'gateway', NULL, 'net', '', '', 1.5)"
    )
    db.execute("DELETE FROM free WHERE family = 4")
    db.execute("INSERT INTO free VALUES (4, x'0a000000', x'00000000')")
    db.execute("INSERT INTO free VALUES (4, x'ffffffff', x'0a000003')")
    db.execute("INSERT INTO cursors VALUES ('10.0.0.0/24', 4, x'0a000002', 1)")
    db.close()


def test_a_version_2_store_upgrades_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "v2.db")
    version_2_store(path)
    store = SQLiteStore(path)
    try:
        old = store.held_by("cni:net/c1/eth0")
        assert [(lease.ip, lease.boot, lease.netns) for lease in old] == [("10.0.0.2", "", "")]
        assert store.problems() == []
        pools = parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools
        assert [lease.ip for lease in store.allocate(Owner.for_request(None, "net", "c2", "eth0"), pools)] == [
            "10.0.0.3"
        ]
    finally:
        store.close()
    db = sqlite3.connect(path)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= V3_TABLES
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
