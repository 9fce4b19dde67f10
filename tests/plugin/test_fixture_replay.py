"""Replay the exact command sequences the real upstream ecs-ipam ran (the `steps` of each
fixture manifest in tests/fixtures/ecs-ipam-boltdb, see its README.md) against our
`ecs-ipam` on an empty store, and require upstream's answers: the same `ips` at every ADD,
the same addresses released by every DEL, the same gateway markers, and at the end the
same set of held (address, id).

Deliberate differences from upstream, asserted as cnipam documents them:
* cnipam's result carries `cniVersion` (the CNI spec requires it; upstream left it out).
* DEL is idempotent (B5). The only repeated DEL in the fixtures is old-ipv4-only step 15,
  where the 7b4ec60 binary also exited 0; 3302076 would have exited 1 there.
* None of the recorded steps failed upstream (the generator avoided B1: explicit IPv6
  with an id), so every step must succeed here too; B1 itself is covered in
  test_plugin_blackbox.py.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixture_files import FIXTURES as UPSTREAM_FIXTURES
from tests.support.plugin_calls import BASE_ENV, CALL_TIMEOUT, parse_output
from tests.support.store_files import dump_leases

FIXTURES = UPSTREAM_FIXTURES / "ecs-ipam-boltdb"
MANIFESTS = sorted(FIXTURES.glob("*.json"))
# `large` has 2,040 steps: about 60 s as separate processes on this box. Its first steps run
# in-process through cnipam.plugin.main (the function the executable's launcher calls);
# the last EXE_TAIL steps (its 20 DELs by id and the 20 ADDs before them) and everything
# in the other fixtures run through the installed executable.
IN_PROCESS_ABOVE = 100
EXE_TAIL = 40

Call = Callable[[dict[str, str], bytes], tuple[int, Any]]


def load(manifest: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(manifest.read_text())
    return loaded


def step_config(manifest: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(manifest["config_base"])
    config["ipam"].update(step["ipam"])
    return config


def step_env(manifest: dict[str, Any], command: str, db: Path) -> dict[str, str]:
    env = {key: value for key, value in manifest["environment"][command].items() if isinstance(value, str)}
    env["IPAM_DB_PATH"] = str(db)  # the manifest's path is relative to the fixture folder
    assert "CNI_CONTAINERID" not in env  # ecs-ipam never had it: ADDs without id are anonymous
    return {**BASE_ENV, **env}


def exe_call(exe: str, cwd: Path) -> Call:
    def call(env: dict[str, str], stdin: bytes) -> tuple[int, Any]:
        proc = subprocess.run([exe], input=stdin, env=env, capture_output=True, cwd=cwd, timeout=CALL_TIMEOUT)
        return proc.returncode, parse_output(proc.stdout, proc.stderr)[0]

    return call


def in_process_call(monkeypatch: pytest.MonkeyPatch) -> Call:
    from cnipam.plugin import main

    def call(env: dict[str, str], stdin: bytes) -> tuple[int, Any]:
        with monkeypatch.context() as patch:
            for key in list(os.environ):
                if key.startswith(("CNI_", "IPAM_")):
                    patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            out = io.StringIO()
            patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
            patch.setattr(sys, "stdout", out)
            code = main([])
        return code, parse_output(out.getvalue().encode(), b"")[0]

    return call


def held_by_id(db: Path) -> set[tuple[str, str]]:
    """(address, upstream id) of every lease: handle `id:<id>`, or NULL for an ADD without id."""
    found = set()
    for row in dump_leases(db) or []:
        ip, kind, handle = row[1], row[2], row[5]
        if kind != "lease":
            continue
        assert handle is None or handle.startswith("id:"), f"unexpected owner {handle!r} for {ip}"
        found.add((ip, "" if handle is None else handle[3:]))
    return found


def held_addresses(db: Path) -> set[str]:
    return {address for address, _ in held_by_id(db)}


def gateways(db: Path) -> set[tuple[str, int]]:
    return {(row[1], row[0]) for row in dump_leases(db) or [] if row[2] == "gateway"}


def upstream_next(subnet: str, last_known: str, taken: set[str]) -> str:
    """Upstream's next automatic address: the first free one after lastKnownIP, wrapping
    round, skipping the network address (and the broadcast address in IPv4)."""
    network = ipaddress.ip_network(subnet)
    first = int(network.network_address) + 1
    last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
    candidate = int(ipaddress.ip_address(last_known))
    for _ in range(last - first + 1):
        candidate = first if candidate >= last else candidate + 1
        text = str(ipaddress.ip_address(candidate))
        if text not in taken:
            return text
    raise AssertionError(f"{subnet} is full")


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_replay_gives_upstreams_answers(
    manifest_path: Path, ecs_exe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load(manifest_path)
    assert manifest["kind"] == "ecs-ipam boltdb"
    steps = manifest["steps"]
    db = tmp_path / "replay" / "ipam.db"
    by_exe = exe_call(ecs_exe, tmp_path)
    in_process = in_process_call(monkeypatch) if len(steps) > IN_PROCESS_ABOVE else None

    for index, step in enumerate(steps):
        call = in_process if in_process is not None and index < len(steps) - EXE_TAIL else by_exe
        where = f"{manifest['fixture']} step {step['n']} {step['command']} {step['ipam']}"
        config = step_config(manifest, step)
        before = held_addresses(db) if step["command"] == "DEL" else set()
        code, out = call(step_env(manifest, step["command"], db), json.dumps(config).encode())
        assert code == step["exit"] == 0, f"{where}: exit {code}, printed {out}"
        if step["command"] == "ADD":
            assert isinstance(out, dict), f"{where}: printed {out}"
            assert [entry["address"] for entry in out["ips"]] == step["ips"], f"{where}: got {out['ips']}"
            assert [entry["version"] for entry in out["ips"]] == [("6" if ":" in ip else "4") for ip in step["ips"]], (
                where
            )
            assert out["cniVersion"] == "0.3.0", where  # upstream printed none; the spec requires it
            routes = config["ipam"].get("ipv4-routes", []) + config["ipam"].get("ipv6-routes", [])
            assert out.get("routes", []) == routes, where  # copied through, v4 then v6, gw never filled in
            assert out["dns"] == {}, where
        else:
            assert out is None, f"{where}: DEL printed {out}"
            assert before - held_addresses(db) == set(step["released"]), where
            assert held_addresses(db) <= before, where

    assert held_by_id(db) == {(lease["address"], lease["id"]) for lease in manifest["leases"]}
    assert len(held_by_id(db)) == manifest["lease_count"]
    assert gateways(db) == {(gateway["address"], gateway["family"]) for gateway in manifest["gateways"]}

    # One ADD past the recording: the round-robin position must be upstream's lastKnownIP
    # (the last address allocated *or released*), so the next address is what upstream gives.
    config = copy.deepcopy(manifest["config_base"])
    config["ipam"]["id"] = "one-more"
    taken = held_addresses(db) | {gateway["address"] for gateway in manifest["gateways"]}
    expected = []
    for family, last_key in (("ipv4", "lastKnownIP"), ("ipv6", "lastKnownIPv6")):
        if manifest["subnets"][family]:
            address = upstream_next(manifest["subnets"][family], manifest[last_key], taken)
            expected.append(f"{address}/{manifest['subnets'][family].split('/')[1]}")
    code, out = by_exe(step_env(manifest, "ADD", db), json.dumps(config).encode())
    assert code == 0, out
    assert [entry["address"] for entry in out["ips"]] == expected


def test_fixtures_are_all_there() -> None:
    """The replay must not pass vacuously because the fixture folder moved."""
    assert {m.stem for m in MANIFESTS} >= {"ipv4-basic", "ipv4-explicit", "dualstack", "old-ipv4-only", "large"}
