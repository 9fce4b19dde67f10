"""What the tests that run real containers (a private dockerd, a private podman) share: a
tiny image made here from Debian's static busybox, since no registry is reachable, and
reading a container's addresses back from `ip -o addr`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import struct
import subprocess
import tarfile
from pathlib import Path

from .host_network import HOST_PATH

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ip", "cat", "sleep", "echo", "ls", "true", "ping")


def _is_static_elf(path: str) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only; Debian amd64/arm64
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def busybox_missing() -> str | None:
    """Why the image cannot be made here, or None."""
    if not os.path.isfile(BUSYBOX) or not _is_static_elf(BUSYBOX):
        return f"{BUSYBOX} is missing or not static (Debian package busybox-static), needed for the test image"
    return None


def write_rootfs(path: Path) -> None:
    """A rootfs tarball of busybox-static and a few applet links, for `docker|podman import`."""
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)


def global_addresses(ip_output: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The scope-global addresses in `ip -o addr` output, in its order."""
    found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for match in re.finditer(r"\binet6? (\S+) .*?scope (\w+)", ip_output):
        if match.group(2) == "global":
            found.append(ipaddress.ip_interface(match.group(1)))
    return found


def unmount_under(root: Path) -> None:
    """Lazily unmount anything a container engine left mounted below `root` (deepest first) before rmtree."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, env={"PATH": HOST_PATH}, check=False)
