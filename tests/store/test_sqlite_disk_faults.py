"""The SQLite store on a bad disk, on a real small tmpfs (root only): full, remounted
read-only, and damaged. Every check is made through the installed plugin and cnipamctl,
as a runtime and an operator meet them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.errors import StoreBusy
from cnipam.store.sqlite import SQLiteStore
from cnipam.store.sqlite_disk import FULL, RESERVE_BYTES, disk_fault
from cnipam.testing.small_disk import SmallDisk, unavailable
from tests.support.ctl_calls import BASE_ENV, PLUGIN, call, ok, refused

IPAM = {"type": "cnipam", "ipv4-subnet": "10.5.0.0/22", "ipv6-subnet": "fd05::/64"}
CONFIG = {"cniVersion": "1.0.0", "name": "net", "ipam": IPAM}
OWNERS = 40


@pytest.fixture
def disk() -> Iterator[SmallDisk]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with SmallDisk(2048) as mounted:
        yield mounted


def cni(command: str, container: str, db: str, config: dict[str, Any] = CONFIG) -> tuple[int, dict[str, Any]]:
    """(exit status, the JSON printed or {}) of one plugin call."""
    env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0", "IPAM_DB_PATH": db}
    done = subprocess.run([PLUGIN], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=30)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def populate(db: str) -> None:
    for n in range(OWNERS):
        assert cni("ADD", f"c{n}", db)[0] == 0


def settle(db: str) -> None:
    """Leave the store as the last process to close it does (cnipamctl, cnipamd at exit):
    the WAL copied into the file, the -wal and -shm deleted. A plugin process exits without
    closing it, leaving both (store/sqlite.py, Durability). In a process of its own: this
    one may hold the file already (a reader), and its one connection per file stays open."""
    script = f"from cnipam.store.sqlite import SQLiteStore; SQLiteStore({str(db)!r}).close()"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert not os.path.exists(db + "-wal") and not os.path.exists(db + "-shm")


def holders(db: str) -> dict[str, list[str]]:
    """Who holds what, as cnipamctl reads it."""
    held: dict[str, list[str]] = {}
    for lease in ok("leases", "--json", "--db", db).json():
        if lease["kind"] == "lease":
            held.setdefault(lease["container_id"], []).append(lease["ip"])
    return held


def test_on_a_full_disk_reads_and_releases_work_and_add_says_the_disk_is_full(disk: SmallDisk) -> None:
    db = disk.path("ipam.db")
    populate(db)
    assert os.stat(db + ".reserve").st_blocks * 512 >= RESERVE_BYTES  # made by the first ADD
    before = holders(db)
    disk.fill()
    assert disk.free_bytes() < 8192

    code, answer = cni("ADD", "new", db)
    assert (code, answer["code"]) == (1, 5)
    assert f"store {db}: the file system holding {disk.folder} is full" in answer["msg"], answer
    assert "releases still work" in answer["msg"]

    assert cni("CHECK", "c1", db) == (0, {})
    assert holders(db) == before
    assert "c7" in ok("show", "c7", "--db", db).out
    assert "10.5.0.0/22" in ok("usage", "--db", db).out
    assert ok("check", "--db", db).out.strip() == "ok"
    assert len(json.loads(ok("export", "--db", db).out)["leases"]) == 2 * OWNERS + 2  # and the two gateways

    assert cni("DEL", "c1", db) == (0, {})  # the reserve is given up for it
    assert not os.path.exists(db + ".reserve")
    assert cni("DEL", "c2", db) == (0, {})
    ok("release", "c3", "--yes", "--force", "--db", db)
    assert cni("ADD", "new", db)[1]["code"] == 5  # the reserve's room stays for releases
    assert holders(db) == {owner: ips for owner, ips in before.items() if owner not in ("c1", "c2", "c3")}

    disk.free()
    code, answer = cni("ADD", "new", db)
    assert code == 0, answer
    assert os.stat(db + ".reserve").st_blocks * 512 >= RESERVE_BYTES  # back before the ADD wrote
    assert ok("check", "--db", db).out.strip() == "ok"


def test_a_failed_write_is_named_full_while_a_release_has_the_reserve_out(disk: SmallDisk) -> None:
    """An ADD's write fails on the full disk and, before it asks the file system why, a
    concurrent DEL gives up the reserve: the room then free is that reserve's, so the disk
    is still called full (this race once made an ADD answer a bare "disk I/O error")."""
    db = disk.path("ipam.db")
    populate(db)
    settle(db)  # else the DEL may checkpoint the plugins' WAL, and the room it frees is more than the reserve's
    disk.fill()
    before = disk_fault(db)
    assert before is not None and before[0] == FULL
    assert cni("DEL", "c1", db) == (0, {})
    assert not os.path.exists(db + ".reserve")
    assert disk.free_bytes() >= RESERVE_BYTES - 128 * 1024  # less the -shm and the DEL's WAL, which stay
    assert disk_fault(db) is None  # a reader opens it as usual
    fault = disk_fault(db, failed=True)
    assert fault is not None and fault[0] == FULL, fault
    assert f"the file system holding {disk.folder} is full" in fault[1]


def commit_and_die(db: str, container: str) -> None:
    """An ADD committed by a process killed before it closed the store: the commit is only
    in the -wal, read through the -shm the dead process left. The store is settled first,
    so that the commit does not take the WAL past the size at which it is checkpointed."""
    settle(db)
    script = f"""
