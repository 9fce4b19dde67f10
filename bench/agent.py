"""cnipamd for the benchmark: the plugin pointed at a running agent, and the agent's life.

The agent is started from the same private venv as the plugin, on a socket in the
bench's temp folder, and stopped with SIGTERM (its graceful path) when the figure is done.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from plugins import Cnipam

START_TIMEOUT = 20.0


@dataclass(frozen=True)
class CnipamViaAgent(Cnipam):
    """cnipam whose calls are forwarded to the agent listening on `socket`."""

    socket: Path = Path("/nonexistent")

    def state_env(self, state: Path) -> dict[str, str]:
        return {"IPAM_DB_PATH": str(self.db_path(state)), "CNIPAM_AGENT_SOCKET": str(self.socket)}


class RunningAgent:
    """`cnipamd --socket <tmp>/cnipamd.sock`, until `stop`."""

    def __init__(self, exe: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "cnipamd.sock"
        self.log = workdir / "cnipamd.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(exe), "--socket", str(self.socket)], stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        deadline = time.monotonic() + START_TIMEOUT
        while b'"listening"' not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cnipamd did not start: {self.log.read_text()[-300:]}")
            time.sleep(0.02)

    def calls(self) -> int:
        """How many calls it answered (its log has one `call` line each)."""
        return self.log.read_bytes().count(b'"event": "call"')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
