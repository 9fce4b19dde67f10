"""`cnitool`, the installed executable, driven as an operator drives it, without root.

The network list holds one plugin, cnipam itself (an IPAM plugin can run as a one-plugin
list), so no namespace is needed: NETNS is only a path string that names the attachment.
Store (IPAM_DB_PATH) and result cache (CNI_CACHE_DIR) live in tmp. Every refusal must be
exactly one line `cnitool: ...` on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = sysconfig.get_path("scripts")
CNITOOL = os.path.join(SCRIPTS, "cnitool")
NETWORK = "cnitool-test"
SUBNET = "10.201.9.0/24"
USAGE_LINE = "cnitool: Add, check, remove, gc or status network interfaces from a network namespace"


def cid(netns: str) -> str:
    """Upstream's rule, written out independently of cnipam.libcni.cnitool."""
    return "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


class Tool:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.confdir = tmp / "net.d"
        self.confdir.mkdir()
        self.db = tmp / "store" / "ipam.db"
        self.cache = tmp / "cache"
        self.write({"type": "cnipam", "ranges": [[{"subnet": SUBNET}]]})

    def write(self, ipam: dict[str, Any], cni_version: str = "1.1.0", **plugin: Any) -> None:
        conflist = {"cniVersion": cni_version, "name": NETWORK, "plugins": [{"type": "cnipam", **plugin, "ipam": ipam}]}
        (self.confdir / "10-test.conflist").write_text(json.dumps(conflist))

    def run(self, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "NETCONFPATH": str(self.confdir),
            "CNI_PATH": SCRIPTS,
            "IPAM_DB_PATH": str(self.db),
            "CNI_CACHE_DIR": str(self.cache),
            **env,
        }
        done = subprocess.run(
            [CNITOOL, *args], capture_output=True, text=True, env=full_env, cwd=cwd or self.tmp, timeout=60
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def ok(self, *args: str, cwd: Path | None = None, **env: str) -> str:
        done = self.run(*args, cwd=cwd, **env)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    def add(self, netns: str = "/var/run/netns/a", **env: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.ok("add", NETWORK, netns, cwd=None, **env))
        return result

    def refused(self, *args: str, says: str = "", cwd: Path | None = None, **env: str) -> str:
        done = self.run(*args, cwd=cwd, **env)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnitool: "), done.stderr
        assert says in lines[0], lines[0]
        return lines[0]

    def leases(self) -> list[tuple[str, str, str, str]]:
        """(ip, network, container_id, ifname) of every held lease."""
        if not self.db.exists():
            return []
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT ip, network, container_id, ifname FROM leases WHERE kind = 'lease' ORDER BY address"
            )
            return [tuple(row) for row in rows]
        finally:
            db.close()

    def cache_files(self) -> list[str]:
        results = self.cache / "results"
        return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


@pytest.fixture
def tool(tmp_path: Path) -> Tool:
    if not os.access(CNITOOL, os.X_OK):
        pytest.fail(f"{CNITOOL} is missing: run `pip install .` first")
    return Tool(tmp_path)


def test_add_check_del(tool: Tool) -> None:
    netns = "/var/run/netns/a"
    result = tool.add(netns)
    assert result["cniVersion"] == "1.1.0"
    assert [ip["address"] for ip in result["ips"]] == ["10.201.9.2/24"]
    assert tool.leases() == [("10.201.9.2", NETWORK, cid(netns), "eth0")]

    (name,) = tool.cache_files()
    assert name == f"{NETWORK}-{cid(netns)}-eth0"
    cached = json.loads((tool.cache / "results" / name).read_text())
    assert cached["kind"] == "cniCacheV1"
    assert (cached["containerId"], cached["netns"], cached["ifName"], cached["networkName"]) == (
        cid(netns),
        netns,
        "eth0",
        NETWORK,
    )
    assert cached["result"]["ips"] == result["ips"]

    assert tool.ok("check", NETWORK, netns) == ""
    assert tool.ok("del", NETWORK, netns) == ""
    assert tool.leases() == [] and tool.cache_files() == []
    assert tool.ok("del", NETWORK, netns) == ""  # DEL is idempotent


def test_add_prints_the_result_as_indented_json(tool: Tool) -> None:
    out = tool.ok("add", NETWORK, "/var/run/netns/a")
    assert out.endswith("}\n") and "\n    " in out
    assert json.loads(out)["ips"][0]["gateway"] == "10.201.9.1"


def test_container_id_is_the_hash_of_the_absolute_cleaned_netns_path(tool: Tool) -> None:
    (tool.tmp / "run").mkdir()
    tool.ok("add", NETWORK, "run/x/../ns1", cwd=tool.tmp)
    tool.ok("add", NETWORK, "//var/run/netns/b")  # Go's filepath.Abs keeps no '//' prefix
    expected = {cid(f"{tool.tmp}/run/ns1"), cid("/var/run/netns/b")}
    assert {lease[2] for lease in tool.leases()} == expected
    assert all(len(c) == len("cnitool-") + 20 for c in expected)
    # The same namespace named another way is the same attachment: DEL finds it.
    tool.ok("del", NETWORK, f"{tool.tmp}/run/ns1")
    tool.ok("del", NETWORK, "/var/run/netns/b")
    assert tool.leases() == []


def test_cni_ifname(tool: Tool) -> None:
    tool.add("/var/run/netns/a", CNI_IFNAME="net1")
    assert [lease[3] for lease in tool.leases()] == ["net1"]
    assert tool.cache_files() == [f"{NETWORK}-{cid('/var/run/netns/a')}-net1"]
    tool.ok("del", NETWORK, "/var/run/netns/a")  # another interface (eth0): nothing of it to delete
    assert len(tool.leases()) == 1
    tool.ok("del", NETWORK, "/var/run/netns/a", CNI_IFNAME="net1")
    assert tool.leases() == []


