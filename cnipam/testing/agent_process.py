"""A real `cnipamd`, and the ways a call reaches one SQLite store beside it: for the tests
(test_agent.py, test_agent_mix.py) and the campaigns' agent-mixed modes (campaigns/), so
it imports nothing but the standard library.

The agent is started, SIGKILLed and started again on one socket, as an operator's
service manager would; its JSON-lines log is read back. A call goes through an agent or
directly, naming the store under any of its spellings (absolute, relative to the
caller's folder, with a `dir/../dir/` detour, through a host-local `dataDir` under each
of those) and with its own timeout. All of them are one file; issue 19 was two
spellings of it becoming two connections in one process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


class AgentProcess:
    """One `cnipamd` on `socket`; each start logs to a new `folder/cnipamd-*.log`."""

    def __init__(
        self,
        executable: str,
        socket: Path,
        folder: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.executable = executable
        self.env = env or {}  # added to its minimal environment (CNIPAM_BOOT_ID, say)
        self.preexec_fn = preexec_fn  # run in the child before cnipamd starts (a lower descriptor limit, say)
        self.socket = socket
        self.folder = folder
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "cnipamd.log"
        self.starts = 0
        self.kills = 0

    def start(self, wait: bool = True) -> None:
        """Start it (its working folder is not the callers': relative paths must not
        resolve there); with `wait`, return once it listens."""
        self.starts += 1
        self.log_path = self.folder / f"cnipamd-{self.socket.stem}-{time.monotonic_ns()}.log"
        workdir = self.folder / "agent-cwd"
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.executable, "--socket", str(self.socket), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **self.env},
                preexec_fn=self.preexec_fn,
            )
        if wait:
            self.wait_listening()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.events("listening"):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
                raise RuntimeError(f"cnipamd did not start (exit {self.proc.returncode}): {self.log_path.read_text()}")
            time.sleep(0.01)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process of the current start."""
        assert self.proc is not None, "cnipamd was never started"
        return self.proc

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would: the socket file stays behind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM, and its exit status; SIGKILL when it has not stopped within STOP_TIMEOUT
        (the status is then -9), so no caller ever leaves it running."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The log lines of the current start (a line still being written is left out)."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return [line for line in lines if kind is None or line.get("event") == kind]


def deleted_store_files(pid: int) -> list[str]:
    """Descriptors of `pid` on store files (the database, its -wal, -shm, lock) that no
    longer exist under their name: a process writing into a WAL that another process
    deleted because it believed itself the last user (issue 19)."""
    found = []
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # exited meanwhile
        return []
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)") and ".db" in target:
            found.append(target)
    return found


class Route(NamedTuple):
    """How one call reaches the store: `env` entries to set (None: remove), and the
    host-local `dataDir` to put in its config, if the spelling is one."""

    through: str  # "direct", or the socket's file name
    env: dict[str, str | None]
    data_dir: str | None
    spelling: str

    @property
    def forwarded(self) -> bool:
        return self.through != "direct"

    def apply(self, env: dict[str, str]) -> dict[str, str]:
        merged = dict(env)
        for key, value in self.env.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged


SPELLINGS = ("absolute", "relative", "detour", "dataDir absolute", "dataDir relative", "dataDir detour")
PATH_SPELLINGS = SPELLINGS[:3]  # IPAM_DB_PATH or --db; the others need a host-local config


def spell(db: Path, cwd: Path, spelling: str) -> tuple[str, str | None]:
    """(IPAM_DB_PATH, dataDir) naming `db` for a caller in `cwd`. `db` must lie in a
    folder below `cwd` (the detour goes out of that folder and back), and a dataDir
    spelling needs it named cnipam.db."""
    folder = os.path.relpath(db.parent, cwd)
    detour = f"./{folder}/../{folder}"
    if not spelling.startswith("dataDir"):
        return {"absolute": str(db), "relative": os.path.relpath(db, cwd), "detour": f"{detour}/{db.name}"}[
            spelling
        ], None
    assert db.name == "cnipam.db", db
    data_dir = {"dataDir absolute": str(db.parent), "dataDir relative": folder, "dataDir detour": detour + "/"}[
        spelling
    ]
    return str(never_used(cwd)), data_dir  # dataDir wins over IPAM_DB_PATH


def never_used(cwd: Path) -> Path:
    """The IPAM_DB_PATH of the dataDir spellings: it must never come into existence."""
    return cwd / "never-used.db"


def random_route(
    rng: random.Random,
    db: Path,
    cwd: Path,
    sockets: Sequence[Path],
    timeouts: Sequence[str | None],
    direct_share: float = 0.4,
    spellings: Sequence[str] = SPELLINGS,
) -> Route:
    """A call's route: through one of `sockets` or directly (CNIPAM_AGENT=off), under a
    random one of `spellings` of `db` and a random timeout (None: the variable is unset)."""
    spelling = rng.choice(list(spellings))
    path, folder = spell(db, cwd, spelling)
    env: dict[str, str | None] = {"IPAM_DB_PATH": path, "IPAM_DB_CONNECTION_TIMEOUT": rng.choice(list(timeouts))}
    if not sockets or rng.random() < direct_share:
        env.update(CNIPAM_AGENT="off", CNIPAM_AGENT_SOCKET=None)
        return Route("direct", env, folder, spelling)
    socket = rng.choice(list(sockets))
    env.update(CNIPAM_AGENT=None, CNIPAM_AGENT_SOCKET=str(socket))
    return Route(socket.name, env, folder, spelling)
