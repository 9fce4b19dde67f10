"""A small tmpfs of its own, for the tests and the campaign of a store on a bad disk: it
can be filled to the last byte, emptied again and remounted read-only, and it is always
unmounted. Mounting needs root (CAP_SYS_ADMIN); `unavailable` says why it cannot be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

FILLER = ".filler"


def unavailable() -> str | None:
    """Why no small disk can be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


class SmallDisk:
    """`with SmallDisk(2048) as disk:` a tmpfs of 2048 KiB at `disk.folder`."""

    def __init__(self, kib: int = 2048) -> None:
        self.kib = kib
        self.folder = ""

    def __enter__(self) -> SmallDisk:
        self.folder = tempfile.mkdtemp(prefix="cnipam-disk-")
        try:
            _run("mount", "-t", "tmpfs", "-o", f"size={self.kib}k,mode=0755", "tmpfs", self.folder)
        except BaseException:
            os.rmdir(self.folder)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            _run("umount", self.folder)
        except subprocess.CalledProcessError:  # a process still holds a file: detach it now, freed when it exits
            _run("umount", "-l", self.folder)
        os.rmdir(self.folder)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def fill(self) -> None:
        """Take every byte left, down to the last one."""
        fd = os.open(self.path(FILLER), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            for size in (1 << 16, 4096, 512, 1):
                chunk = b"\0" * size
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        try:
            os.unlink(self.path(FILLER))
        except FileNotFoundError:
            pass

    def free_bytes(self) -> int:
        info = os.statvfs(self.folder)
        return info.f_bfree * info.f_frsize

    def remount(self, read_only: bool) -> None:
        """Fails ("busy") while a process holds a file of it open for writing, as on any mount."""
        _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", self.folder)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)
