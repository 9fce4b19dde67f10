"""Calls from callers other than root, answered with the caller's own credentials.

The agent runs as root and keeps stores open. A call forwarded by another user (a member
of the group the operator opened the agent to) must not be able to do through the agent
what that user's own plugin could not: read a root-only file named as `passwordFile`,
create a store or a folder in /etc, release leases in a store it may not write.

Checking permissions by hand (the caller's uid and groups against each component of each
path the request names) was rejected: the caller can change a path between the check and
the open, the check would have to follow ACLs and every file any part of the call touches
(SQLite's own `-wal` and `-shm`, `ssl` reading certificate files by name), and one missed
file is a hole. Instead such a call never runs in the agent: a small root process, forked
when the agent starts, before it opens a store or starts a thread, forks one child per
call; the child takes the caller's groups, gid and uid (setgroups, setresgid, setresuid)
*before* it reads a byte of the request, then answers it exactly as the plugin run by that
user would, with a store opened for the call. The kernel then checks every file as it does
for that user's own plugin. The agent itself could not be the one to fork: a child of a
process that holds SQLite connections and runs threads inherits SQLite's per-file lock
bookkeeping and whatever locks other threads held at that instant.

Cost: a fork of that small process and a store opened per call, about what the plugin
pays when it runs on its own, less the interpreter's start (bench/agent.py measures it).
Root's calls do not pass here and keep the agent's open stores. The forking process
imports what a call may import before it forks: each child then starts ready, and a
member whose own plugin could read the installation but whose child could not (a
locked-down prefix) is not turned away by an ImportError.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import socket

from ..service import log
from .connection import decline, serve_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .peer import Peer

REAP_INTERVAL = 1.0
# What plugin.run imports only once a call needs it (the plugin's start-up path is lazy).
PRELOAD = (
    "cnipam.core.ipam_dialect", "cnipam.core.ecs_config", "cnipam.core.host_local_config",
    "cnipam.core.resolv_conf", "cnipam.core.durations", "cnipam.core.cni_args", "cnipam.config_files",
    "cnipam.store.settings", "cnipam.store.opening", "cnipam.store.sqlite", "cnipam.store.write_lock",
    "cnipam.store.etcd", "cnipam.store.etcdv3", "signal", "ssl",
)  # fmt: skip


class Forker:
    """The agent's handle on the forking process: hand it a connection and the caller's credentials."""

    def __init__(self, limit: int, request_timeout: float) -> None:
        self.limit = limit
        self.request_timeout = request_timeout
        self.channel: socket.socket | None = None
        self.pid = 0

    def start(self) -> None:
        """Fork the forking process. Call before the agent opens any store or starts a thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            status = 0
            try:
                _fork_per_call(theirs, self.limit, self.request_timeout)
            except BaseException as exc:  # a child process must end here, whatever happened
                log("internal-error", error=f"forker: {type(exc).__name__}: {exc}")
                status = 3
            os._exit(status)
        theirs.close()
        self.channel, self.pid = ours, pid

    def hand_over(self, conn: socket.socket, peer: Peer) -> bool:
        """Pass the connection on; False when the forking process is gone."""
        if self.channel is None:
            return False
        message = f"{peer.uid} {peer.gid} {','.join(map(str, peer.groups))}".encode()
        try:
            socket.send_fds(self.channel, [message], [conn.fileno()])
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """No more calls; wait until the forking process has seen its children finish."""
        if self.channel is None:
            return
        self.channel.close()
        self.channel = None
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _fork_per_call(channel: socket.socket, limit: int, request_timeout: float) -> None:
    # The agent drains its calls on SIGTERM; these finish theirs and end when the agent
    # closes the channel (systemd signals the whole unit, this process included).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # ssl missing from this interpreter, say: a call needing it fails as the plugin would
            pass
    children: set[int] = set()
    while True:
        _reap(children, wait=False)
        if not select.select([channel], [], [], REAP_INTERVAL)[0]:
            continue
        message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 1)
        if not message:  # the agent closed the channel: it is stopping
            break
        if not fds:
            continue
        conn = socket.socket(fileno=fds[0])
        if len(children) >= limit:
            decline(conn, f"cnipamd is answering its limit of {limit} calls of other users")
            conn.close()
            continue
        uid, gid, listed = message.decode().split(" ")
        groups = [int(group) for group in listed.split(",") if group]
        pid = os.fork()
        if pid == 0:
            channel.close()
            _answer_as(conn, int(uid), int(gid), groups, request_timeout)
        children.add(pid)
        conn.close()
    while children:
        _reap(children, wait=True)


def _answer_as(conn: socket.socket, uid: int, gid: int, groups: list[int], request_timeout: float) -> None:
    """The child: become the caller, then answer as its own plugin would. Never returns."""
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:  # never go on as root
        log("internal-error", error=f"cannot take the credentials of uid {uid}: {exc}")
        os._exit(1)
    try:
        serve_call(conn, request_timeout, None, uid=uid)
    finally:
        os._exit(0)


def _reap(children: set[int], wait: bool) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        if wait:
            return
