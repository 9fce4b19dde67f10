"""The installed `cnipam-docker` as a running process on a UNIX socket, driven over HTTP
as dockerd drives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cnipam.testing.unix_http import UnixConnection

EXECUTABLE = os.path.join(os.path.dirname(sys.executable), "cnipam-docker")


class RunningDriver:
    """`args` choose the pools; the store is --db FOLDER/ipam.db unless `store` names it
    (then `env` is the driver's whole environment, as CNIPAM_STORE would be set)."""

    def __init__(
        self,
        folder: Path,
        *args: str,
        store: list[str] | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.folder = folder
        self.preexec_fn = preexec_fn  # run in the child before the driver starts (a lower descriptor limit, say)
        self.socket = str(folder / "run" / "cnipam.sock")
        self.args = args
        self.store = ["--db", str(folder / "ipam.db")] if store is None else store
        self.env = env
        self.start()

    def start(self) -> None:
        command = [EXECUTABLE, "--socket", self.socket, "--spec-dir", str(self.folder / "spec"), *self.store]
        log = self.folder / "stderr.log"
        seen = log.stat().st_size if log.exists() else 0
        self.stderr = open(log, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*command, *self.args], stderr=self.stderr, env=self.env, preexec_fn=self.preexec_fn
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stderr.close()
                raise AssertionError(f"driver exited: {(self.folder / 'stderr.log').read_text()}")
            if b'"listening"' in log.read_bytes()[seen:]:
                return
            time.sleep(0.02)
        self.process.kill()  # a test that cannot use it must not leave it running
        self.process.wait(15)
        self.stderr.close()
        raise AssertionError("driver did not start")

    def raw(self, path: str, body: bytes | None = b"", method: str = "POST") -> tuple[int, dict[str, object], str]:
        connection = UnixConnection(self.socket)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            payload = response.read()
            return response.status, json.loads(payload), response.getheader("Content-Type") or ""
        finally:
            connection.close()

    def call(self, method: str, fields: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
        status, reply, _ = self.raw(
            "/IpamDriver." + method, b"" if fields is None else json.dumps(fields).encode() + b"\n"
        )
        return status, reply

    def ok(self, method: str, fields: dict[str, object] | None = None) -> dict[str, object]:
        status, reply = self.call(method, fields)
        assert status == 200, reply
        return reply

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # never left running, whatever the test was waiting for
            self.process.kill()
            code = self.process.wait(timeout=15)
        self.stderr.close()
        return code
