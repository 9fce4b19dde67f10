"""What starves a daemon, as the limits tests apply it: connections opened and left idle,
a lowered limit on open files, and how much CPU the daemon burns meanwhile.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tests.support.plugin_calls import CALL_TIMEOUT

LOW_LIMIT = 48  # open files; both daemons start with a dozen


class _Daemon(Protocol):
    def stop(self) -> object: ...


D = TypeVar("D", bound=_Daemon)


def daemons_stopped_after(start: Callable[..., D]) -> Iterator[Callable[..., D]]:
    """A fixture's body: starts daemons with `start(*args, **options)`, and stops each one
    however the test ends (their `stop` sends SIGKILL when SIGTERM is not enough)."""
    started: list[D] = []

    def starting(*args: Any, **options: Any) -> D:
        daemon = start(*args, **options)
        started.append(daemon)
        return daemon

    yield starting
    for daemon in started:
        daemon.stop()


def connect(path: Path | str, count: int) -> list[socket.socket]:
    """`count` connections to the UNIX socket at `path`; all closed again if one fails."""
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(client)
            client.settimeout(CALL_TIMEOUT)
            client.connect(str(path))
    except BaseException:
        close_all(clients)
        raise
    return clients


def close_all(clients: list[socket.socket]) -> None:
    for client in clients:
        client.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def busy_share(pid: int, seconds: float = 1.5) -> float:
    """The share of one core the process used over `seconds` of wall time."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def low_file_limit() -> None:
    """For preexec_fn: the daemon may open only LOW_LIMIT files."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, LOW_LIMIT))


def open_files(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return found


def trickle(path: Path | str, data: bytes) -> float:
    """Send `data` to the UNIX socket at `path` a byte every 0.2 s, until the daemon closes
    the connection; the seconds that took. Fails if it stays open for 20 s: a per-read
    timeout is happy for ever with such a client, only a whole-request deadline ends it."""
    [client] = connect(path, 1)
    with client:
        client.settimeout(0.2)
        started = time.monotonic()
        for byte in data:
            try:
                client.send(bytes((byte,)))
                if client.recv(4096) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            if time.monotonic() - started > 20:
                break
    raise AssertionError(f"the daemon at {path} kept a trickling connection open for 20 s")