import os, signal
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import SQLiteStore
store = SQLiteStore({db!r})
store._db.execute("PRAGMA wal_autocheckpoint = 0")
store.allocate(Owner.for_request(None, "net", {container!r}, "eth0"), parse_ecs({CONFIG["ipam"]!r}).pools)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert os.path.getsize(db + "-wal") > 0 and os.path.exists(db + "-shm")


@pytest.mark.parametrize("left", ["closed", "wal"], ids=["closed-cleanly", "wal-of-a-killed-writer"])
def test_on_a_read_only_mount_reads_work_and_writes_say_so(disk: SmallDisk, left: str) -> None:
    """Closed cleanly, the file alone is the store (read `immutable`); a writer killed
    holding it leaves commits in the -wal, read under SQLite's locks (`mode=ro`)."""
    db = disk.path("ipam.db")
    populate(db)
    if left == "wal":
        commit_and_die(db, "late")
    else:
        settle(db)
    before = holders(db)
    assert ("late" in before) == (left == "wal")
    disk.remount(read_only=True)
    try:
        for verb, container in (("ADD", "new"), ("DEL", "c1")):
            code, answer = cni(verb, container, db)
            assert (code, answer["code"]) == (1, 5), answer
            assert f"the file system holding {disk.folder} is mounted read-only" in answer["msg"], answer
        assert cni("CHECK", "c1", db) == (0, {})
        assert cni("CHECK", "late" if left == "wal" else "c2", db) == (0, {})
        assert holders(db) == before
        assert ok("check", "--db", db).out.strip() == "ok"
        assert ok("usage", "--db", db).out
        refused(call("release", "c4", "--yes", "--force", "--db", db), says="mounted read-only")
    finally:
        disk.remount(read_only=False)
    assert holders(db) == before
    assert cni("DEL", "c1", db) == (0, {})
    assert ok("check", "--db", db).out.strip() == "ok"


def test_a_read_without_locks_overtaken_by_a_writer_reads_again_and_never_answers_stale(disk: SmallDisk) -> None:
    """`immutable` takes no lock: a write that lands while it reads must never be answered
    from the file changing under it. The read runs again on a fresh opening (it sees the
    write), and a file that keeps changing under every attempt is refused (try again)."""
    db = disk.path("ipam.db")
    populate(db)
    settle(db)  # no -shm: no process holds it, so it is read without locks
    disk.fill()
    store = SQLiteStore(db, reading=True)
    try:
        assert len(store.leases()) == 2 * OWNERS + 2
        disk.free()
        assert cni("ADD", "new", db)[0] == 0
        settle(db)  # the plugin left the -wal and -shm; settled, the next reads are without locks again
        assert len(store.leases()) == 2 * OWNERS + 4  # the ADD's two addresses, read afresh
        assert "new" in {lease.container_id for lease in store.leases()}

        attempts = []

        def overtaken() -> int:  # a writer lands during every attempt: the file's times move
            attempts.append(1)
            os.utime(db, ns=(len(attempts) * 10**9, len(attempts) * 10**9))
            return 0

        with pytest.raises(StoreBusy, match="changed while it was read without locks"):
            store._read(overtaken)
        assert len(attempts) == 4  # the first read and three more, each on a fresh opening
    finally:
        store.close()