def test_cni_args_reach_the_plugin_and_the_cache(tool: Tool) -> None:
    result = tool.add(CNI_ARGS="IgnoreUnknown=1;IP=10.201.9.42")
    assert [ip["address"] for ip in result["ips"]] == ["10.201.9.42/24"]
    (name,) = tool.cache_files()
    assert json.loads((tool.cache / "results" / name).read_text())["cniArgs"] == [
        ["IgnoreUnknown", "1"],
        ["IP", "10.201.9.42"],
    ]


@pytest.mark.parametrize("value", ["IP", "=10.201.9.42", "IP=", "IP=1=2", "IgnoreUnknown=1;;IP=10.201.9.42", "A=1;"])
def test_bad_cni_args_are_refused_before_any_plugin_runs(tool: Tool, value: str) -> None:
    tool.refused("add", NETWORK, "/var/run/netns/a", says="CNI_ARGS", CNI_ARGS=value)
    assert tool.leases() == [] and tool.cache_files() == []


def test_cap_args_reach_only_a_plugin_with_the_capability(tool: Tool) -> None:
    caps = json.dumps({"ips": ["10.201.9.77/24"], "unrelated": {"x": 1}})
    assert [ip["address"] for ip in tool.add("/var/run/netns/a", CAP_ARGS=caps)["ips"]] == ["10.201.9.2/24"]
    tool.write({"type": "cnipam", "ranges": [[{"subnet": SUBNET}]]}, capabilities={"ips": True})
    assert [ip["address"] for ip in tool.add("/var/run/netns/b", CAP_ARGS=caps)["ips"]] == ["10.201.9.77/24"]
    cached = json.loads((tool.cache / "results" / f"{NETWORK}-{cid('/var/run/netns/b')}-eth0").read_text())
    assert cached["capabilityArgs"]["ips"] == ["10.201.9.77/24"]


@pytest.mark.parametrize("value", ["{", "[1, 2]", '"ips"', "null"])
def test_bad_cap_args_are_refused(tool: Tool, value: str) -> None:
    tool.refused("add", NETWORK, "/var/run/netns/a", says="CAP_ARGS", CAP_ARGS=value)
    assert tool.leases() == []


def test_missing_network_is_one_line(tool: Tool) -> None:
    line = tool.refused("add", "no-such-net", "/var/run/netns/a")
    assert "no-such-net" in line
    tool.refused("add", NETWORK, "/var/run/netns/a", NETCONFPATH=str(tool.tmp / "missing"))
    assert tool.leases() == []


def test_plugin_error_is_one_line_with_its_code(tool: Tool) -> None:
    tool.write({"type": "cnipam", "ranges": [[{"subnet": "10.201.9.5/24"}]]})  # host bits set
    line = tool.refused("add", NETWORK, "/var/run/netns/a", says="(code 7)")
    assert "10.201.9.5/24" in line
    tool.write({"type": "cnipam", "ranges": [[{"subnet": SUBNET}]]})
    tool.add("/var/run/netns/a", CNI_ARGS="IP=10.201.9.9")
    tool.refused("add", NETWORK, "/var/run/netns/b", says="(code 100)", CNI_ARGS="IP=10.201.9.9")  # taken


def test_plugin_not_in_cni_path(tool: Tool) -> None:
    tool.refused("add", NETWORK, "/var/run/netns/a", says="cnipam", CNI_PATH=str(tool.tmp))
    assert tool.leases() == []


def test_gc_deletes_every_cached_attachment_of_the_network(tool: Tool) -> None:
    tool.add("/var/run/netns/a")
    tool.add("/var/run/netns/b")
    assert len(tool.leases()) == 2 and len(tool.cache_files()) == 2
    assert tool.ok("gc", NETWORK) == ""  # upstream passes no valid list: nothing is valid
    assert tool.leases() == [] and tool.cache_files() == []
    assert tool.ok("gc", NETWORK, "/var/run/netns/a") == ""  # a NETNS is accepted and ignored


def test_status(tool: Tool) -> None:
    tool.write({"type": "cnipam", "ranges": [[{"subnet": "10.201.9.0/30"}]]})  # one usable address: .2
    assert tool.ok("status", NETWORK) == ""
    tool.add()
    tool.refused("status", NETWORK, "/var/run/netns/a", says="(code 50)")


def test_verbs_the_version_does_not_have(tool: Tool) -> None:
    tool.write({"type": "cnipam", "ranges": [[{"subnet": "10.201.9.0/30"}]]}, cni_version="1.0.0")
    tool.add("/var/run/netns/x")  # the only address: a 1.1.0 STATUS would fail
    assert tool.ok("status", NETWORK) == ""  # before 1.1.0 libcni does not ask the plugins
    tool.ok("del", NETWORK, "/var/run/netns/x")
    tool.write({"type": "cnipam", "ranges": [[{"subnet": SUBNET}]]}, cni_version="0.3.1")
    tool.add()
    tool.refused("check", NETWORK, "/var/run/netns/a")  # CHECK needs 0.4.0
    tool.ok("del", NETWORK, "/var/run/netns/a")
    assert tool.leases() == []


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("add",),
        ("add", NETWORK),
        ("check", NETWORK),
        ("del", NETWORK),
        ("remove", NETWORK, "/x"),
        ("add", NETWORK, "/x", "extra"),
    ],
)
def test_bad_usage(tool: Tool, args: tuple[str, ...]) -> None:
    done = tool.run(*args)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == USAGE_LINE
    for verb in ("add", "check", "del", "gc", "status"):
        assert any(line.split()[:2] == ["cnitool", verb] for line in lines[1:]), verb
    assert tool.leases() == []
