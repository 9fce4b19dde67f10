"""A plugin process may die at any instruction (OOM killer, node shutdown, runtime timeout),
and so may the Docker driver. The crash campaign (campaigns/crash.py, one implementation,
run here short and there long) SIGKILLs plugin runs (ADD, dual-stack, DEL, GC) on SQLite
(also with cnipamd beside them, itself SIGKILLed now and then) and on etcd, and the
driver under load, and requires a store that is consistent, holds no address twice,
keeps every lease whose result was printed (every 200 answer), and never holds half of
an interrupted change. Also here: kills while the store is being created,
and the writer lock's timeout (IPAM_DB_CONNECTION_TIMEOUT) is honoured."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import crash_docker  # the campaigns live outside the tests (campaigns/, on pytest's pythonpath), runnable on their own
import crash_plugin

from cnipam.store.sqlite import SQLiteStore
from tests.support.etcd import store_object
from tests.support.plugin_calls import RunPlugin, Spawned, parse_output, spawn
from tests.support.store_files import dump_leases, snapshot

# The short campaigns CI runs (the full ones: docs/campaigns.md). About 10 s each here (the agent mode: 4 s).
PLUGIN_RUNS = 160
DRIVER_REQUESTS = 600

IPAM = {"type": "ecs-ipam", "ipv4-subnet": "10.40.0.0/22", "ipv6-subnet": "2001:db8:40::/64"}
WAVE_SIZE = 24
KILL_WINDOW = (
    0.1  # seconds after a victim starts: start-up, lock queue, transaction or output (an ADD takes 20-100 ms here)
)
TIME_BUDGET = 20.0  # seconds; a storm stops starting waves after this
CREATION_TRIALS = 6


def add_config(n: int) -> tuple[dict[str, Any], dict[str, str | None], str]:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net1", "ipam": dict(IPAM)}
    if n % 2:
        config["ipam"]["id"] = f"task-{n}"
        return config, {"IPAM_DB_CONNECTION_TIMEOUT": "60s"}, f"id:task-{n}"
    return config, {"CNI_CONTAINERID": f"ctr-{n}", "IPAM_DB_CONNECTION_TIMEOUT": "60s"}, f"cni:net1/ctr-{n}/eth0"


def printed_result(process: Spawned) -> dict[str, Any] | None:
    """The success result a process printed before it exited or was killed, if any."""
    raw = process.out_path.read_bytes()
    if not raw.strip():
        return None
    out = parse_output(raw, process.err_path.read_bytes())[0]
    return out if isinstance(out, dict) and "ips" in out else None


def kill_due(wave: list[tuple[str, Spawned]], kill_at: dict[int, float], until: float) -> None:
    """SIGKILL, each at its moment, the wave's victims whose moment comes before `until`."""
    for index in sorted(kill_at, key=kill_at.__getitem__):
        if kill_at[index] > until:
            break
        time.sleep(max(0.0, kill_at.pop(index) - time.monotonic()))
        wave[index][1].proc.send_signal(signal.SIGKILL)