def damage(db: Path, how: str) -> None:
    if how == "schema":  # the tables' definitions, at the end of the first page
        with open(db, "r+b") as raw:
            raw.seek(2048)
            raw.write(b"\xa5" * 2048)
    elif how == "utf8":  # one byte of a table's definition: SQLite's own message is then not UTF-8 (was 999)
        image = bytearray(db.read_bytes())
        image[image.index(b"CREATE TABLE cursors") + 3] = 0x9D
        db.write_bytes(bytes(image))
    else:  # a lease row with a value of the wrong type: SQLite checks structure, not values
        edit = sqlite3.connect(db, isolation_level=None)
        edit.execute("PRAGMA ignore_check_constraints = ON")
        edit.execute("UPDATE leases SET address = 'garbage' WHERE container_id = 'c3' AND family = 4")
        edit.close()  # the last connection: its change is copied into the file


@pytest.mark.parametrize("how", ["schema", "utf8", "row"])
def test_a_damaged_store_fails_with_code_5_naming_it_and_is_not_written_again(tmp_path: Path, how: str) -> None:
    db = tmp_path / "ipam.db"
    populate(str(db))
    settle(str(db))
    damage(db, how)
    assert not os.path.exists(f"{db}-wal")
    image = db.read_bytes()
    gc = {**CONFIG, "cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
    if how != "row":  # nothing can be read: every verb
        calls = [("ADD", "new", CONFIG), ("DEL", "c3", CONFIG), ("CHECK", "c3", CONFIG), ("GC", "x", gc)]
    else:  # the verb that reads the row finds it; then every write is refused
        calls = [("DEL", "c3", CONFIG), ("ADD", "new", CONFIG), ("DEL", "c5", CONFIG), ("GC", "x", gc)]
    for verb, container, config in calls:
        code, answer = cni(verb, container, str(db), config)
        assert (code, answer.get("code")) == (1, 5), (verb, answer)
        assert f"store {db}" in answer["msg"] and any(
            word in answer["msg"] for word in ("malformed", "damaged", "not UTF-8")
        ), answer
        assert db.read_bytes() == image, f"{verb} wrote to the damaged store"
    line = refused(call("check", "--db", str(db)), says={"row": "problem", "schema": "malformed"}.get(how, "UTF-8"))
    assert str(db) in line


def test_cnipamd_keeps_serving_reads_and_releases_on_a_full_disk(disk: SmallDisk, tmp_path: Path) -> None:
    """The agent holds the store, so its -shm exists; a refused ADD must not make it drop
    the connection, or the next call would need room to open the store again."""
    from cnipam.testing.agent_process import AgentProcess

    db = disk.path("ipam.db")
    agent = AgentProcess(str(Path(PLUGIN).with_name("cnipamd")), tmp_path / "agent.sock", tmp_path)
    agent.start()
    try:
        routed = {"CNIPAM_AGENT_SOCKET": str(agent.socket)}

        def via(verb: str, container: str) -> tuple[int, dict[str, Any]]:
            env = {**BASE_ENV, **routed, "CNI_COMMAND": verb, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0"}
            env["IPAM_DB_PATH"] = db
            done = subprocess.run([PLUGIN], input=json.dumps(CONFIG), capture_output=True, text=True, env=env)
            return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}

        for n in range(10):
            assert via("ADD", f"c{n}")[0] == 0
        disk.fill()
        assert via("DEL", "c1") == (0, {})  # the reserve is given up for it
        code, answer = via("ADD", "new")
        assert (code, answer["code"]) == (1, 5) and "is full" in answer["msg"], answer
        disk.fill()  # had the agent closed the store after that refusal, its -shm's room would be gone now
        assert via("CHECK", "c3") == (0, {})
        held = {os.readlink(f"/proc/{agent.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{agent.pid}/fd")}
        assert db in held and db + "-shm" in held  # the calls went through the agent, which holds the store
    finally:
        agent.stop()
    assert sorted(holders(db)) == sorted(f"c{n}" for n in range(10) if n != 1)
