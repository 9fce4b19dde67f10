"""Reading a host-local data folder: one file per leased address, named by the address
as Go prints it, holding `containerID\\r\\nifname` (older files: the container id
alone), plus `last_reserved_ip.N` per range set and the `lock` file host-local flocks.

The folder is read under host-local's own lock, so a host-local still running cannot
write half a lease while it is read.
"""

from __future__ import annotations

import fcntl
import os
import time

from ..core.addresses import parse_ip
from ..core.errors import CnipamError, InvalidConfig
from .plan import Found, Position

LAST_RESERVED = "last_reserved_ip."


class FolderUnreadable(CnipamError):
    """The host-local folder cannot be read or locked."""


def read_host_local(
    folder: str, lock_timeout: float = 10.0
) -> tuple[list[Found], list[Position], list[tuple[str, str]]]:
    """The leases and positions in `folder` (a network's folder), and files refused with why."""
    if not os.path.isdir(folder):
        raise FolderUnreadable(f"{folder} is not a folder")
    with _locked(os.path.join(folder, "lock"), lock_timeout):
        found: list[Found] = []
        positions: list[Position] = []
        refused: list[tuple[str, str]] = []
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name == "lock" or not os.path.isfile(path):
                continue
            text = _read(path)
            if name.startswith(LAST_RESERVED):
                index = name[len(LAST_RESERVED) :]
                try:
                    family, address = parse_ip(text.strip())
                except InvalidConfig:
                    refused.append((name, f"not an address: {text.strip()[:40]!r}"))
                    continue
                positions.append(Position(family, address, int(index) if index.isdigit() else None))
                continue
            try:
                family, address = parse_ip(name.replace("_", ":"))  # host-local writes '_' for ':' on Windows
            except InvalidConfig:
                refused.append((name, "neither an address nor a host-local file"))
                continue
            container, _, ifname = text.strip().partition("\r\n")
            if not container:
                refused.append(
                    (name, "empty lease file (host-local stopped while writing it): nothing owns this address")
                )
                continue
            found.append(Found(family, address, None, container.strip(), ifname.strip() or "eth0", False, name))
        return found, positions, refused


def _read(path: str) -> str:
    try:
        with open(path, "rb") as source:
            return source.read(4096).decode("utf-8", "replace")
    except OSError as exc:
        raise FolderUnreadable(f"cannot read {path}: {exc.strerror}") from None


class _locked:
    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout, self.fd = path, timeout, -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no lock file: nothing else uses the folder
        except OSError as exc:
            raise FolderUnreadable(f"cannot open {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise FolderUnreadable(
                        f"{self.path} stayed locked for {self.timeout:g}s: is host-local still running?"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
