"""A real etcd on loopback, started and stopped by PID: for the tests, the benchmarks
(bench/etcd_cluster.py) and the campaigns, so it imports nothing but the standard library.

Each server gets free loopback ports (never 2379: a host's own etcd.service may own
it), a data folder on tmpfs when there is one (fsync is then free, as in
shared/reference/distributed.md §5) and auto-compaction (without it etcd slows to a
crawl under churn, shared/reference/distributed.md §3.1).
"""

from __future__ import annotations

import os
import shutil
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


class EtcdServer:
    """One single-member etcd on loopback; start(), stop() and restart() keep its data and ports.

    `tls` is (cert_file, key_file, ca_file or None): the client URL is then https, and
    with a CA file etcd also requires client certificates signed by it.
    """

    def __init__(
        self, name: str = "t", tls: tuple[str, str, str | None] | None = None, extra_args: Sequence[str] = ()
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
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
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
            f"{self.name}={peer}",
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

    def start(self) -> None:
        if self.proc is not None:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        context = None
        if self.tls:
            cert, key, client_ca = self.tls
            # The server certificate is checked by the client under test; /health only says "up".
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if client_ca:
                context.load_cert_chain(cert, key)
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
