"""End to end, as a runtime drives it: `cnitool` (cnipam.libcni) runs the real Go `bridge`
plugin (Debian's containernetworking-plugins) in a real network namespace, and `bridge`
delegates to our IPAM plugin. The test then looks INSIDE the namespace (address, default
route, a ping to the gateway), runs CHECK and DEL through cnitool, and verifies that the
lease, the cached result and the veth are gone.

Root only (network namespaces); skipped with the reason otherwise. Every test works on its
own namespace (`cnipam-e2e-<hex>`), bridge (`cnie2e<hex>`), private subnet
(10.201.<n>.0/24, fd20:<n>::/64), store and cache in tmp, and the fixture's finalizer removes
the namespace and the bridge whatever happened; each test also asserts that they are gone.
Traffic only flows between the test's namespace and the test's bridge.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.host_network import HOST_PATH, host_command, ipv6_enabled

SCRIPTS = sysconfig.get_path("scripts")
CNITOOL = os.path.join(SCRIPTS, "cnitool")
PLUGIN_DIR = "/usr/lib/cni"
BRIDGE = os.path.join(PLUGIN_DIR, "bridge")
NETNS_DIR = "/var/run/netns"
TIMEOUT = 30.0


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and a bridge (CI runs it as root)"
    if shutil.which("ip", path=HOST_PATH) is None:
        return "`ip` (iproute2) is not installed"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, env={"PATH": HOST_PATH}).returncode != 0:
        return "`ip netns` is unavailable here"
    if not os.path.isfile(BRIDGE):
        return f"{BRIDGE} is missing (Debian package containernetworking-plugins)"
    if shutil.which("busybox", path=HOST_PATH) is None:
        return "busybox is missing (Debian package busybox-static), needed to ping inside the namespace"
    return None


SKIP_REASON = _why_skip()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host_command(*args, timeout=TIMEOUT, check=check)


def netns_exists(name: str) -> bool:
    return name in sh("ip", "netns", "list").stdout.split()


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name, check=False).returncode == 0


def wait_until(condition: Any, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Lab:
    """One namespace, one bridge name, one subnet, one store and cache, all the test's own."""

    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(4)
        self.tmp = tmp
        self.netns = f"cnipam-e2e-{tag}"
        self.netns_path = f"{NETNS_DIR}/{self.netns}"
        self.bridge = f"cnie2e{tag}"  # 14 characters: an interface name has at most 15
        self.network = f"e2e-{tag}"
        octet = 1 + secrets.randbelow(254)
        self.subnet4 = f"10.201.{octet}.0/24"
        self.gateway4 = f"10.201.{octet}.1"
        self.subnet6 = f"fd20:{octet:x}::/64"
        self.gateway6 = f"fd20:{octet:x}::1"
        self.confdir = tmp / "net.d"
        self.confdir.mkdir()
        self.db = tmp / "ipam.db"
        self.cache = tmp / "cache"
        self.host_links: set[str] = set()  # host-side veths seen in results, checked after cleanup
        sh("ip", "netns", "add", self.netns)

    def write_conflist(self, cni_version: str, ipam: dict[str, Any]) -> dict[str, Any]:
        conflist = {
            "cniVersion": cni_version,
            "name": self.network,
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "ipam": ipam}],
        }
        (self.confdir / f"10-{self.network}.conflist").write_text(json.dumps(conflist))
        return conflist

    def env(self) -> dict[str, str]:
        return {
            "PATH": HOST_PATH,
            "LANG": "C.UTF-8",
            "NETCONFPATH": str(self.confdir),
            "CNI_PATH": f"{SCRIPTS}:{PLUGIN_DIR}",
            "IPAM_DB_PATH": str(self.db),
            "CNI_CACHE_DIR": str(self.cache),
        }

    def cnitool(self, verb: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [CNITOOL, verb, self.network, self.netns_path],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=TIMEOUT,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def ok(self, verb: str) -> str:
        done = self.cnitool(verb)
        assert done.returncode == 0, f"cnitool {verb} exited {done.returncode}: {done.stderr}"
        assert done.stderr == "", done.stderr
        return done.stdout

    def leases(self) -> list[str]:
        if not self.db.exists():
            return []
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return sorted(ip for (ip,) in db.execute("SELECT ip FROM leases WHERE kind = 'lease'"))
        finally:
            db.close()

    def cache_files(self) -> list[Path]:
        results = self.cache / "results"
        return sorted(results.iterdir()) if results.is_dir() else []

    def inside(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *args, check=check)

    def ip_json(self, *args: str) -> Any:
        return json.loads(sh("ip", "-n", self.netns, "-j", *args).stdout or "[]")

    def cleanup(self) -> None:
        """Idempotent: whatever state a test left, remove the namespace and the bridge."""
        if link_exists(self.bridge):
            # A failed ADD leaves bridge's veth on the host too: remember it, assert_gone checks it went.
            ports = json.loads(sh("ip", "-j", "link", "show", "master", self.bridge).stdout or "[]")
            self.host_links |= {port["ifname"] for port in ports}
        if netns_exists(self.netns):
            sh(
                "ip", "-n", self.netns, "link", "del", "eth0", check=False
            )  # synchronous, unlike the namespace's teardown
            sh("ip", "netns", "del", self.netns, check=False)
        if link_exists(self.bridge):
            sh("ip", "link", "del", self.bridge, check=False)

    def assert_gone(self) -> None:
        assert not netns_exists(self.netns), f"namespace {self.netns} left behind"
        assert not os.path.exists(self.netns_path)
        assert not link_exists(self.bridge), f"bridge {self.bridge} left behind"
        for link in self.host_links:
            wait_until(lambda link=link: not link_exists(link), f"veth {link} to go")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def addresses_in_netns(lab: Lab) -> set[str]:
    (eth0,) = lab.ip_json("addr", "show", "dev", "eth0")
    return {f"{a['local']}/{a['prefixlen']}" for a in eth0["addr_info"] if a.get("scope") == "global"}


def default_gateway(lab: Lab, family: str) -> list[str]:
    return [r.get("gateway", "") for r in lab.ip_json(family, "route", "show", "default") if r.get("dev") == "eth0"]


def ping(lab: Lab, address: str) -> None:
    """One echo from inside the namespace to the bridge's gateway address (IPv6: a few tries for DAD)."""
    family = ["-6"] if ":" in address else []
    for _ in range(5):
        done = lab.inside("busybox", "ping", *family, "-c", "1", "-W", "2", address, check=False)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"no answer from {address} inside {lab.netns}: {done.stdout} {done.stderr}")


