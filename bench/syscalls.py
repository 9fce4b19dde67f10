"""What one call asks of the disk, counted with strace: syncs, and files made or deleted.

A sync (`fsync`, `fdatasync`) waits for the disk: about 0.1 ms on this machine's, 1-10 ms
on cloud block storage. So how many a call issues is a figure of its own, beside its
time, and it must not grow back unnoticed: bench/run.py reports syncs per ADD for cnipam
and host-local side by side, and tests/store/test_syncs.py holds cnipam to them.

Files made or deleted are read from the folder the call writes in (its names and inodes
before and after), not guessed from `openat` flags: SQLite opens its `-wal` and `-shm`
with O_CREAT whether or not they exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SYNCS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "sync")


@dataclass(frozen=True)
class DiskWork:
    """One process: its syncs, and the files of `folder` it made and deleted."""

    syncs: int
    made: tuple[str, ...]
    deleted: tuple[str, ...]
    status: int


def strace() -> str | None:
    return shutil.which("strace")


def _files(folder: Path) -> dict[str, int]:
    """Path -> inode of every entry under `folder` (a file replaced under its name counts
    as deleted and made)."""
    return {str(path.relative_to(folder)): path.lstat().st_ino for path in folder.rglob("*")}


def traced(argv: Sequence[str], stdin: bytes, env: Mapping[str, str], folder: Path, tracer: str = "strace") -> DiskWork:
    """Run `argv` (and any process it starts) under strace; what it did to the disk."""
    before = _files(folder)
    fd, log = tempfile.mkstemp(prefix="cnipam-strace-")
    os.close(fd)
    try:
        done = subprocess.run(
            [tracer, "-f", "-qq", "-e", f"trace={','.join(SYNCS)}", "-o", log, *argv],
            input=stdin,
            env=dict(env),
            capture_output=True,
            check=False,
        )
        lines = Path(log).read_text().splitlines()
    finally:
        os.unlink(log)
    syncs = sum(1 for line in lines if _syscall(line) in SYNCS)
    after = _files(folder)
    made = tuple(sorted(name for name, inode in after.items() if before.get(name) != inode))
    deleted = tuple(sorted(name for name, inode in before.items() if after.get(name) != inode))
    return DiskWork(syncs, made, deleted, done.returncode)


def _syscall(line: str) -> str:
    """The call's name in an strace line: `1234  fdatasync(5) = 0` (with -f, a pid first)."""
    text = line.split(None, 1)[1] if line[:1].isdigit() else line
    return text.partition("(")[0].strip()
