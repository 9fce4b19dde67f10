"""One deadline per call, on both engines: the wait for the host's writers' lock, every
request and every retry share IPAM_DB_CONNECTION_TIMEOUT, so a call that cannot be served
answers code 11 within it (plus the process's own start and exit), never twice it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cnipam.testing.etcd_server import EtcdCluster
from tests.support.ctl_calls import BASE_ENV, PLUGIN
from tests.support.etcd import need_etcd

IPAM = {"type": "cnipam", "ipv4-subnet": "10.9.0.0/24"}
MARGIN = 0.6  # the plugin process's own start and exit, on a loaded machine


def spawn(container: str, timeout: str, db: Path, store: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    ipam = {**IPAM, "store": store} if store else IPAM
    env = {
        **BASE_ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
        "IPAM_DB_PATH": str(db), "IPAM_DB_CONNECTION_TIMEOUT": timeout,
    }  # fmt: skip
    proc = subprocess.Popen(
        [PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"cniVersion": "1.0.0", "name": "net", "ipam": ipam}))
    proc.stdin.close()
    return proc


def answer(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # small: no pipe fills up
    proc.wait(60)
    assert "Traceback" not in out + err, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_sqlite_the_lock_wait_and_sqlite_own_wait_share_the_timeout(tmp_path: Path) -> None:
    """Another process holds the writers' flock for 0.7 s and, beside it, an SQLite write
    transaction for 3 s (a writer outside the flock, such as `sqlite3` by hand). With a
    1 s timeout the ADD waits 0.7 s for the flock and only what is left for SQLite:
    code 11 at about 1 s, where the two waits one after the other took 1.7 s."""
    db = tmp_path / "ipam.db"
    assert answer(spawn("first", "5s", db)).get("ips")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"""
import fcntl, os, sqlite3, sys, time
lock = os.open({str(db) + ".lock"!r}, os.O_RDWR)
fcntl.flock(lock, fcntl.LOCK_EX)
db = sqlite3.connect({str(db)!r}, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("ready", flush=True)
time.sleep(0.7)
fcntl.flock(lock, fcntl.LOCK_UN)
time.sleep(2.3)
db.execute("ROLLBACK")
"""],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        began = time.monotonic()
        got = answer(spawn("second", "1s", db))
        elapsed = time.monotonic() - began
    finally:
        holder.wait(30)
    assert got["code"] == 11, got
    assert 0.9 < elapsed < 1.0 + MARGIN, elapsed


def test_etcd_two_processes_of_one_host_without_quorum_answer_within_the_timeout(tmp_path: Path) -> None:
    """The case of issue 16: process A takes the host's lock and its request waits on a
    cluster without quorum; B waits for the lock meanwhile. Each must answer 11 within
    the timeout (it took up to twice the timeout when each wait had a timeout of its own)."""
    need_etcd()
    with EtcdCluster(3, "deadline") as cluster:
        store = {
            "type": "etcd", "endpoints": cluster.endpoints, "prefix": "/deadline/", "host": "node-1",
            "lockDir": str(tmp_path / "lock"),
        }  # fmt: skip
        assert answer(spawn("warm", "5s", tmp_path / "unused.db", store)).get("ips")
        for member in cluster.members[:2]:
            member.kill()
        began = time.monotonic()
        calls = [spawn(f"c{n}", "2s", tmp_path / "unused.db", store) for n in range(2)]
        answers = [answer(call) for call in calls]
        elapsed = time.monotonic() - began
    assert [got["code"] for got in answers] == [11, 11], answers
    assert elapsed < 2.0 + MARGIN, elapsed