def ipam_config(lab: Lab, plugin: str, dialect: str, families: str) -> dict[str, Any]:
    """The `ipam` object: host-local's dialect (`ranges`, `routes`) or the ecs one (`ipv4-subnet`...)."""
    subnets = {"4": lab.subnet4, "6": lab.subnet6}
    defaults = {"4": "0.0.0.0/0", "6": "::/0"}
    if dialect == "host-local":
        ranges = [[{"subnet": subnets[f]}] for f in families]
        return {"type": plugin, "ranges": ranges, "routes": [{"dst": defaults[f]} for f in families]}
    ipam: dict[str, Any] = {"type": plugin}
    for f in families:
        ipam[f"ipv{f}-subnet"] = subnets[f]
        ipam[f"ipv{f}-routes"] = [{"dst": defaults[f]}]
    return ipam


# id: (cniVersion, IPAM type, dialect, families)
CASES = {
    "ipv4-0.4.0-host-local": ("0.4.0", "cnipam", "host-local", "4"),
    "ipv4-1.0.0-ecs": ("1.0.0", "cnipam", "ecs", "4"),
    "dual-1.0.0-host-local": ("1.0.0", "cnipam", "host-local", "46"),
    "dual-0.4.0-ecs-ipam": ("0.4.0", "ecs-ipam", "ecs", "46"),
}


