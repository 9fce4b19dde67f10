"""What only the SQLite engine does: files it refuses to touch, and its on-disk modes."""

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cnipam.core.errors import StoreCorrupt
from cnipam.store.sqlite import SQLiteStore


def test_another_programs_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "precious.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE precious (x)")
    with pytest.raises(StoreCorrupt, match="SQLite database of something else"):
        SQLiteStore(str(path))
    with sqlite3.connect(path) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["precious"]


def test_a_file_that_is_not_sqlite_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    with pytest.raises(StoreCorrupt, match="not an SQLite database"):
        SQLiteStore(str(path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_new_store_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ipam.db"
    SQLiteStore(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(path) + ".lock").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o750


def test_check_reports_orphans(tmp_path: Path) -> None:
    from cnipam.core.ecs_config import parse_ecs
    from cnipam.core.leases import Owner

    path = tmp_path / "ipam.db"
    store = SQLiteStore(str(path))
    store.allocate(Owner.for_request("a", "net", "", "eth0"), parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools)
    assert store.problems() == []
    with sqlite3.connect(path) as db:
        db.execute("UPDATE leases SET pool = '10.9.0.0/24' WHERE kind = 'lease'")
        db.execute("UPDATE cursors SET pool = 'garbage'")
    problems = store.problems()
    store.close()
    assert "orphan: 10.0.0.2 (lease) lies outside its pool 10.9.0.0/24" in problems
    assert any("position of pool 'garbage'" in problem for problem in problems)
