"""End to end with a real Docker daemon: `docker network create --ipam-driver` and
`docker run` against Debian's dockerd (package docker.io, 20.10), which talks to the
installed `cnipam-docker` over its UNIX socket in /run/docker/plugins.

The module starts a PRIVATE dockerd (its own data root, exec root, socket and pid file
in a short temp dir; no iptables, no default bridge, vfs storage), imports a tiny image
built here from Debian's busybox-static (no registry), and starts the driver with its own
store in that temp dir. Each test creates bridge networks named `cnie2e<hex>` in the test
ranges 198.18.0.0/16 and 2001:db8:77::/56, runs containers that print their own addresses,
compares them with what was asked, removes everything and checks that the driver's store
no longer holds anything of those pools.

Root only (CI is root); skipped with the reason when not root, when dockerd or the docker
client is missing, or when dockerd cannot start here. Every container, network and bridge
is removed by a finalizer whatever happened; dockerd and the driver are stopped by their
PIDs; /etc/docker/key.json is removed only if this run created it. A system dockerd is
never touched: every client call names the private socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.container_image import busybox_missing, global_addresses, unmount_under, write_rootfs
from tests.support.host_network import HOST_PATH, host_command, ipv6_enabled

SCRIPTS = sysconfig.get_path("scripts")
DRIVER = os.path.join(SCRIPTS, "cnipam-docker")
DOCKERD = "/usr/sbin/dockerd"
DOCKER = (
    "/usr/bin/docker"  # the package's 20.10 client, not /usr/local/bin/docker (28.x refuses some flags at API 1.41)
)
PLUGIN_DIR = Path("/run/docker/plugins")
KEY_JSON = Path("/etc/docker/key.json")
IMAGE = "cnipam-e2e-busybox"
MAIN4 = ipaddress.IPv4Network("198.18.0.0/16")
BLOCK4 = 24
MAIN6 = ipaddress.IPv6Network("2001:db8:77::/56")
BLOCK6 = 64
DOCKER_TIMEOUT = 120.0  # one docker command; generous, only to turn a hang into a failure
START_TIMEOUT = 60.0


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root: runs a private dockerd that creates bridges and containers (CI runs it as root)"
    if not os.access(DOCKERD, os.X_OK):
        return f"{DOCKERD} is missing (Debian package docker.io)"
    if not os.access(DOCKER, os.X_OK):
        return f"{DOCKER} is missing (Debian package docker.io)"
    return busybox_missing()


SKIP_REASON = _why_skip()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_pid(pid: int, grace: float, reap: Callable[[float], bool]) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; `reap(timeout)` says whether it exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if reap(grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    reap(10.0)


def _popen_reaper(proc: subprocess.Popen[bytes]) -> Callable[[float], bool]:
    def reap(timeout: float) -> bool:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return reap


def _foreign_reaper(pid: int) -> Callable[[float], bool]:
    """For a process that is not our child (dockerd's containerd): poll until it is gone."""

    def reap(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    return reap


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host_command(*args, timeout=DOCKER_TIMEOUT, check=check)


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name, check=False).returncode == 0


class Dockerd:
    """A private dockerd in `root`; `run` calls the 20.10 client against its socket only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self.env = {
            "PATH": HOST_PATH,
            "HOME": str(root),
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(root / "client"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """Start dockerd; return None when it answers, else why it could not start."""
        command = [
            DOCKERD,
            "--data-root", f"{self.root}/data",
            "--exec-root", f"{self.root}/exec",
            "-H", f"unix://{self.socket}",
            "--pidfile", str(self.pidfile),
            "--iptables=false", "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--debug",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited {self.proc.returncode} at start; its log ends:\n{_tail(self.log)}"
            if self.socket.exists() and self.run("version", check=False, timeout=10).returncode == 0:
                return None
            time.sleep(0.2)
        return f"dockerd did not answer `docker version` within {START_TIMEOUT:.0f} s; its log ends:\n{_tail(self.log)}"

    def stop(self) -> None:
        if self.proc is None:
            return
        containerd = self.root / "exec" / "containerd" / "containerd.pid"
        containerd_pid = None
        with contextlib.suppress(OSError, ValueError):
            containerd_pid = int(containerd.read_text().strip())
        _stop_pid(self.proc.pid, 30.0, _popen_reaper(self.proc))
        # dockerd stops the containerd it started; if it was killed, containerd may be left over.
        if containerd_pid is not None and str(self.root) in _cmdline(containerd_pid):
            _stop_pid(containerd_pid, 10.0, _foreign_reaper(containerd_pid))

    def run(
        self, *args: str, check: bool = True, timeout: float = DOCKER_TIMEOUT, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[str]:
        raw = subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )
        out, err = raw.stdout.decode(errors="replace"), raw.stderr.decode(errors="replace")
        done = subprocess.CompletedProcess(raw.args, raw.returncode, out, err)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    key_existed = KEY_JSON.exists()  # dockerd 20.10 writes it on first start
    made_run_docker = not PLUGIN_DIR.parent.exists()  # dockerd creates /run/docker/plugins
    root = Path(tempfile.mkdtemp(prefix="cnie2e", dir="/tmp"))  # short: UNIX socket paths are limited to 108 bytes
    daemon = Dockerd(root)
    try:
        why = daemon.start()
        if why is not None:
            pytest.skip(f"dockerd cannot start here: {why}")
        yield daemon
    finally:
        daemon.stop()
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        if not key_existed:
            KEY_JSON.unlink(missing_ok=True)
        if made_run_docker:
            for directory in (PLUGIN_DIR, PLUGIN_DIR.parent):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> str:
    """A rootfs of busybox-static and a few applet symlinks, imported without a registry."""
    rootfs = dockerd.root / "image.tar"
    write_rootfs(rootfs)
    dockerd.run("import", "-", IMAGE, stdin=rootfs.read_bytes())
    return IMAGE


class Driver:
    def __init__(self, root: Path) -> None:
        tag = secrets.token_hex(3)
        self.name = f"cnipame2e{tag}"  # unique: two runs on one host must not share /run/docker/plugins/NAME.sock
        self.socket = PLUGIN_DIR / f"{self.name}.sock"
        self.db = root / "ipam.db"
        self.log = root / "driver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            DRIVER,
            "--name", self.name,
            "--socket", str(self.socket),
            "--db", str(self.db),
            "-v4", str(MAIN4), "-v4ab", str(BLOCK4),
            "-v6", str(MAIN6), "-v6ab", str(BLOCK6),
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            env = {"PATH": HOST_PATH}
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if self.listening():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{' '.join(command)} exited {self.proc.returncode} before listening:\n{_tail(self.log)}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{' '.join(command)} logged no listening event within 20 s:\n{_tail(self.log)}")

    def listening(self) -> bool:
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if (
                    isinstance(event, dict)
                    and event.get("event") == "listening"
                    and event.get("socket") == str(self.socket)
                ):
                    return True
        return False

    def stop(self) -> int | None:
        """Stop by PID (SIGTERM, then SIGKILL); return the exit status."""
        if self.proc is None:
            return None
        _stop_pid(self.proc.pid, 15.0, _popen_reaper(self.proc))
        return self.proc.returncode


@pytest.fixture(scope="module")
def driver(dockerd: Dockerd) -> Iterator[Driver]:
    """The installed driver, with its store in the module's dir. Depends on dockerd so that it
    is stopped first, after the private daemon's containers and networks are gone (their
    removal calls the driver)."""
    if not os.access(DRIVER, os.X_OK):
        pytest.fail(f"{DRIVER} is missing: run `pip install .` first")
    plugin = Driver(dockerd.root)
    try:
        plugin.start()
        yield plugin
    finally:
        # Leftovers of a failed test (finalizers normally removed them): everything on the private daemon is ours.
        containers = dockerd.run("ps", "-aq", check=False).stdout.split()
        if containers:
            dockerd.run("rm", "-f", *containers, check=False)
        for network in dockerd.run("network", "ls", "--format", "{{.Name}}", check=False).stdout.split():
            if network not in ("bridge", "host", "none"):
                dockerd.run("network", "rm", network, check=False)
        code = plugin.stop()
        left = plugin.socket.exists()
        plugin.socket.unlink(missing_ok=True)
        assert code == 0 or code == -signal.SIGTERM, f"the driver exited {code} on SIGTERM:\n{_tail(plugin.log)}"
        assert not left, f"the driver left its socket {plugin.socket} behind"


class Lab:
    """Networks and containers of one test on the private daemon; `cleanup` removes them all."""

    def __init__(self, dockerd: Dockerd, driver: Driver, image: str) -> None:
        self.docker = dockerd
        self.driver = driver
        self.image = image
        self.networks: dict[str, str] = {}  # network name -> its bridge, or the veth a macvlan network sits on
        self.parents: set[str] = set()  # veths made here as macvlan parents
        self.containers: list[str] = []

    def create_network(self, *options: str, macvlan: bool = False, check: bool = True) -> tuple[str, str]:
        """A bridge network (`-d bridge`, its bridge named here), or with `macvlan` a macvlan
        network on a veth made for it (the bridge driver refuses two networks on one subnet,
        so sibling networks are macvlan's, as on a real LAN); `check=False`: a refusal
        returns ("", stderr) and leaves nothing behind."""
        tag = secrets.token_hex(4)
        name, link = f"cnie2e-{tag}", f"cnie2e{tag}"  # a link name has at most 15 characters
        if macvlan:
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", link + "p")
            self.parents.add(link)
            driver = ("-d", "macvlan", "-o", f"parent={link}")
        else:
            driver = ("-d", "bridge", "-o", f"com.docker.network.bridge.name={link}")
        self.networks[name] = link
        done = self.docker.run(
            "network", "create", *driver, "--ipam-driver", self.driver.name, *options, name, check=check
        )  # fmt: skip
        if done.returncode != 0:
            del self.networks[name]
            return "", done.stderr
        return name, link

    def remove_network(self, name: str) -> None:
        self.docker.run("network", "rm", name)
        link = self.networks.pop(name)
        if link in self.parents:
            sh("ip", "link", "delete", link)
            self.parents.discard(link)
        assert not link_exists(link), f"{link} is still there after `docker network rm {name}`"

    def inspect_network(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.docker.run("network", "inspect", name).stdout)
        return found[0]

    def addresses(self, network: str, *run_options: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """Run a throwaway container on `network` and return eth0's global addresses as it sees them."""
        out = self.docker.run(
            "run", "--rm", "--network", network, *run_options, self.image, "ip", "-o", "addr", "show", "eth0"
        ).stdout
        return global_addresses(out)

    def start_container(self, network: str, *run_options: str) -> str:
        cid = self.docker.run(
            "run", "-d", "--network", network, *run_options, self.image, "sleep", "600"
        ).stdout.strip()
        self.containers.append(cid)
        return cid

    def container_addresses(self, cid: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        return global_addresses(self.docker.run("exec", cid, "ip", "-o", "addr", "show", "eth0").stdout)

    def remove_container(self, cid: str) -> None:
        self.docker.run("rm", "-f", cid)
        self.containers.remove(cid)

    def cleanup(self) -> None:
        for cid in reversed(self.containers):
            self.docker.run("rm", "-f", cid, check=False)
        for name in self.networks:
            self.docker.run("network", "rm", name, check=False)
        for link in {*self.networks.values(), *self.parents}:
            if link_exists(link):
                sh("ip", "link", "delete", link, check=False)
        self.containers.clear()
        self.networks.clear()
        self.parents.clear()


@pytest.fixture
def lab(dockerd: Dockerd, driver: Driver, image: str) -> Iterator[Lab]:
    made = Lab(dockerd, driver, image)
    try:
        yield made
    finally:
        made.cleanup()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _read_store(db: Path, query: str) -> list[tuple[Any, ...]]:
    """Read the driver's SQLite store while it runs (read-only; its writes are committed before each reply)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        return list(conn.execute(query))


def leases_in(db: Path, *pools: Network) -> list[tuple[str, str, str]]:
    """(ip, kind, network) of the store's leases inside `pools`."""
    rows = _read_store(db, "SELECT ip, kind, network FROM leases")
    return [
        (ip, kind, network) for ip, kind, network in rows if any(ipaddress.ip_address(ip) in pool for pool in pools)
    ]


def pools_over(db: Path, *pools: Network) -> list[str]:
    """The store's Docker pools (table docker_pools) that overlap `pools`."""
    rows = _read_store(db, "SELECT pool FROM docker_pools")
    return [row[0] for row in rows if any(ipaddress.ip_network(row[0]).overlaps(pool) for pool in pools)]


def assert_held(db: Path, pool: Network, *addresses: Any) -> None:
    assert pools_over(db, pool) == [str(pool)], f"the store does not record the pool {pool}: {pools_over(db, pool)}"
    held = {ip for ip, _, _ in leases_in(db, pool)}
    assert {str(a) for a in addresses} <= held, f"the store holds {sorted(held)} in {pool}, not all of {addresses}"


def assert_released(db: Path, *pools: Network) -> None:
    """Nothing in the store belongs to `pools` any more: no address, no pool."""
    left = leases_in(db, *pools)
    assert not left, f"the driver still holds, after the containers and networks were removed: {left}"
    blocks = pools_over(db, *pools)
    assert not blocks, f"the driver still records the pools {blocks} after `docker network rm`"


def only(items: list[Any], what: str) -> Any:
    assert len(items) == 1, f"expected exactly one {what}, got {items}"
    return items[0]


# ---------------------------------------------------------------- the harness alone


def test_harness_runs_a_container(dockerd: Dockerd, image: str) -> None:
    """The private dockerd and the imported image work, without any driver or network."""
    out = dockerd.run("run", "--rm", "--network", "none", image, "sh", "-c", "echo ok; ls /bin/ip").stdout
    assert out.split() == ["ok", "/bin/ip"]
    info = json.loads(dockerd.run("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == f"{dockerd.root}/data", "the client must talk to the private daemon only"


# ---------------------------------------------------------------- through the driver


def test_dynamic_pool(lab: Lab) -> None:
    """No --subnet: the driver cuts a /24 out of 198.18.0.0/16; the gateway and each container
    get distinct addresses in it, with the pool's prefix length; removal frees everything."""
    name, bridge = lab.create_network()
    config = only(lab.inspect_network(name)["IPAM"]["Config"], "IPAM config")
    assert lab.inspect_network(name)["IPAM"]["Driver"] == lab.driver.name
    pool = ipaddress.IPv4Network(config["Subnet"])
    assert pool.prefixlen == BLOCK4 and pool.subnet_of(MAIN4), f"dynamic pool {pool} is not a /{BLOCK4} of {MAIN4}"
    gateway = ipaddress.ip_address(config["Gateway"])
    assert gateway in pool and gateway not in (pool.network_address, pool.broadcast_address)
    bridge_addresses = global_addresses(sh("ip", "-o", "addr", "show", "dev", bridge).stdout)
    assert bridge_addresses == [ipaddress.ip_interface(f"{gateway}/{BLOCK4}")], "the bridge carries the gateway"

    held = lab.start_container(name)
    first = only(lab.container_addresses(held), "address on eth0")
    second = only(lab.addresses(name), "address on eth0")
    for address in (first, second):
        assert address.network == pool, f"{address} is not in the pool {pool} with its prefix length"
        assert address.ip not in (gateway, pool.network_address, pool.broadcast_address)
    assert first.ip != second.ip, "two running containers got the same address"
    assert_held(lab.driver.db, pool, gateway, first.ip)

    other_name, _ = lab.create_network()
    other = ipaddress.IPv4Network(only(lab.inspect_network(other_name)["IPAM"]["Config"], "IPAM config")["Subnet"])
    assert other.prefixlen == BLOCK4 and other.subnet_of(MAIN4) and not other.overlaps(pool), (
        f"second dynamic pool {other}"
    )

    lab.remove_container(held)
    lab.remove_network(name)
    lab.remove_network(other_name)
    assert_released(lab.driver.db, pool, other)


def test_subnet_gateway_ip_range_aux_address_and_ip(lab: Lab) -> None:
    """--subnet/--gateway/--ip-range/--aux-address are honoured; containers get addresses from
    the range only, never the gateway or the aux address; --ip is given exactly; --ip of the
    aux address is refused."""
    octet = 128 + secrets.randbelow(120)  # 198.18.128-247.0/24: inside the main pool, rarely the dynamic ones
    subnet = ipaddress.ip_network(f"198.18.{octet}.0/24")
    gateway, ip_range, aux = (
        f"198.18.{octet}.254",
        ipaddress.ip_network(f"198.18.{octet}.128/25"),
        f"198.18.{octet}.130",
    )
    chosen = f"198.18.{octet}.140"
    name, bridge = lab.create_network(
        "--subnet", str(subnet), "--gateway", gateway, "--ip-range", str(ip_range), "--aux-address", f"a={aux}"
    )  # fmt: skip
    config = only(lab.inspect_network(name)["IPAM"]["Config"], "IPAM config")
    assert config["Subnet"] == str(subnet) and config["Gateway"] == gateway and config["IPRange"] == str(ip_range)
    assert config["AuxiliaryAddresses"] == {"a": aux}
    assert global_addresses(sh("ip", "-o", "addr", "show", "dev", bridge).stdout) == [
        ipaddress.ip_interface(f"{gateway}/24")
    ]

    held = lab.start_container(name)
    ranged = only(lab.container_addresses(held), "address on eth0")
    other = only(lab.addresses(name), "address on eth0")
    for address in (ranged, other):
        assert address.network == subnet, f"{address} does not carry the subnet's prefix length"
        assert address.ip in ip_range, f"{address} is outside --ip-range {ip_range}"
        assert str(address.ip) not in (gateway, aux, str(ip_range.broadcast_address))
    assert ranged.ip != other.ip
    assert only(lab.addresses(name, "--ip", chosen), "address on eth0") == ipaddress.ip_interface(f"{chosen}/24")
    refused = lab.docker.run("run", "--rm", "--network", name, "--ip", aux, lab.image, "true", check=False)
    assert refused.returncode != 0, f"--ip {aux} (the aux address) was accepted"
    assert "IpamDriver.RequestAddress" in refused.stderr, refused.stderr
    assert_held(lab.driver.db, subnet, gateway, aux, ranged.ip)
    assert chosen not in {ip for ip, _, _ in leases_in(lab.driver.db, subnet)}, (
        f"{chosen} was not released with its container"
    )

    lab.remove_container(held)
    lab.remove_network(name)
    assert_released(lab.driver.db, subnet)


def test_cnipamctl_never_frees_a_running_containers_address_by_itself(lab: Lab) -> None:
    """Issue 20's duplicate: `cnipamctl release IP --yes` of a running container's address
    went through, and `docker run --ip IP` then gave it to a second container. It is
    refused, naming the Docker pool; the store records what each address is for (dockerd
    sends the endpoint's MAC address, the aux address comes with no options); `pools`
    shows the network as `docker network inspect` does."""
    octet = 128 + secrets.randbelow(120)
    subnet, chosen, aux, gateway = (f"198.18.{octet}.0/24", f"198.18.{octet}.77", f"198.18.{octet}.9",
                                    f"198.18.{octet}.254")  # fmt: skip
    name, _ = lab.create_network(
        "--subnet", subnet, "--ip-range", f"198.18.{octet}.128/25", "--gateway", gateway, "--aux-address", f"a={aux}"
    )
    holder = lab.start_container(name, "--ip", chosen)
    roles = {ip: slot for ip, slot in _read_store(lab.driver.db, "SELECT ip, slot FROM leases")}
    assert (roles[gateway], roles[aux], roles[chosen]) == ("docker-gateway", "docker-aux", "docker-endpoint")
    ctl = [os.path.join(SCRIPTS, "cnipamctl"), "--db", str(lab.driver.db)]
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8"}
    refused = subprocess.run([*ctl, "release", chosen, "--yes"], capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "may still be in use" in refused.stderr, refused.stderr
    assert "an endpoint of Docker pool" in refused.stderr and "dockerd frees it" in refused.stderr
    second = lab.docker.run("run", "--rm", "--network", name, "--ip", chosen, lab.image, "true", check=False)
    assert second.returncode != 0, "a second container got the running one's address"
    assert only(lab.container_addresses(holder), "address on eth0").ip == ipaddress.ip_address(chosen)
    pools = subprocess.run([*ctl, "pools", "--json"], capture_output=True, text=True, env=env)
    [row] = [row for row in json.loads(pools.stdout) if row["subnet"] == subnet]
    assert (row["gateway"], row["aux"], row["ip_range"], row["endpoints"]) == (
        gateway, [aux], f"198.18.{octet}.128/25", 1,
    )  # fmt: skip
    lab.remove_container(holder)
    lab.remove_network(name)
    assert_released(lab.driver.db, ipaddress.ip_network(subnet))


def test_explicit_subnet_twice_is_refused(lab: Lab) -> None:
    """A second network on a subnet the driver already gave out is refused, never given another pool."""
    octet = 128 + secrets.randbelow(120)
    subnet = f"198.18.{octet}.0/24"
    name, _ = lab.create_network("--subnet", subnet)
    assert_held(lab.driver.db, ipaddress.ip_network(subnet))
    tag = secrets.token_hex(4)
    twice = lab.docker.run(
        "network", "create", "-d", "bridge", "-o", f"com.docker.network.bridge.name=cnie2e{tag}",
        "--ipam-driver", lab.driver.name, "--subnet", subnet, f"cnie2e-{tag}",
        check=False,
    )  # fmt: skip
    if twice.returncode == 0:
        lab.networks[f"cnie2e-{tag}"] = f"cnie2e{tag}"
        config = only(lab.inspect_network(f"cnie2e-{tag}")["IPAM"]["Config"], "IPAM config")
        pytest.fail(f"a second network on {subnet} was created (inspect says {config['Subnet']})")
    assert "IpamDriver.RequestPool" in twice.stderr, twice.stderr
    lab.remove_network(name)
    assert_released(lab.driver.db, ipaddress.ip_network(subnet))


def test_sibling_networks_share_a_subnet_with_their_own_ip_ranges(lab: Lab) -> None:
    """Several networks on one --subnet with distinct --ip-ranges, as Docker's own IPAM
    accepts them (macvlan networks of one LAN, each on its own parent): each container
    gets an address of its own network's range, an overlapping range and a network
    wanting the whole subnet are refused while a sibling lives, and once the last one is
    removed the subnet is free for any network again."""
    octet = 128 + secrets.randbelow(120)
    subnet = ipaddress.ip_network(f"198.18.{octet}.0/24")
    ranges = [ipaddress.ip_network(f"198.18.{octet}.{start}/26") for start in (0, 64)]
    siblings = [
        lab.create_network("--subnet", str(subnet), "--ip-range", str(r), macvlan=True)[0] for r in ranges
    ]  # fmt: skip
    for name, ip_range in zip(siblings, ranges, strict=True):
        config = only(lab.inspect_network(name)["IPAM"]["Config"], "IPAM config")
        assert (config["Subnet"], config["IPRange"]) == (str(subnet), str(ip_range))
    running = [lab.start_container(name) for name in siblings]
    for cid, ip_range in zip(running, ranges, strict=True):
        address = only(lab.container_addresses(cid), "address on eth0")
        assert address.network == subnet and address.ip in ip_range, f"{address} is not of --ip-range {ip_range}"
    pools = _read_store(lab.driver.db, "SELECT pool, sub_pool FROM docker_pools")
    assert sorted(pools) == sorted((str(subnet), str(r)) for r in ranges), pools

    for options in (("--ip-range", f"198.18.{octet}.32/27"), ()):
        refused, why = lab.create_network("--subnet", str(subnet), *options, macvlan=True, check=False)
        assert refused == "" and "IpamDriver.RequestPool" in why, why
    third = ipaddress.ip_network(f"198.18.{octet}.128/26")
    name3, _ = lab.create_network("--subnet", str(subnet), "--ip-range", str(third), macvlan=True)
    assert only(lab.addresses(name3), "address on eth0").ip in third

    for cid in running:
        lab.remove_container(cid)
    lab.remove_network(siblings[0])
    assert pools_over(lab.driver.db, subnet) == [str(subnet)] * 2  # the parent lives on with the other networks
    lab.remove_network(siblings[1])
    lab.remove_network(name3)
    assert_released(lab.driver.db, subnet)
    whole, _ = lab.create_network("--subnet", str(subnet))  # the parent went with its last network
    lab.remove_network(whole)
    assert_released(lab.driver.db, subnet)


@pytest.mark.skipif(not ipv6_enabled(), reason="IPv6 is disabled on this host")
def test_ipv6_subnet_and_ip6(lab: Lab) -> None:
    """--ipv6 with an explicit /64 and a dynamic IPv4 pool: both families come from the driver;
    --ip6 is given exactly; the subnet-router anycast address is never handed out."""
    group = 0x80 + secrets.randbelow(0x80)  # 2001:db8:77:80-ff::/64, inside the /56 main pool
    subnet6 = ipaddress.ip_network(f"2001:db8:77:{group:x}::/64")
    chosen6 = f"2001:db8:77:{group:x}::abcd"
    name, bridge = lab.create_network("--ipv6", "--subnet", str(subnet6))
    inspected = lab.inspect_network(name)
    assert inspected["EnableIPv6"] is True
    configs = {ipaddress.ip_network(c["Subnet"]).version: c for c in inspected["IPAM"]["Config"]}
    assert ipaddress.ip_network(configs[6]["Subnet"]) == subnet6
    pool4 = ipaddress.IPv4Network(configs[4]["Subnet"]) if 4 in configs else None
    assert pool4 is not None and pool4.prefixlen == BLOCK4 and pool4.subnet_of(MAIN4), (
        f"no dynamic /24 from the driver: {configs}"
    )
    # 20.10's inspect shows no gateway for a --subnet without --gateway: the bridge carries it.
    on_bridge = global_addresses(sh("ip", "-o", "addr", "show", "dev", bridge).stdout)
    gateway6 = only([a for a in on_bridge if a.version == 6], "IPv6 address on the bridge")
    assert gateway6.network == subnet6 and gateway6.ip != subnet6.network_address, f"gateway {gateway6}"
    assert [a for a in on_bridge if a.version == 4] == [ipaddress.ip_interface(f"{configs[4]['Gateway']}/{BLOCK4}")]

    addresses = lab.addresses(name)
    v6 = only([a for a in addresses if a.version == 6], "IPv6 address")
    v4 = only([a for a in addresses if a.version == 4], "IPv4 address")
    assert v6.network == subnet6 and v6.ip not in (gateway6.ip, subnet6.network_address)
    assert v4.network == pool4
    assert_held(lab.driver.db, subnet6, gateway6.ip)
    assert_held(lab.driver.db, pool4, configs[4]["Gateway"])
    exact = lab.addresses(name, "--ip6", chosen6)
    assert ipaddress.ip_interface(f"{chosen6}/64") in exact, exact

    lab.remove_network(name)
    assert_released(lab.driver.db, subnet6, pool4)


@pytest.mark.skipif(not ipv6_enabled(), reason="IPv6 is disabled on this host")
def test_ipv6_dynamic_pool(lab: Lab) -> None:
    """--ipv6 without any subnet: a /64 of 2001:db8:77::/56 and a /24 of 198.18.0.0/16."""
    name, bridge = lab.create_network("--ipv6")
    configs = {ipaddress.ip_network(c["Subnet"]).version: c for c in lab.inspect_network(name)["IPAM"]["Config"]}
    assert set(configs) == {4, 6}, f"expected a dynamic pool per family: {configs}"
    pool4, pool6 = ipaddress.IPv4Network(configs[4]["Subnet"]), ipaddress.IPv6Network(configs[6]["Subnet"])
    assert pool6.prefixlen == BLOCK6 and pool6.subnet_of(MAIN6), f"dynamic IPv6 pool {pool6}"
    assert pool4.prefixlen == BLOCK4 and pool4.subnet_of(MAIN4), f"dynamic IPv4 pool {pool4}"
    gateway6 = only(
        [a for a in global_addresses(sh("ip", "-o", "addr", "show", "dev", bridge).stdout) if a.version == 6],
        "IPv6 gateway",
    )
    assert gateway6.network == pool6
    addresses = lab.addresses(name)
    v6 = only([a for a in addresses if a.version == 6], "IPv6 address")
    assert v6.network == pool6 and v6.ip not in (gateway6.ip, pool6.network_address)
    assert only([a for a in addresses if a.version == 4], "IPv4 address").network == pool4
    assert_held(lab.driver.db, pool6, gateway6.ip)

    lab.remove_network(name)
    assert_released(lab.driver.db, pool4, pool6)


# ---------------------------------------------------------------- TCP mode with TLS


SPEC_DIR = Path("/etc/docker/plugins")  # where dockerd 20.10 looks for NAME.json; fixed


class TLSDriver:
    """The installed driver in TCP mode on 127.0.0.1, serving HTTPS that requires a
    certificate `client_ca` signed, and writing SPEC_DIR/NAME.json with dockerd's files."""

    def __init__(self, root: Path, tag: str, files: dict[str, Path]) -> None:
        self.name = f"cnipame2etls{tag}"
        self.spec = SPEC_DIR / f"{self.name}.json"
        self.db = root / f"{self.name}.db"
        self.log = root / f"{self.name}.log"
        command = [
            DRIVER, "--name", self.name, "-address", "127.0.0.1:0", "--db", str(self.db), "-v4", "198.19.0.0/16",
            "--tls-cert", str(files["server"]), "--tls-key", str(files["server_key"]),
            "--tls-ca", str(files["client_ca"]), "--spec-ca", str(files["ca"]),
            "--spec-cert", str(files["client"]), "--spec-key", str(files["client_key"]),
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={"PATH": HOST_PATH}
            )
        deadline = time.monotonic() + 20.0
        while b'"listening"' not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the TLS driver did not start:\n{_tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        _stop_pid(self.proc.pid, 15.0, _popen_reaper(self.proc))
        self.spec.unlink(missing_ok=True)  # the driver removes it on SIGTERM; not after a SIGKILL
        return self.proc.returncode


def test_dockerd_reaches_the_driver_over_tls(dockerd: Dockerd, tmp_path: Path) -> None:
    """Docker's JSON plugin spec with a TLSConfig, read by a real dockerd: it connects over
    HTTPS with the client certificate the spec names, and the driver serves it. A driver
    that trusts another CA for its clients refuses the same dockerd: the network is not
    created and that driver's store records nothing."""
    trustme = pytest.importorskip("trustme")
    ca, strangers = trustme.CA(), trustme.CA()
    files: dict[str, Path] = {"ca": tmp_path / "ca.pem", "client_ca": tmp_path / "ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for name, leaf in (("server", ca.issue_cert("127.0.0.1")), ("client", ca.issue_cert("dockerd.e2e"))):
        files[name], files[f"{name}_key"] = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        leaf.private_key_pem.write_to_path(str(files[f"{name}_key"]))
        files[name].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    other = {**files, "client_ca": tmp_path / "strangers.pem"}
    strangers.cert_pem.write_to_path(str(other["client_ca"]))
    tag = secrets.token_hex(3)
    trusted, refusing = TLSDriver(dockerd.root, tag, files), TLSDriver(dockerd.root, tag + "x", other)
    network, bridge = f"cnie2etls-{tag}", f"cnie2etls{tag}"
    try:
        assert json.loads(trusted.spec.read_text())["Addr"].startswith("https://127.0.0.1:")
        dockerd.run(
            "network", "create", "-d", "bridge", "-o", f"com.docker.network.bridge.name={bridge}",
            "--ipam-driver", trusted.name, "--subnet", "198.19.7.0/24", network,
        )  # fmt: skip
        inspected = json.loads(dockerd.run("network", "inspect", network).stdout)[0]
        assert inspected["IPAM"]["Driver"] == trusted.name
        assert [c["Subnet"] for c in inspected["IPAM"]["Config"]] == ["198.19.7.0/24"]
        assert pools_over(trusted.db, ipaddress.IPv4Network("198.19.7.0/24")) == ["198.19.7.0/24"]
        dockerd.run("network", "rm", network)
        assert_released(trusted.db, ipaddress.IPv4Network("198.19.7.0/24"))

        create = ["network", "create", "--ipam-driver", refusing.name, "--subnet", "198.19.8.0/24", network + "x"]
        refused = dockerd.run(*create, check=False)
        assert refused.returncode != 0, refused.stdout
        assert not refusing.db.exists() or pools_over(refusing.db, ipaddress.IPv4Network("198.19.8.0/24")) == []
        assert b'"connection"' in refusing.log.read_bytes()  # it saw dockerd's handshake fail
    finally:
        for leftover in (network, network + "x"):
            dockerd.run("network", "rm", leftover, check=False)
        codes = (trusted.stop(), refusing.stop())
        assert not trusted.spec.exists() and not refusing.spec.exists()
    assert codes == (0, 0), (_tail(trusted.log), _tail(refusing.log))
