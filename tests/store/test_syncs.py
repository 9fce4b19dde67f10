"""How often the SQLite engine waits for the disk, counted with strace (bench/syscalls.py).

A CNI call's commit survives a process crash without a sync, so an ADD or a DEL syncs
nothing, and makes or deletes no file, except for the call that finds the WAL long
enough to checkpoint (three syncs) and the next one (the WAL's new header, its folder).
A store whose commits must survive a power loss (the Docker driver's, cnipamctl's) syncs
every commit. strace is one of dev.sh's Debian packages; without it these tests skip.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from syscalls import DiskWork, strace, traced

from tests.support.ctl_calls import BASE_ENV, PLUGIN

pytestmark = pytest.mark.skipif(strace() is None, reason="strace is not installed (dev.sh installs it as root)")

CONFIG = json.dumps({"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "cnipam", "ipv4-subnet": "10.9.0.0/16"}})
PAIRS = 60


def call(command: str, container: str, db: Path) -> DiskWork:
    env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0"}
    env.update(IPAM_DB_PATH=str(db), CNIPAM_AGENT="off")
    work = traced([PLUGIN], CONFIG.encode(), env, db.parent)
    assert work.status == 0, (command, container)
    return work


def test_an_add_or_a_del_syncs_nothing_and_churns_no_file_but_for_the_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    first = call("ADD", "first", db)
    assert "ipam.db" in first.made  # the store's creation is not the steady state measured below
    calls = [call(command, f"c{n}", db) for n in range(PAIRS) for command in ("ADD", "DEL")]
    assert [(work.made, work.deleted) for work in calls] == [((), ())] * len(calls)
    syncs = [work.syncs for work in calls]
    checkpoints = sum(1 for count in syncs if count == 3)
    assert checkpoints >= 2, syncs  # the WAL does get checkpointed: it is bounded
    assert max(syncs) <= 3, syncs
    assert sum(syncs) <= 5 * checkpoints + 2, syncs  # each checkpoint's three, the next call's two
    assert syncs.count(0) >= 0.8 * len(calls), syncs


def test_a_store_that_syncs_its_commits_syncs_each_one(tmp_path: Path) -> None:
    """The Docker driver's and cnipamctl's commits survive a power loss: one sync each."""
    db = tmp_path / "ipam.db"
    script = f"""
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import SQLiteStore
store = SQLiteStore({str(db)!r})
pools = parse_ecs({{"ipv4-subnet": "10.9.0.0/16"}}).pools
for n in range(20):
    store.allocate(Owner.for_request(None, "net", f"c{{n}}", "eth0"), pools)
"""
    call("ADD", "first", db)
    work = traced([sys.executable, "-c", script], b"", dict(os.environ), tmp_path)
    assert work.status == 0
    assert 20 <= work.syncs <= 20 + 6, work  # one per commit; the WAL's folder once, a checkpoint at most
