"""`cnipamctl recover`: a new store from a damaged one, the source never touched."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.ctl_calls import call, ok, plugin, refused

IPAM = {"type": "cnipam", "ipv4-subnet": "10.6.0.0/21", "ipv6-subnet": "fd06::/64"}
CONFIG = {"cniVersion": "1.0.0", "name": "net", "ipam": IPAM}


def fill(db: Path, owners: int) -> None:
    for n in range(owners):
        plugin("ADD", CONFIG, f"c{n}", db=db)
    for n in range(0, owners, 9):
        plugin("DEL", CONFIG, f"c{n}", db=db)


def digest(db: Path) -> str:
    """The store's files as bytes: what "never touched" compares."""
    parts = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
    return hashlib.sha256(b"".join(p.read_bytes() if p.exists() else b"-" for p in parts)).hexdigest()


def exported(db: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(ok("export", "--db", str(db)).out)
    return {lease["address"]: lease for lease in document["leases"]}


def recovered(source: Path, target: Path) -> dict[str, Any]:
    before = digest(source)
    report: dict[str, Any] = ok("recover", str(source), "--to", str(target), "--json").json()
    assert digest(source) == before, "recover changed the source"
    assert ok("check", "--db", str(target)).out.strip() == "ok"
    return report


def test_a_healthy_store_comes_back_exactly(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    fill(db, 60)
    report = recovered(db, tmp_path / "new.db")
    assert report["lossless"] and report["saved"] == len(exported(db))
    new, old = (json.loads(ok("export", "--db", str(path)).out) for path in (tmp_path / "new.db", db))
    # The address history comes back whole, and each lease's goes on with a record of the recovery.
    kept, history = len(old["history"]), new.pop("history")
    assert report["history"] == kept and history[:kept] == old.pop("history")
    imported = history[kept:]
    assert {record["event"] for record in imported} == {"imported"}
    assert sorted(record["address"] for record in imported) == sorted(
        lease["address"] for lease in old["leases"] if lease["kind"] == "lease"
    )
    assert new == old
    assert "allocated -> released" in ok("history", "10.6.0.2", "--db", str(tmp_path / "new.db")).out


def test_rows_under_a_destroyed_interior_page_are_saved_and_its_own_rows_stay_held(tmp_path: Path) -> None:
    """The leases table's root page is zeroed: SQL reaches no row at all; the pages below
    it are still read, and the rows that lived in the root itself are rebuilt from the
    two lease indexes, their owners included."""
    db = tmp_path / "ipam.db"
    fill(db, 400)
    before = exported(db)
    probe = sqlite3.connect(db)
    root = probe.execute("SELECT rootpage FROM sqlite_master WHERE name = 'leases'").fetchone()[0]
    page_size = probe.execute("PRAGMA page_size").fetchone()[0]
    probe.close()
    with open(db, "r+b") as raw:
        raw.seek((root - 1) * page_size)
        raw.write(bytes(page_size))
    refused(call("--db", str(db), "leases"), says="malformed")

    report = recovered(db, tmp_path / "new.db")
    after = exported(tmp_path / "new.db")
    assert set(after) == set(before)  # every address still held
    assert report["saved_unreached"] > 0 and report["rebuilt"]
    rebuilt = {line.split()[0] for line in report["rebuilt"]}
    for address, lease in before.items():
        kept = dict(after[address])
        if address in rebuilt:  # known from the indexes: all but its time, boot, netns and gateway
            for unknown in ("created", "boot", "netns", "gateway"):
                kept[unknown] = lease[unknown]
        assert kept == lease, address
    assert not report["lossless"]
    text = ok("recover", str(db), "--to", str(tmp_path / "again.db")).out
    assert "held, owner from an index (lease row lost)" in text and f"recovered {db} into" in text


def test_commits_only_in_the_wal_are_recovered(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    fill(db, 10)
    script = f"""
import os, signal
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import SQLiteStore
store = SQLiteStore({str(db)!r})
store._db.execute("PRAGMA wal_autocheckpoint = 0")
store.allocate(Owner.for_request(None, "net", "late", "eth0"), parse_ecs({CONFIG["ipam"]!r}).pools)
os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == -signal.SIGKILL
    report = recovered(db, tmp_path / "new.db")
    assert "committed WAL frames" in report["wal"]
    assert {lease["container_id"] for lease in exported(tmp_path / "new.db").values()} >= {"late"}


def test_refusals_change_nothing(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    fill(db, 5)
    (tmp_path / "taken.db").write_text("keep me")
    refused(call("recover", str(db), "--to", str(tmp_path / "taken.db")), says="never writes over a file")
    assert (tmp_path / "taken.db").read_text() == "keep me"
    refused(call("recover", str(tmp_path / "absent.db"), "--to", str(tmp_path / "new.db")), says="cannot read")
    hold = (
        f"import sqlite3, sys; db = sqlite3.connect({str(db)!r}); db.execute('SELECT 1 FROM leases'); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{db}-shm") and time.monotonic() < deadline:
            time.sleep(0.01)
        refused(call("recover", str(db), "--to", str(tmp_path / "new.db")), says=f"process {holder.pid} has")
    finally:
        holder.communicate(b"", timeout=30)
    assert not (tmp_path / "new.db").exists()


def test_a_gateway_known_only_from_its_attachment_entry_stays_a_gateway(tmp_path: Path) -> None:
    """Its row and its owner entry lost, a reservation leaves an attachment entry with no
    container: kept as a lease, it would make every ADD of its pool refuse ("gateway is
    already leased"; found by the disk fault campaign)."""
    db = tmp_path / "ipam.db"
    fill(db, 40)
    gateway = bytes.fromhex("fd06" + "00" * 13 + "01")
    probe = sqlite3.connect(db)  # SQLite's own page map (dbstat), not cnipam's reader
    pages = dict(probe.execute("SELECT pageno, name FROM dbstat"))
    page_size = probe.execute("PRAGMA page_size").fetchone()[0]
    probe.close()
    image = bytearray(db.read_bytes())
    holding = {
        pages[n + 1] for n in range(len(image) // page_size) if gateway in image[n * page_size : (n + 1) * page_size]
    }
    assert {"leases", "lease_owner_slot", "lease_attachment"} <= holding
    for n in range(len(image) // page_size):
        if gateway in image[n * page_size : (n + 1) * page_size] and pages[n + 1] in ("leases", "lease_owner_slot"):
            image[n * page_size : (n + 1) * page_size] = bytes(page_size)
    db.write_bytes(bytes(image))

    report = recovered(db, tmp_path / "new.db")
    assert any(line.startswith("fd06::1 (a gateway reservation") for line in report["rebuilt"]), report["rebuilt"]
    assert "fd06::1" in ok("show", "fd06::1", "--db", str(tmp_path / "new.db")).out
    plugin("ADD", CONFIG, "after", db=tmp_path / "new.db")  # the pool still hands out addresses


def test_a_free_interval_that_opens_a_vast_gap_is_not_trusted(tmp_path: Path) -> None:
    """Damaged bytes that still read as an address can make the free index claim most of
    the IPv6 space is taken: recover must neither walk that gap (it ran out of memory, found
    by the disk fault campaign) nor keep it held; it says the free index was not used."""
    db = tmp_path / "ipam.db"
    fill(db, 10)
    edit = sqlite3.connect(db, isolation_level=None)
    edit.execute("PRAGMA ignore_check_constraints = ON")
    edit.execute("UPDATE free SET first = last WHERE family = 6 AND last = x'ffffffffffffffffffffffffffffffff'")
    edit.close()
    began = time.monotonic()
    report = recovered(db, tmp_path / "new.db")
    assert time.monotonic() - began < 20
    assert not report["free_index_whole"] and any("free index" in note for note in report["notes"])
    assert set(exported(tmp_path / "new.db")) == set(exported(db))
