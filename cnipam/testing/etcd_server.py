"""A real etcd on loopback, started and stopped by PID: one member (EtcdServer) or a
cluster of several (EtcdCluster, each member with its own ports and data folder), for
the tests, the benchmarks (bench/etcd_cluster.py) and the campaigns, so it imports
nothing but the standard library.

Each server gets free loopback ports (never 2379: a host's own etcd.service may own
it), a data folder on tmpfs when there is one (fsync is then free, as in
shared/reference/distributed.md §5) and auto-compaction (without it etcd slows to a
crawl under churn, shared/reference/distributed.md §3.1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

START_TIMEOUT = 20.0  # seconds for /health to answer; healthy in about 0.5 s on a quiet machine
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port free right now (etcd binds it a moment later; a clash fails start())."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def gateway_post(
    endpoint: str, path: str, body: dict[str, object], token: str | None = None, context: ssl.SSLContext | None = None
) -> dict[str, object]:
    """An admin call straight to the JSON gateway (etcdctl is in another Debian package than etcd)."""
    request = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST")
    if token:
        request.add_header("Authorization", token)
    with urllib.request.urlopen(request, timeout=5.0, context=context) as answer:
        result: dict[str, object] = json.load(answer)
        return result


def enable_auth(endpoint: str, password: str) -> None:
    """Turn etcd's authentication on, with `root` (password `password`) as its only user."""
    gateway_post(endpoint, "/v3/auth/user/add", {"name": "root", "password": password})
    gateway_post(endpoint, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    gateway_post(endpoint, "/v3/auth/enable", {})


class EtcdServer:
    """One single-member etcd on loopback; start(), stop() and restart() keep its data and ports.

    `tls` is (cert_file, key_file, ca_file or None): the client URL is then https, and
    with a CA file etcd also requires client certificates signed by it.
    """

    def __init__(
        self,
        name: str = "t",
        tls: tuple[str, str, str | None] | None = None,
        extra_args: Sequence[str] = (),
        initial_cluster: str | None = None,
    ) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.binary = binary
        self.name = name
        self.tls = tls
        self.extra_args = tuple(extra_args)
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.folder = tempfile.mkdtemp(prefix="cnipam-etcd-", dir=base)
        self.data_dir = os.path.join(self.folder, "data")
        self.log_path = os.path.join(self.folder, "etcd.log")
        self.client_port = free_port()
        self.peer_port = free_port()
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"  # every member's name=peer URL
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        peer = self.peer_url
        args = [
            self.binary,
            "--name",
            self.name,
            "--data-dir",
            self.data_dir,
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster,
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
            "--logger=zap",
            "--log-level=error",
        ]
        if self.tls:
            cert, key, client_ca = self.tls
            args += ["--cert-file", cert, "--key-file", key]
            if client_ca:
                args += ["--client-cert-auth", "--trusted-ca-file", client_ca]
        return args + list(self.extra_args)

    def start(self, wait: bool = True) -> None:
        """Start the process; `wait`: until it is healthy (a member is once it has a leader)."""
        if self.proc is not None:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self._wait_healthy()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; the data folder stays for a restart."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the member hangs; the kernel still accepts connections to it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def status(self) -> dict[str, object] | None:
        """The member's /v3/maintenance/status answer, or None when it does not answer in 1 s."""
        try:
            return gateway_post(self.endpoint, "/v3/maintenance/status", {}, context=self._context())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        cert, key, client_ca = self.tls
        # The server certificate is checked by the client under test; this only asks "up?".
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if client_ca:
            context.load_cert_chain(cert, key)
        return context

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        context = self._context()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"etcd exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1.0, context=context) as answer:
                    if b'"true"' in answer.read():
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy within {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its data and log."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class EtcdCluster:
    """Several members of one etcd cluster on loopback (distinct ports, data folders and
    processes), for faults a single member cannot show: a lost leader, a hung member, a
    lost quorum. Members are started together (none is healthy before a quorum is up)."""

    def __init__(self, size: int = 3, name: str = "m") -> None:
        self.members = [EtcdServer(f"{name}{index}") for index in range(size)]
        everyone = ",".join(f"{member.name}={member.peer_url}" for member in self.members)
        for member in self.members:
            member.initial_cluster = everyone

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def start(self) -> None:
        for member in self.members:
            member.start(wait=False)
        for member in self.members:
            member._wait_healthy()

    def leader(self, timeout: float = 10.0) -> EtcdServer:
        """The member that leads now, once one does (within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                status = member.status() if member.proc is not None else None
                header = status.get("header") if status else None
                if status and isinstance(header, dict) and status.get("leader") == header.get("member_id"):
                    return member
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader within {timeout} s")

    def has_leader(self) -> bool:
        """Whether a running member knows a leader (one status round, at most 1 s a member)."""
        for member in self.members:
            status = member.status() if member.proc is not None else None
            if status and status.get("leader") not in (None, "0"):
                return True
        return False

    def remove(self) -> None:
        for member in self.members:
            member.resume()  # a stopped process would ignore SIGTERM until continued
            member.remove()

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