@pytest.mark.parametrize(("cni_version", "plugin", "dialect", "families"), list(CASES.values()), ids=list(CASES))
def test_add_check_del_through_bridge(lab: Lab, cni_version: str, plugin: str, dialect: str, families: str) -> None:
    if "6" in families and not ipv6_enabled():
        pytest.skip("IPv6 is disabled on this host")
    lab.write_conflist(cni_version, ipam_config(lab, plugin, dialect, families))

    result = json.loads(lab.ok("add"))
    assert result["cniVersion"] == cni_version
    eth0 = [i for i, itf in enumerate(result["interfaces"]) if itf["name"] == "eth0"]
    assert len(eth0) == 1 and result["interfaces"][eth0[0]]["sandbox"] == lab.netns_path
    lab.host_links = {itf["name"] for itf in result["interfaces"] if "sandbox" not in itf and itf["name"] != lab.bridge}
    assert len(lab.host_links) == 1 and all(link_exists(link) for link in lab.host_links)

    ips = {("6" if ":" in ip["address"] else "4"): ip for ip in result["ips"]}
    assert sorted(ips) == sorted(families) and len(result["ips"]) == len(families)
    for family, ip in ips.items():
        assert ip["interface"] == eth0[0]
        assert ip["gateway"] == (lab.gateway6 if family == "6" else lab.gateway4)
        if cni_version < "1.0.0":
            assert ip["version"] == family

    # Inside the namespace: exactly the result's addresses, a default route per family via the gateway.
    assert addresses_in_netns(lab) == {ip["address"] for ip in ips.values()}
    for family, ip in ips.items():
        assert default_gateway(lab, f"-{family}") == [ip["gateway"]]
        ping(lab, ip["gateway"])
    assert lab.leases() == sorted(ip["address"].split("/")[0] for ip in ips.values())
    (cached,) = lab.cache_files()
    assert json.loads(cached.read_text())["kind"] == "cniCacheV1"

    lab.ok("check")

    assert lab.ok("del") == ""
    assert lab.leases() == [], "DEL left a lease in the store"
    assert lab.cache_files() == [], "DEL left the cached result"
    wait_until(lambda: all(not link_exists(link) for link in lab.host_links), "the veth to go after DEL")
    assert sh("ip", "-n", lab.netns, "link", "show", "dev", "eth0", check=False).returncode != 0

    lab.cleanup()
    lab.assert_gone()


def test_ipam_error_surfaces_through_bridge_and_nothing_is_left(lab: Lab) -> None:
    """An invalid IPAM config: the plugin's code 7 reaches cnitool's one line through bridge."""
    lab.write_conflist("1.0.0", {"type": "cnipam", "ipv4-subnet": "10.201.0.5/24"})  # host bits set: refused

    done = lab.cnitool("add")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnitool: "), done.stderr
    assert "(code 7)" in lines[0] and "10.201.0.5/24" in lines[0], lines[0]
    assert lab.leases() == [] and lab.cache_files() == []

    lab.cleanup()
    lab.assert_gone()


def test_cleanup_removes_a_live_attachment(lab: Lab) -> None:
    """A test that stops right after ADD (no DEL): the finalizer's cleanup still removes
    the namespace, the bridge and the host's veth."""
    lab.write_conflist("1.0.0", {"type": "cnipam", "ipv4-subnet": lab.subnet4})
    result = json.loads(lab.ok("add"))
    lab.host_links = {itf["name"] for itf in result["interfaces"] if "sandbox" not in itf and itf["name"] != lab.bridge}
    assert lab.host_links and link_exists(lab.bridge) and netns_exists(lab.netns)

    lab.cleanup()
    lab.assert_gone()


def test_harness_with_bridge_run_directly(lab: Lab) -> None:
    """The same checks without cnitool and libcni: `bridge` exec'd as a runtime execs it. When
    this passes and the cnitool cases fail, the fault is in cnitool or cnipam.libcni."""
    config = {
        "cniVersion": "1.0.0",
        "name": lab.network,
        "type": "bridge",
        "bridge": lab.bridge,
        "isGateway": True,
        "ipMasq": False,
        "ipam": {"type": "cnipam", "ranges": [[{"subnet": lab.subnet4}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    env = {
        **lab.env(),
        "CNI_CONTAINERID": "e2e-direct",
        "CNI_NETNS": lab.netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{SCRIPTS}:{PLUGIN_DIR}",
    }

    def bridge(command: str) -> str:
        done = subprocess.run(
            [BRIDGE],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            env={**env, "CNI_COMMAND": command},
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"bridge {command}: {done.stdout} {done.stderr}"
        return done.stdout

    result = json.loads(bridge("ADD"))
    (ip,) = result["ips"]
    assert addresses_in_netns(lab) == {ip["address"]}
    assert default_gateway(lab, "-4") == [lab.gateway4] == [ip["gateway"]]
    ping(lab, lab.gateway4)
    assert lab.leases() == [ip["address"].split("/")[0]]
    bridge("DEL")
    assert lab.leases() == []

    lab.cleanup()
    lab.assert_gone()
