"""The host-local dialect against the real Go host-local (Debian's containernetworking-plugins):
the same configs and the same sequence of calls give the same addresses in the same
order and the same refusals. Also replays the steps recorded in tests/fixtures/host-local.

Where cnipam differs on purpose it is not compared: a repeated ADD for the same
attachment (host-local errors, cnipam returns the lease it has), and CNI_ARGS IP together
with args.cni.ips (host-local merges them and fails; the conventions say args wins).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixture_files import FIXTURES as UPSTREAM_FIXTURES

HOST_LOCAL = next((p for p in ("/usr/lib/cni/host-local", "/opt/cni/bin/host-local") if os.path.exists(p)), None)
FIXTURES = UPSTREAM_FIXTURES / "host-local"
CNIPAM = os.path.join(sysconfig.get_path("scripts"), "cnipam")

needs_host_local = pytest.mark.skipif(
    HOST_LOCAL is None,
    reason="Go host-local not installed (apt-get install containernetworking-plugins; ./dev.sh test does it as root)",
)


def call(
    exe: str, command: str, config: dict[str, object], container: str, ifname: str = "eth0", **env: str
) -> tuple[int, dict[str, Any]]:
    environ = {
        "PATH": "/usr/bin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname,
        "CNI_NETNS": "/var/run/netns/none", "CNI_PATH": "/usr/lib/cni", **env,
    }  # fmt: skip
    done = subprocess.run([exe], input=json.dumps(config).encode(), capture_output=True, env=environ, timeout=30)
    assert b"Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


class Pair:
    """The same network run by host-local and by cnipam, each with its own dataDir."""

    def __init__(self, tmp: Path, ipam: dict[str, object], version: str = "1.0.0") -> None:
        self.configs = {
            exe: {
                "cniVersion": version,
                "name": "diffnet",
                "type": "bridge",
                "ipam": {**ipam, "type": kind, "dataDir": str(tmp / kind)},
            }
            for exe, kind in ((HOST_LOCAL, "host-local"), (CNIPAM, "cnipam"))
        }

    def both(self, command: str, container: str, ifname: str = "eth0", **env: str) -> tuple[int, dict[str, Any]]:
        go, ours = (call(exe, command, config, container, ifname, **env) for exe, config in self.configs.items())  # type: ignore[arg-type]
        assert (go[0] == 0) == (ours[0] == 0), f"{command} {container}: host-local {go} vs cnipam {ours}"
        if go[0] == 0 and command == "ADD":
            assert ours[1]["ips"] == go[1]["ips"], f"ADD {container}"
            assert ours[1].get("routes") == go[1].get("routes")
            assert ours[1].get("dns", {}) == go[1].get("dns", {})
        return ours


SCENARIOS: dict[str, dict[str, object]] = {
    "range bounds": {"ranges": [[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.14"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
    "single-range keys, gateway at the end": {"subnet": "10.24.0.0/29", "gateway": "10.24.0.6"},
    "dual stack": {"ranges": [[{"subnet": "10.23.0.0/29"}], [{"subnet": "2001:db8:23::/125"}]]},
    "two ranges in one set": {"ranges": [[{"subnet": "10.25.1.0/30"}, {"subnet": "10.25.0.0/30"}]]},
    "ipv6 all-ones usable": {"ranges": [[{"subnet": "2001:db8:26::/126"}]]},
}  # fmt: skip

# ADD a..f, free some, ADD more: walks the round-robin order, the wrap and exhaustion.
SEQUENCE = (
    [("ADD", c) for c in "abcdef"]
    + [("DEL", "e"), ("DEL", "b")]
    + [("ADD", c) for c in "ghijk"]
    + [("DEL", "a"), ("ADD", "l")]
)


@needs_host_local
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_addresses_in_the_same_order(tmp_path: Path, name: str) -> None:
    pair = Pair(tmp_path, SCENARIOS[name])
    for command, container in SEQUENCE:
        pair.both(command, container)


@needs_host_local
def test_requested_addresses_match(tmp_path: Path) -> None:
    pair = Pair(tmp_path, SCENARIOS["dual stack"])
    pair.configs = {
        exe: {**config, "args": {"cni": {"ips": ["10.23.0.5", "2001:db8:23::6"]}}}
        for exe, config in pair.configs.items()
    }
    assert [ip["address"] for ip in pair.both("ADD", "a")[1]["ips"]] == ["10.23.0.5/29", "2001:db8:23::6/125"]
    pair.both("ADD", "b")  # taken by a: both refuse
    pair.configs = {exe: {k: v for k, v in config.items() if k != "args"} for exe, config in pair.configs.items()}
    pair.both("ADD", "c", CNI_ARGS="IP=10.23.0.3")
    pair.both("ADD", "e", CNI_ARGS="IP=10.23.0.1")  # the gateway: both refuse
    pair.both("ADD", "f", CNI_ARGS="K8S_POD_NAME=x;IP=10.23.0.4")  # unknown key without IgnoreUnknown: both refuse
    pair.both("ADD", "g", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.23.0.4")


@needs_host_local
def test_a_refused_add_does_not_move_the_position_unlike_host_local(tmp_path: Path) -> None:
    """host-local allocates the other range sets before it finds a requested address that
    fits no set, then releases them but keeps their last_reserved_ip (shared/reference/cni-spec.md §6.4, item 7)."""
    pair = Pair(tmp_path, SCENARIOS["dual stack"])
    pair.both("ADD", "a")
    pair.both("ADD", "b", CNI_ARGS="IP=10.23.1.3")  # outside every range: both refuse
    go, ours = (call(exe, "ADD", config, "c") for exe, config in pair.configs.items())  # type: ignore[arg-type]
    assert [ip["address"] for ip in ours[1]["ips"]] == ["10.23.0.3/29", "2001:db8:23::3/125"]
    assert [ip["address"] for ip in go[1]["ips"]] == ["10.23.0.4/29", "2001:db8:23::4/125"]


@needs_host_local
@pytest.mark.parametrize(
    "ipam",
    [
        {"subnet": "10.22.0.5/24"},
        {"subnet": "10.22.0.0/31"},
        {"subnet": "2001:db8::/127"},
        {"subnet": "10.22.0.0/24", "rangeStart": "10.23.0.1"},
        {"subnet": "10.22.0.0/24", "rangeEnd": "10.21.0.9"},
        {"ranges": [[{"subnet": "10.22.0.0/24"}, {"subnet": "10.22.0.0/25"}]]},
        {"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "10.22.0.0/25"}]]},
        {"ranges": [[{"subnet": "10.22.0.0/24"}, {"subnet": "2001:db8::/64"}]]},
        {"ranges": [[]]},
        {"ranges": []},
        {"subnet": "garbage"},
        {"ranges": [[{"subnet": "10.22.0.0/24"}]], "routes": [{"dst": "bogus"}]},
    ],
)
def test_same_refusals(tmp_path: Path, ipam: dict[str, object]) -> None:
    code, answer = Pair(tmp_path, ipam).both("ADD", "a")
    assert code != 0 and answer["code"] == 7  # host-local says 999 for all of these


@needs_host_local
def test_resolv_conf_becomes_the_same_dns(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\ndomain example.com\n")
    pair = Pair(tmp_path, {"subnet": "10.27.0.0/24", "resolvConf": str(resolv)})
    assert pair.both("ADD", "a")[1]["dns"]["nameservers"] == ["10.0.0.53"]


@pytest.mark.parametrize("fixture", ["v4", "dual"])
def test_recorded_host_local_steps_replay_identically(tmp_path: Path, fixture: str) -> None:
    manifest = json.loads((FIXTURES / f"{fixture}.json").read_text())
    config = json.loads(json.dumps(manifest["config"]))
    config["ipam"]["type"] = "cnipam"
    config["ipam"]["dataDir"] = str(tmp_path / "store")
    for step in manifest["steps"]:
        code, answer = call(CNIPAM, step["command"], config, step["CNI_CONTAINERID"], step["CNI_IFNAME"])
        assert code == step["exit"], step
        if step["command"] == "ADD":
            assert [ip["address"] for ip in answer["ips"]] == step["ips"], step
    expected = sorted((lease["address"], lease["containerID"], lease["ifname"]) for lease in manifest["leases"])
    with sqlite3.connect(tmp_path / "store" / "cnipam.db") as db:
        held = sorted(db.execute("SELECT ip, container_id, ifname FROM leases WHERE kind = 'lease'").fetchall())
    assert held == expected
