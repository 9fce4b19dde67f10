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
    """One process: its syncs, and the files of `folder` it made and deleted.
    `synced_before_answer`: no sync came after the process's first write to its standard
    output (a durable change is on the disk before the caller hears of it)."""

    syncs: int
    made: tuple[str, ...]
    deleted: tuple[str, ...]
    status: int
    synced_before_answer: bool


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
            [tracer, "-f", "-qq", "-e", f"trace={','.join((*SYNCS, 'write'))}", "-o", log, *argv],
            input=stdin,
            env=dict(env),
            capture_output=True,
            check=False,
        )
        lines = Path(log).read_text().splitlines()
    finally:
        os.unlink(log)
    calls = [_syscall(line) for line in lines]
    syncs = sum(1 for call in calls if call in SYNCS)
    answered = next((n for n, call in enumerate(calls) if call == "write(1"), len(calls))
    synced_before_answer = not any(call in SYNCS for call in calls[answered:])
    after = _files(folder)
    made = tuple(sorted(name for name, inode in after.items() if before.get(name) != inode))
    deleted = tuple(sorted(name for name, inode in before.items() if after.get(name) != inode))
    return DiskWork(syncs, made, deleted, done.returncode, synced_before_answer)


def _syscall(line: str) -> str:
    """The call's name in an strace line: `1234  fdatasync(5) = 0` (with -f, a pid first);
    a write to the standard output is `write(1`."""
    text = line.split(None, 1)[1] if line[:1].isdigit() else line
    name, _, arguments = text.partition("(")
    name = name.strip()
    return "write(1" if name == "write" and arguments.startswith("1,") else name
