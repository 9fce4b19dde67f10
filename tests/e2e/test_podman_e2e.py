"""End to end with podman: Debian's podman 4.3 runs real containers on a `bridge` network
whose IPAM is the installed cnipam, as a podman user would set it up.

The module makes a PRIVATE podman: its own storage (vfs) and run folders, its own
containers.conf (CNI network backend, its own network config and plugin folders, cgroupfs,
events in a file, `default_ulimits` below this sandbox's hard limits, `conmon_env_vars`),
and an image made with `podman import` from Debian's static busybox (no registry). The
plugin folder holds Debian's Go `bridge` and the links `cnipamctl install-plugin` makes.
Each test writes its own conflist (bridge `cnipod<hex>`, 10.202.<n>.0/24, fd12:202:<n>::/64),
runs containers, and compares the addresses inside them with the leases in the store.

Root only (CI is root); skipped with the reason when not root, when podman, conmon, the
`bridge` plugin or busybox-static is missing, or when podman cannot run here. Run it
under `flock /tmp/cnipam-podman.lock` when other podman runs may share the machine.
Everything it creates is removed whatever happened: containers (`podman rm -f`), the
private root (after unmounting what is left below it), the bridges, podman's netns files,
its CNI result cache files, and the host folders podman or the plugin made that did not
exist before (HOST_FOLDERS). The bridges run without masquerading, so no iptables rule is
written.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.container_image import busybox_missing, global_addresses, unmount_under, write_rootfs
from tests.support.host_network import HOST_PATH, host_command, ipv6_enabled
from tests.support.store_files import dump_leases

SCRIPTS = sysconfig.get_path("scripts")
PODMAN = "/usr/bin/podman"
CONMON = "/usr/bin/conmon"
BRIDGE = "/usr/lib/cni/bridge"
IMAGE = "localhost/cnipam-e2e-busybox:latest"
NETNS_DIR = Path("/run/netns")
CNI_RESULTS = Path("/var/lib/cni/results")  # podman 4.3's libcni cache; not configurable
ECS_DEFAULT_STORE = Path("/data/eni-ipam.db")  # where a DEL without IPAM_DB_PATH goes, as upstream
# What podman 4.3 (its blob cache, runc's state, libcni's cache) and the ecs test's DEL make
# outside the private root when missing; removed again if they were missing before
HOST_FOLDERS = tuple(map(Path, ("/var/lib/containers", "/run/runc", "/var/lib/cni", "/data")))
PODMAN_TIMEOUT = 120.0  # one podman command; generous, only to turn a hang into a failure
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root: rootful podman creates bridges, namespaces and containers (CI runs it as root)"
    for path, package in ((PODMAN, "podman"), (CONMON, "conmon"), (BRIDGE, "containernetworking-plugins")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian package {package})"
    return busybox_missing()


SKIP_REASON = _why_skip()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host_command(*args, timeout=PODMAN_TIMEOUT, check=check)


def wait_until(condition: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.1)


def containers_conf(root: Path, conmon_env: list[str]) -> str:
    """podman's configuration for this run: everything inside `root`, the CNI backend."""
    return "\n".join(
        [
            "[containers]",
            # rootful podman asks for nofile/nproc limits above this sandbox's hard limits otherwise
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
            f'events_logfile_path = "{root}/events.log"',
            f'tmp_dir = "{root}/tmp"',
            f'image_copy_tmp_dir = "{root}/tmp"',
            f'static_dir = "{root}/storage/libpod"',
            f'volume_path = "{root}/storage/volumes"',
            # conmon starts the exit-time `podman container cleanup` (its DEL) with only these
            f"conmon_env_vars = {json.dumps(conmon_env)}",
            "[network]",
            'network_backend = "cni"',
            f'cni_plugin_dirs = ["{root}/cni-bin"]',
            f'network_config_dir = "{root}/net.d"',
            "",
        ]
    )


