"""Reading an SQLite store file directly, read-only, as an operator with `sqlite3` would:
what the tests compare before and after a call, independent of cnipam's own code.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any


def dump_leases(db_path: Path | str) -> list[tuple[Any, ...]] | None:
    """Every row of the leases table (None when the store file does not exist)."""
    if not os.path.exists(db_path):
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        has_table = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'leases'").fetchone()
        if not has_table:
            return []
        return db.execute(
            "SELECT family, ip, kind, pool, slot, handle, network, container_id, ifname, created"
            " FROM leases ORDER BY family, address"
        ).fetchall()
    finally:
        db.close()


def snapshot(db_path: Path | str) -> dict[str, list[tuple[Any, ...]]] | None:
    """The whole store's contents (leases, free intervals, round-robin cursors), to compare before/after."""
    if not os.path.exists(db_path):
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(db.execute(f"SELECT * FROM {name}").fetchall()) for name in tables}
    finally:
        db.close()


def held(db_path: Path | str) -> list[tuple[str, str | None]]:
    """(ip, handle) of every held lease (gateway reservations left out)."""
    return [(row[1], row[5]) for row in dump_leases(db_path) or [] if row[2] == "lease"]
