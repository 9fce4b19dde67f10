"""Who is at the other end of a connection to `cnipamd`: the kernel says, not the request.

A forwarded request carries an environment, a config and a working folder, all written
by the caller; none of it says who the caller is. The kernel does: SO_PEERCRED gives the
effective uid and gid the plugin had when it connected, and SO_PEERGROUPS its
supplementary groups, translated into the agent's user namespace. A caller that cannot
be identified is treated as nobody.
"""

from __future__ import annotations

import platform
import socket
import struct

from ..core.record import Record

# SO_PEERGROUPS (Linux 4.13) is missing from Python's socket module; 59 is its number in
# asm-generic/socket.h, which these architectures use. Elsewhere a caller's supplementary
# groups are not known, so only its primary group counts (it can then do less, never more).
_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", None)
if _PEERGROUPS is None and platform.machine() in (
    "x86_64",
    "aarch64",
    "i686",
    "i386",
    "riscv64",
    "ppc64le",
    "s390x",
    "armv7l",
):
    _PEERGROUPS = 59
_UCRED = struct.Struct("3i")  # pid, uid, gid
_MAX_GROUPS = 65536  # NGROUPS_MAX


class Peer(Record):
    """The credentials a caller connected with."""

    __slots__ = ("pid", "uid", "gid", "groups")

    def __init__(self, pid: int, uid: int, gid: int, groups: tuple[int, ...]) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups  # supplementary groups; the primary gid need not be among them

    def in_group(self, gid: int) -> bool:
        return self.gid == gid or gid in self.groups

    def describe(self) -> str:
        return f"uid {self.uid} gid {self.gid} (pid {self.pid})"


def peer_of(conn: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid, _groups(conn))


def _groups(conn: socket.socket) -> tuple[int, ...]:
    if _PEERGROUPS is None:
        return ()
    size = 4 * 64
    while size <= 4 * _MAX_GROUPS:
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, _PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == 34:  # ERANGE: more groups than fit; the kernel wants a larger buffer
                size *= 4
                continue
            return ()
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return ()
