"""How often the SQLite engine waits for the disk, counted with strace (bench/syscalls.py).

Every commit is durable (README, Durability): an ADD or a DEL syncs its WAL once, before
it answers, and makes or deletes no file; only the call that finds the WAL long enough to
checkpoint it and the call after it (the new WAL's header) sync more. strace is one of
dev.sh's Debian packages; without it these tests skip.
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


def test_an_add_or_a_del_syncs_once_before_it_answers_and_churns_no_file(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    first = call("ADD", "first", db)
    assert "ipam.db" in first.made  # the store's creation is not the steady state measured below
    calls = [call(command, f"c{n}", db) for n in range(PAIRS) for command in ("ADD", "DEL")]
    assert [(work.made, work.deleted) for work in calls] == [((), ())] * len(calls)
    assert all(work.synced_before_answer for work in calls)
    syncs = [work.syncs for work in calls]
    assert min(syncs) >= 1, syncs  # every change is on the disk: none is left to a later call
    checkpoints = sum(1 for count in syncs if count > 1) // 2
    assert checkpoints >= 2, syncs  # the WAL does get checkpointed: it is bounded
    assert max(syncs) <= 4, syncs
    assert syncs.count(1) >= 0.85 * len(calls), syncs
    assert sum(syncs) <= len(calls) + 5 * checkpoints + 1, syncs  # a checkpoint's three, the next header's two


def test_a_long_lived_process_syncs_each_commit_once(tmp_path: Path) -> None:
    """cnipamd, the Docker driver and cnipamctl keep the store open over many commits."""
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
    # one per commit; a checkpoint and the next header (five), the last close's checkpoint at the exit
    assert 20 <= work.syncs <= 20 + 8, work