def kill_storm(
    exe: str, db: Path, workdir: Path, rng: random.Random, waves: int, first: int
) -> list[tuple[str, Spawned, bool]]:
    """Waves of simultaneous ADDs; half of each wave is SIGKILLed at random moments.
    Returns (handle, process, was it sent SIGKILL) for every ADD. Survivors must succeed."""
    started = time.monotonic()
    runs: list[tuple[str, Spawned, bool]] = []
    n = first
    for _wave in range(waves):
        if time.monotonic() - started > TIME_BUDGET:
            break
        wave: list[tuple[str, Spawned]] = []
        kill_at: dict[int, float] = {}
        victims = set(rng.sample(range(WAVE_SIZE), WAVE_SIZE // 2))
        for index in range(WAVE_SIZE):
            config, env, handle = add_config(n)
            wave.append((handle, spawn(exe, "ADD", config, db, workdir, f"add{n}", env)))
            if index in victims:  # a moment within the process's life: start-up, lock queue, transaction, output
                kill_at[index] = time.monotonic() + rng.uniform(0.0, KILL_WINDOW)
            kill_due(wave, kill_at, time.monotonic())
            n += 1
        kill_due(wave, kill_at, float("inf"))
        for index, (handle, process) in enumerate(wave):
            code = process.proc.wait(120)
            killed = index in victims
            if not killed:
                assert code == 0, (handle, code, process.out_path.read_bytes(), process.err_path.read_bytes())
            runs.append((handle, process, killed))
    return runs


def check_after_storm(db: Path, runs: list[tuple[str, Spawned, bool]]) -> Counter[str]:
    """The store is consistent, holds each address once, keeps every printed lease, and
    holds for a silently killed dual-stack ADD either nothing or both families."""
    store = SQLiteStore(str(db))
    try:
        assert store.problems() == []
    finally:
        store.close()
    rows = dump_leases(db) or []
    addresses = [(row[0], row[1]) for row in rows]
    assert len(addresses) == len(set(addresses))
    by_handle: dict[str, set[str]] = {}
    for row in rows:
        if row[2] == "lease":
            assert row[5] is not None
            by_handle.setdefault(row[5], set()).add(row[1])

    outcomes: Counter[str] = Counter()
    for handle, process, killed in runs:
        result = printed_result(process)
        holds = by_handle.pop(handle, set())
        if result is not None:  # printed success (even if killed afterwards): the lease is durable
            assert holds == {entry["address"].split("/")[0] for entry in result["ips"]}, handle
            outcomes["printed"] += 1
        else:
            assert killed, handle
            assert len(holds) in (0, 2), f"{handle} holds half a dual-stack ADD: {holds}"
            assert {":" in address for address in holds} in (set(), {True, False}), holds
            outcomes["silent-with-lease" if holds else "silent-nothing"] += 1
    assert by_handle == {}, f"leases nobody asked for: {by_handle}"
    return outcomes


def assert_kills_landed_on_both_sides(report: dict[str, Any]) -> None:
    """The campaign passed its own checks; make sure it also tested something: kills
    landed before a commit and runs completed, so both sides of the transaction were hit."""
    outcomes = report["outcomes"]
    assert report["kills"] >= report["runs"] // 10, report
    assert outcomes["ADD killed before commit"] > 0 and outcomes["ADD succeeded"] > 0, outcomes
    assert outcomes["DEL succeeded"] > 0, outcomes
    assert sum(count for outcome, count in outcomes.items() if outcome.startswith("GC")) > 0, outcomes


def test_crash_campaign_on_sqlite(plugin_exe: str, tmp_path: Path) -> None:
    target = crash_plugin.Target(tmp_path / "store" / "ipam.db")
    assert_kills_landed_on_both_sides(
        crash_plugin.run_plugin_campaign(plugin_exe, target, tmp_path, PLUGIN_RUNS, 7, print)
    )


def test_crash_campaign_on_sqlite_with_the_agent(plugin_exe: str, tmp_path: Path) -> None:
    """cnipamd beside the plugins, SIGKILLed at random moments; calls through it or
    directly under every spelling of the store; cnipamctl readers (issue 19)."""
    target = crash_plugin.Target(tmp_path / "store" / "cnipam.db")
    report = crash_plugin.run_plugin_campaign(plugin_exe, target, tmp_path, PLUGIN_RUNS, 7, print, agent=True)
    assert_kills_landed_on_both_sides(report)
    calls = report["agent"]["calls"]
    assert report["agent"]["kills"] > 0, report["agent"]
    assert any(route.startswith("cnipamd.sock") for route in calls) and any(
        route.startswith("direct") for route in calls
    ), calls
    assert any(route.startswith("cnipamctl") for route in calls), calls


def test_crash_campaign_on_etcd(plugin_exe: str, etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path) -> None:
    store = store_object(etcd_endpoint, etcd_prefix, str(tmp_path / "lock"))
    target = crash_plugin.Target(tmp_path / "unused.db", store)
    assert_kills_landed_on_both_sides(
        crash_plugin.run_plugin_campaign(plugin_exe, target, tmp_path, PLUGIN_RUNS, 7, print)
    )
    assert not target.db.exists()  # everything went to etcd


def test_crash_campaign_on_the_docker_driver(tmp_path: Path) -> None:
    report = crash_docker.run_docker_campaign(tmp_path, DRIVER_REQUESTS, 7, print)
    outcomes = report["outcomes"]
    assert report["kills"] >= 5, report
    assert (
        outcomes["RequestAddress 200"] > 0 and outcomes["ReleaseAddress 200"] > 0 and outcomes["RequestPool 200"] > 0
    ), outcomes
    assert outcomes["RequestAddress interrupted"] > 0, outcomes  # kills landed with requests in flight


def test_sigkill_while_the_store_is_being_created(plugin_exe: str, tmp_path: Path) -> None:
    """The first ADDs ever on a node, some of them killed: the survivors must still succeed
    (they have 60 s to wait for the lock) and the new store must be sound."""
    rng = random.Random(11)
    for trial in range(CREATION_TRIALS):
        workdir = tmp_path / f"trial{trial}"
        workdir.mkdir()
        db = workdir / "store" / "ipam.db"
        runs = kill_storm(plugin_exe, db, workdir, rng, 1, 0)
        if db.exists():
            check_after_storm(db, runs)
        else:
            assert all(killed for _, _, killed in runs)


def test_held_writer_lock_times_out_with_code_11(run_plugin: RunPlugin, db_path: Path) -> None:
    config = {"cniVersion": "1.0.0", "name": "net1", "ipam": {**IPAM, "id": "first"}}
    assert run_plugin("ADD", config).code == 0
    before = snapshot(db_path)
    waiting = {**config, "ipam": {**IPAM, "id": "second"}}
    fd = os.open(str(db_path) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        began = time.monotonic()
        run = run_plugin("ADD", waiting, {"IPAM_DB_CONNECTION_TIMEOUT": "200ms"})
        elapsed = time.monotonic() - began
        assert run.code == 1 and run.out["code"] == 11, run
        assert str(db_path) in run.out["msg"], run
        assert 0.2 <= elapsed < 3.0, (
            elapsed
        )  # it waited the timeout, far less than the 5 s default (slack for a loaded CI box)
        assert snapshot(db_path) == before

        run = run_plugin("ADD", waiting, {"IPAM_DB_CONNECTION_TIMEOUT": "0"})  # 0: do not wait at all
        assert run.code == 1 and run.out["code"] == 11, run
        assert snapshot(db_path) == before
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    run = run_plugin("ADD", waiting, {"IPAM_DB_CONNECTION_TIMEOUT": "200ms"})
    assert run.code == 0, run
    assert [entry["address"] for entry in run.out["ips"]] == ["10.40.0.3/22", "2001:db8:40::3/64"]


def test_lock_released_while_waiting_lets_the_add_through(
    run_plugin: RunPlugin, plugin_exe: str, db_path: Path, tmp_path: Path
) -> None:
    config = {"cniVersion": "1.0.0", "name": "net1", "ipam": {**IPAM, "id": "first"}}
    assert run_plugin("ADD", config).code == 0
    fd = os.open(str(db_path) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        patient = json.dumps({**config, "ipam": {**IPAM, "id": "patient"}}).encode()
        waiter = spawn(plugin_exe, "ADD", patient, db_path, tmp_path, "waiter", {"IPAM_DB_CONNECTION_TIMEOUT": "10s"})
        time.sleep(0.4)
        assert waiter.proc.poll() is None, "the ADD did not wait for the lock"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    run = waiter.finish(timeout=10)
    assert run.code == 0, run
    assert [entry["address"] for entry in run.out["ips"]] == ["10.40.0.3/22", "2001:db8:40::3/64"]


def test_etcd_releases_in_batches_that_never_split_an_owner() -> None:
    """The etcd engine releases many leases (GC, a dead host) in several Txns; a process
    killed between two of them must leave each owner whole. In address order a dual-stack
    attachment's two leases are far apart, so plain slicing split them (the etcd crash
    campaign caught a GC leaving half an attachment)."""
    from cnipam.core.leases import LEASE, Lease
    from cnipam.store.etcd import BATCH, _owner_batches

    def lease(family: int, address: int, owner: int) -> tuple[Lease, int]:
        return Lease(
            family, address, LEASE, "pool", "slot", f"cni:net/c{owner}/eth0", "net", f"c{owner}", "eth0", 0.0
        ), 1

    victims = [lease(4, n, n) for n in range(30)] + [
        lease(6, n, n) for n in range(30)
    ]  # address order: every IPv4 first
    batches = _owner_batches(victims)
    assert [victim for batch in batches for victim in batch] == sorted(
        victims, key=lambda victim: int(victim[0].container_id[1:])
    )
    assert all(len(batch) <= BATCH for batch in batches)
    owners = [{victim[0].handle for victim in batch} for batch in batches]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :]), "an owner's leases span two Txns"
