"""Many plugin processes at once on one store, as a runtime starting a burst of containers
does: every process is started before any is waited for."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cnipam.store.sqlite import SQLiteStore
from tests.support.plugin_calls import PluginRun, spawn
from tests.support.store_files import dump_leases

CALLERS = 60
# Correctness, not latency, is under test: a loaded 2-core box must not turn a slow queue into a failure.
PATIENT: dict[str, str | None] = {"IPAM_DB_CONNECTION_TIMEOUT": "60s"}


def ecs(ipam: dict[str, Any], name: str = "net1") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "ipam": {"type": "ecs-ipam", **ipam}}


def run_all(
    exe: str, db: Path, workdir: Path, calls: list[tuple[str, dict[str, Any], dict[str, str | None]]]
) -> list[PluginRun]:
    started = [
        spawn(exe, command, config, db, workdir, f"call{n}", {**PATIENT, **env})
        for n, (command, config, env) in enumerate(calls)
    ]
    return [process.finish(timeout=120) for process in started]


def store_problems(db: Path) -> list[str]:
    store = SQLiteStore(str(db))
    try:
        return store.problems()
    finally:
        store.close()


def leases_by_handle(db: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in dump_leases(db) or []:
        if row[2] == "lease":
            found.setdefault(row[5], []).append(row[1])
    return found


def assert_no_duplicates(results: list[PluginRun]) -> list[str]:
    granted = [entry["address"] for run in results if run.code == 0 and run.out is not None for entry in run.out["ips"]]
    duplicates = [address for address, count in Counter(granted).items() if count > 1]
    assert duplicates == [], f"handed out twice: {duplicates}"
    return granted


def owner(n: int) -> tuple[dict[str, str], dict[str, str | None], str]:
    """Half the callers are ecs-style (ipam.id), half runtime-style (CNI_CONTAINERID)."""
    if n % 2:
        return {"id": f"task-{n}"}, {}, f"id:task-{n}"
    return {}, {"CNI_CONTAINERID": f"ctr-{n}"}, f"cni:net1/ctr-{n}/eth0"


@pytest.mark.parametrize(
    "ipam",
    [{"ipv4-subnet": "10.30.0.0/24"}, {"ipv4-subnet": "10.31.0.0/24", "ipv6-subnet": "2001:db8:31::/64"}],
    ids=["ipv4", "dual-stack"],
)
def test_simultaneous_adds_get_distinct_addresses(plugin_exe: str, tmp_path: Path, ipam: dict[str, str]) -> None:
    db = tmp_path / "store" / "ipam.db"
    owners = [owner(n) for n in range(CALLERS)]
    results = run_all(plugin_exe, db, tmp_path, [("ADD", ecs({**ipam, **extra}), env) for extra, env, _ in owners])
    assert [run.code for run in results] == [0] * CALLERS, [run for run in results if run.code]
    granted = assert_no_duplicates(results)
    assert len(granted) == CALLERS * len(ipam)
    held = leases_by_handle(db)
    for (_, _, handle), run in zip(
        owners, results, strict=True
    ):  # each printed result is what the store holds for that owner
        assert sorted(held.pop(handle)) == sorted(entry["address"].split("/")[0] for entry in run.out["ips"])
    assert held == {}
    assert store_problems(db) == []


def test_add_del_storm(plugin_exe: str, tmp_path: Path) -> None:
    rng = random.Random(20240611)
    db = tmp_path / "store" / "ipam.db"
    ipam = {"ipv4-subnet": "10.32.0.0/24", "ipv6-subnet": "2001:db8:32::/64"}
    first = run_all(
        plugin_exe, db, tmp_path, [("ADD", ecs({**ipam, **extra}), env) for extra, env, _ in map(owner, range(40))]
    )
    assert all(run.code == 0 for run in first), first

    calls: list[tuple[str, dict[str, Any], dict[str, str | None]]] = []
    expected_owners = set()
    for n in range(40):
        extra, env, handle = owner(n)
        action = rng.choice(["DEL", "DEL twice", "keep", "re-ADD"])
        if action.startswith("DEL"):
            calls += [("DEL", ecs({**ipam, **extra}), env)] * (2 if action == "DEL twice" else 1)
        else:
            expected_owners.add(handle)
            if action == "re-ADD" and "CNI_CONTAINERID" in env:  # idempotent for attachments
                calls.append(("ADD", ecs({**ipam, **extra}), env))
    for n in range(40, 80):
        extra, env, handle = owner(n)
        calls.append(("ADD", ecs({**ipam, **extra}), env))
        expected_owners.add(handle)
    rng.shuffle(calls)
    storm = run_all(plugin_exe, db, tmp_path, calls)

    assert [run.code for run in storm] == [0] * len(calls), [run for run in storm if run.code]
    assert_no_duplicates(storm)
    held = leases_by_handle(db)
    assert set(held) == expected_owners
    assert all(len(addresses) == 2 for addresses in held.values())
    everything = [address for addresses in held.values() for address in addresses]
    assert len(everything) == len(set(everything))
    re_added = {
        entry["address"] for call, run in zip(calls, storm, strict=True) if call[0] == "ADD" for entry in run.out["ips"]
    }
    assert re_added <= {f"{address}/{24 if '.' in address else 64}" for address in everything}
    assert store_problems(db) == []


def test_more_callers_than_addresses(plugin_exe: str, tmp_path: Path) -> None:
    db = tmp_path / "store" / "ipam.db"
    ipam = {"ipv4-subnet": "10.33.0.0/28"}  # .1 is the gateway, .15 broadcast: 13 addresses
    capacity = 13
    results = run_all(
        plugin_exe, db, tmp_path, [("ADD", ecs({**ipam, **extra}), env) for extra, env, _ in map(owner, range(50))]
    )
    winners = [run for run in results if run.code == 0]
    losers = [run for run in results if run.code != 0]
    assert len(winners) == capacity
    for run in losers:
        assert run.code == 1 and run.out["code"] == 101 and "10.33.0.0/28" in run.out["msg"], run
    granted = assert_no_duplicates(results)
    assert sorted(granted) == sorted(f"10.33.0.{n}/28" for n in range(2, 15))
    assert sum(len(addresses) for addresses in leases_by_handle(db).values()) == capacity
    assert store_problems(db) == []