class Podman:
    """A private podman in `root`; `run` calls it with this run's configuration only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ecs_store = root / "ecs" / "ipam.db"
        self.conf = root / "containers.conf"
        self.conf_without_store = root / "containers-without-store.conf"
        self.env = {
            "PATH": HOST_PATH,
            "HOME": str(root),
            "CONTAINERS_CONF": str(self.conf),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
            "IPAM_DB_PATH": str(self.ecs_store),  # the ecs dialect's store, for podman's own calls
        }

    def prepare(self) -> None:
        for folder in ("net.d", "cni-bin", "tmp", "storage", "run", "ecs"):
            (self.root / folder).mkdir()
        (self.root / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}/storage"\nrunroot = "{self.root}/run"\n'
        )
        (self.root / "registries.conf").write_text("")
        path = f"PATH={HOST_PATH}"
        self.conf.write_text(containers_conf(self.root, [path, f"IPAM_DB_PATH={self.ecs_store}"]))
        self.conf_without_store.write_text(containers_conf(self.root, [path]))
        os.symlink(BRIDGE, self.root / "cni-bin" / "bridge")
        install = subprocess.run(
            [os.path.join(SCRIPTS, "cnipamctl"), "install-plugin", "--bin-dir", str(self.root / "cni-bin")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert install.returncode == 0, install.stderr

    def run(self, *args: str, check: bool = True, conf: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "CONTAINERS_CONF": str(conf or self.conf)}
        done = subprocess.run([PODMAN, *args], capture_output=True, text=True, env=env, timeout=PODMAN_TIMEOUT)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`podman` in the background (for parallel runs)."""
        return subprocess.Popen(
            [PODMAN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    missing = [folder for folder in HOST_FOLDERS if not folder.exists()]
    default_store_existed = ECS_DEFAULT_STORE.exists()
    netns_before = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
    root = Path(tempfile.mkdtemp(prefix="cnipod", dir="/tmp"))  # short: conmon's socket paths are limited
    engine = Podman(root)
    try:
        engine.prepare()
        info = engine.run("info", "--format", "{{.Host.NetworkBackend}} {{.Store.GraphDriverName}}", check=False)
        if info.returncode != 0:
            pytest.skip(f"podman cannot run here: {info.stderr.strip()}")
        assert info.stdout.split() == ["cni", "vfs"], info.stdout
        rootfs = root / "image.tar"
        write_rootfs(rootfs)
        engine.run("import", str(rootfs), IMAGE)
        yield engine
    finally:
        engine.run("rm", "--all", "--force", "--time", "0", check=False)
        for name in set(os.listdir(NETNS_DIR)) - netns_before if NETNS_DIR.is_dir() else ():
            if name.startswith("netns-"):  # podman's names; left only when podman was killed mid-way
                sh("umount", str(NETNS_DIR / name), check=False)
                (NETNS_DIR / name).unlink(missing_ok=True)
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        if not default_store_existed:  # only a DEL without IPAM_DB_PATH creates it (the ecs test shows it)
            for suffix in ("", ".lock", "-wal", "-shm", "-journal"):
                Path(f"{ECS_DEFAULT_STORE}{suffix}").unlink(missing_ok=True)
        for folder in missing:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def subnets() -> Iterator[int]:
    """A new third octet for every network of the module."""
    return iter(range(1, 250))


class Lab:
    """The networks and containers of one test; `cleanup` removes them all."""

    def __init__(self, podman: Podman, subnets: Iterator[int]) -> None:
        self.podman = podman
        self.subnets = subnets
        self.networks: dict[str, str] = {}  # network name -> bridge name
        self.containers: list[str] = []

    def network(self, ipam: dict[str, Any], cni_version: str = "1.0.0") -> str:
        """A conflist: `bridge` with `ipam` (its store in the root when host-local's dialect)."""
        name = f"cnipod{secrets.token_hex(4)}"  # also the bridge's name: at most 15 characters
        self.networks[name] = name
        plugin = {"type": "bridge", "bridge": name, "isGateway": True, "ipMasq": False, "ipam": ipam}
        conflist = {"cniVersion": cni_version, "name": name, "plugins": [plugin]}
        (self.podman.root / "net.d" / f"{name}.conflist").write_text(json.dumps(conflist))
        return name

    def host_local_network(
        self, dual_stack: bool = False, only: int | None = None
    ) -> tuple[str, ipaddress.IPv4Network, ipaddress.IPv6Network]:
        """A network in host-local's dialect; `only`: its IPv4 range is that one host number."""
        n = next(self.subnets)
        net4, net6 = ipaddress.IPv4Network(f"10.202.{n}.0/24"), ipaddress.IPv6Network(f"fd12:202:{n}::/64")
        range4 = {"subnet": str(net4)} | ({"rangeStart": str(net4[only]), "rangeEnd": str(net4[only])} if only else {})
        ranges = [[range4]] + ([[{"subnet": str(net6)}]] if dual_stack else [])
        name = self.network(
            {"type": "cnipam", "ranges": ranges, "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.store_dir)}
        )
        return name, net4, net6

    @property
    def store_dir(self) -> Path:
        return self.podman.root / "store"

    @property
    def store(self) -> Path:
        return self.store_dir / "cnipam.db"

    def run(
        self, network: str, *options: str, command: tuple[str, ...] = ("sleep", "600"), conf: Path | None = None
    ) -> str:
        """A detached container on `network`; its full id."""
        name = f"c{secrets.token_hex(5)}"
        self.containers.append(name)
        self.podman.run("run", "-d", "--name", name, "--network", network, *options, IMAGE, *command, conf=conf)
        return self.container_id(name)

    def container_id(self, name: str) -> str:
        return self.podman.run("inspect", "--format", "{{.Id}}", name).stdout.strip()

    def addresses(self, container: str) -> list[Address]:
        return global_addresses(self.podman.run("exec", container, "ip", "-o", "addr", "show", "eth0").stdout)

    def pings(self, container: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """One echo reply within a few tries (a new IPv6 gateway may still be tentative)."""
        for _ in range(10):
            if (
                self.podman.run("exec", container, "ping", "-c", "1", "-W", "1", str(address), check=False).returncode
                == 0
            ):
                return True
        return False

    def remove(self, *containers: str) -> None:
        self.podman.run("rm", "--force", "--time", "0", *containers)

    def cleanup(self) -> None:
        if self.containers:
            self.podman.run("rm", "--force", "--ignore", "--time", "0", *self.containers, check=False)
        for name, bridge in self.networks.items():
            (self.podman.root / "net.d" / f"{name}.conflist").unlink(missing_ok=True)
            if sh("ip", "link", "show", "dev", bridge, check=False).returncode == 0:
                sh("ip", "link", "delete", bridge, check=False)  # the bridge plugin never removes its bridge
            for entry in CNI_RESULTS.glob(f"{name}-*") if CNI_RESULTS.is_dir() else ():
                entry.unlink(missing_ok=True)


@pytest.fixture
def lab(podman: Podman, subnets: Iterator[int]) -> Iterator[Lab]:
    made = Lab(podman, subnets)
    try:
        yield made
    finally:
        made.cleanup()


def leases(db: Path) -> dict[str, list[Address]]:
    """container id -> the addresses its leases hold, as the store records them."""
    held: dict[str, list[Address]] = {}
    for _family, ip, kind, pool, _slot, _handle, _network, container, _ifname, _created in dump_leases(db) or []:
        if kind == "lease":
            prefix = ipaddress.ip_network(pool.partition("[")[0]).prefixlen  # a pool may name a range: "net[start-end]"
            held.setdefault(container, []).append(ipaddress.ip_interface(f"{ip}/{prefix}"))
    return {container: sorted(found, key=lambda a: (a.version, a)) for container, found in held.items()}


def host_veth(network: str, container: str) -> str:
    """The host end of the container's veth, from podman's CNI result cache."""
    entry = json.loads((CNI_RESULTS / f"{network}-{container}-eth0").read_text())
    (veth,) = [i["name"] for i in entry["result"]["interfaces"] if "sandbox" not in i and i["name"] != network]
    return str(veth)


# -- host-local's dialect -----------------------------------------------------------------------


def test_ipv4_addresses_are_the_stores_leases_and_the_gateway_answers(lab: Lab) -> None:
    network, net4, _ = lab.host_local_network()
    first, second = lab.run(network), lab.run(network)
    inside = {cid: lab.addresses(cid) for cid in (first, second)}
    assert leases(lab.store) == inside
    assert all(len(found) == 1 and found[0].network == net4 for found in inside.values())
    assert inside[first] != inside[second]
    assert lab.pings(first, net4[1]), f"the gateway {net4[1]} did not answer"
    assert lab.pings(first, inside[second][0].ip), "the other container did not answer"


def test_dual_stack_addresses_are_the_stores_leases_and_both_gateways_answer(lab: Lab) -> None:
    if not ipv6_enabled():
        pytest.skip("IPv6 is disabled on this host")
    network, net4, net6 = lab.host_local_network(dual_stack=True)
    container = lab.run(network)
    inside = lab.addresses(container)
    assert [a.network for a in inside] == [net4, net6]
    assert leases(lab.store) == {container: inside}
    assert lab.pings(container, net4[1]) and lab.pings(container, net6[1]), "a gateway did not answer"


def test_requested_ip_and_ip6(lab: Lab) -> None:
    if not ipv6_enabled():
        pytest.skip("IPv6 is disabled on this host")
    network, net4, net6 = lab.host_local_network(dual_stack=True)
    container = lab.run(network, "--ip", str(net4[77]), "--ip6", str(net6[0x77]))
    assert lab.addresses(container) == [
        ipaddress.ip_interface(f"{net4[77]}/24"),
        ipaddress.ip_interface(f"{net6[0x77]}/64"),
    ]
    assert leases(lab.store) == {container: lab.addresses(container)}


def test_a_conflicting_ip_is_refused_and_the_holder_keeps_its_address(lab: Lab) -> None:
    """Issue 12's podman sequence: the refused container's DEL carries the same requested
    address and must not free the holder's lease. The range is that one address, so a
    freed lease would show at once: the next container would get it."""
    network, net4, _ = lab.host_local_network(only=50)
    only = net4[50]
    holder = lab.run(network, "--ip", str(only))
    before = leases(lab.store)
    assert before == {holder: [ipaddress.ip_interface(f"{only}/24")]}

    name = f"c{secrets.token_hex(5)}"
    lab.containers.append(name)
    refused = lab.podman.run(
        "run", "-d", "--name", name, "--network", network, "--ip", str(only), IMAGE, "sleep", "600", check=False
    )
    assert refused.returncode != 0 and "already leased" in refused.stderr, refused.stderr
    lab.remove(name)  # podman DELs again on removal, with the same arguments
    assert leases(lab.store) == before
    assert lab.addresses(holder) == before[holder]

    name = f"c{secrets.token_hex(5)}"
    lab.containers.append(name)
    next_one = lab.podman.run("run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "600", check=False)
    assert next_one.returncode != 0 and "no free address" in next_one.stderr, next_one.stderr
    assert leases(lab.store) == before

    lab.remove(holder)
    assert leases(lab.store) == {}
    after = lab.run(network)  # the address was held, not lost
    assert lab.addresses(after) == [ipaddress.ip_interface(f"{only}/24")]


def test_rm_and_run_rm_release_the_lease(lab: Lab) -> None:
    network, net4, _ = lab.host_local_network()
    container = lab.run(network)
    sandbox = Path(lab.podman.run("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container).stdout.strip())
    veth = host_veth(network, container)
    assert sandbox.exists() and leases(lab.store) == {container: lab.addresses(container)}
    lab.remove(container)
    assert leases(lab.store) == {}
    assert not sandbox.exists(), f"{sandbox} is still there after podman rm -f"
    assert sh("ip", "link", "show", "dev", veth, check=False).returncode != 0, (
        f"{veth} is still there after podman rm -f"
    )

    out = lab.podman.run("run", "--rm", "--network", network, IMAGE, "ip", "-o", "addr", "show", "eth0").stdout
    assert [a.network for a in global_addresses(out)] == [net4]
    assert leases(lab.store) == {}


def test_ten_containers_started_in_parallel_get_ten_distinct_addresses(lab: Lab) -> None:
    network, net4, _ = lab.host_local_network()
    names = [f"c{secrets.token_hex(5)}" for _ in range(10)]
    lab.containers.extend(names)
    runs = [
        lab.podman.start("run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "600") for name in names
    ]
    for name, process in zip(names, runs, strict=True):
        _, err = process.communicate(timeout=PODMAN_TIMEOUT)
        assert process.returncode == 0, f"podman run {name}: {err.strip()}"
    inside = {lab.container_id(name): lab.addresses(name) for name in names}
    assert leases(lab.store) == inside
    addresses = [found[0] for found in inside.values()]
    assert len(set(addresses)) == 10 and all(a.network == net4 for a in addresses)
    lab.remove(*names)
    assert leases(lab.store) == {}


def test_network_reload_keeps_the_addresses(lab: Lab) -> None:
    network, _, _ = lab.host_local_network()
    containers = [lab.run(network), lab.run(network)]
    before = {cid: lab.addresses(cid) for cid in containers}
    veths = {cid: host_veth(network, cid) for cid in containers}
    lab.podman.run("network", "reload", "--all")
    assert {cid: host_veth(network, cid) for cid in containers} != veths  # torn down and set up again (DEL, ADD)
    assert {cid: lab.addresses(cid) for cid in containers} == before
    assert leases(lab.store) == before


# -- the ecs dialect ------------------------------------------------------------------------------


def ecs_network(lab: Lab) -> tuple[str, ipaddress.IPv4Network]:
    net4 = ipaddress.IPv4Network(f"10.202.{next(lab.subnets)}.0/24")
    ipam = {"type": "ecs-ipam", "ipv4-subnet": str(net4), "ipv4-routes": [{"dst": "0.0.0.0/0"}]}
    return lab.network(ipam, cni_version="0.3.1"), net4


def wait_for_cleanup(lab: Lab, container: str, sandbox: Path) -> None:
    """Until the container has exited and conmon's `podman container cleanup` tore its network down."""
    wait_until(
        lambda: lab.podman.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip() == "exited", "exit"
    )
    wait_until(lambda: not sandbox.exists(), f"{sandbox} to go (the exit-time cleanup)")


def test_ecs_dialect_releases_at_exit_with_the_store_in_conmon_env_vars(lab: Lab) -> None:
    network, net4 = ecs_network(lab)
    container = lab.run(network, command=("sleep", "3"))
    sandbox = Path(lab.podman.run("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container).stdout.strip())
    inside = lab.addresses(container)
    assert [a.network for a in inside] == [net4] and leases(lab.podman.ecs_store) == {container: inside}
    wait_for_cleanup(lab, container, sandbox)
    assert leases(lab.podman.ecs_store) == {}  # the exit-time DEL found the store through conmon_env_vars


def test_ecs_dialect_without_the_store_in_conmon_env_vars_leaks_the_lease(lab: Lab) -> None:
    """The pitfall the README warns about: the exit-time DEL runs with conmon's environment
    only, so without IPAM_DB_PATH there it opens the default /data/eni-ipam.db, finds
    nothing to release there, and the lease stays in the real store."""
    if ECS_DEFAULT_STORE.exists():
        pytest.skip(f"{ECS_DEFAULT_STORE} exists (a real ecs-ipam store?): this test would write into it")
    network, _ = ecs_network(lab)
    container = lab.run(network, command=("sleep", "3"), conf=lab.podman.conf_without_store)
    sandbox = Path(lab.podman.run("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container).stdout.strip())
    inside = lab.addresses(container)
    assert leases(lab.podman.ecs_store) == {container: inside}
    wait_for_cleanup(lab, container, sandbox)
    assert leases(lab.podman.ecs_store) == {container: inside}  # leaked
    assert ECS_DEFAULT_STORE.exists() and leases(ECS_DEFAULT_STORE) == {}  # where the DEL went (the fixture removes it)
