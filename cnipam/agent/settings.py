"""`cnipamd`'s command line, turned into one value before anything starts.

Durations take Go's syntax (`90s`, `10m`), like IPAM_DB_CONNECTION_TIMEOUT, or plain
seconds.
"""

from __future__ import annotations

import argparse
import grp
import os

from ..agent_client import DEFAULT_SOCKET, SOCKET_VARIABLE
from ..boot_id import VARIABLE
from ..core.durations import parse_go_duration
from ..core.errors import InvalidConfig
from ..core.record import Record
from ..service import metrics_address

DEFAULT_CACHE_DIR = "/var/lib/cni"  # libcni's default cache folder
DEFAULT_GRACE = 600.0
DEFAULT_MAX_CALLS = 256  # a node starting many pods at once; each call is a thread and a descriptor
DEFAULT_MAX_STORES = 64  # each open SQLite store holds 4 descriptors (file, -wal, -shm, lock)
DEFAULT_REQUEST_TIMEOUT = 10.0  # a forwarding plugin sends its request at once
DEFAULT_STORE_IDLE = 600.0


class AgentSettings(Record):
    __slots__ = (
        "socket", "reconcile_interval", "reconcile_grace", "cache_dir", "stores", "allow_group",
        "max_calls", "max_stores", "request_timeout", "store_idle", "boot_env", "metrics",
    )  # fmt: skip

    def __init__(
        self,
        socket: str,
        reconcile_interval: float | None,
        reconcile_grace: float,
        cache_dir: str,
        stores: tuple[str, ...],
        allow_group: int | None = None,
        max_calls: int = DEFAULT_MAX_CALLS,
        max_stores: int = DEFAULT_MAX_STORES,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        store_idle: float = DEFAULT_STORE_IDLE,
        boot_env: dict[str, str] | None = None,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        self.socket = socket
        self.reconcile_interval = reconcile_interval  # None: the reconciler is off
        self.reconcile_grace = reconcile_grace
        self.cache_dir = cache_dir
        self.stores = stores  # store files to hold (and reconcile) from the start
        # gid whose members' calls are answered with their own credentials; None: root only
        self.allow_group = allow_group
        # calls answered at once (and again as many for other users' children); more are declined
        self.max_calls = max_calls
        self.max_stores = max_stores  # stores held open at once
        self.request_timeout = request_timeout  # the whole request must arrive within this, however it trickles
        self.store_idle = store_idle  # a store unused this long is closed
        self.boot_env = boot_env or {}  # CNIPAM_BOOT_ID when the agent's environment sets it (cnipam.boot_id)
        self.metrics = metrics  # (host, port) of the /metrics endpoint; None: off


def duration(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_go_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 10m or 600") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return seconds


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return seconds


def count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def group_id(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group named {text!r}") from None


def load(argv: list[str], env: dict[str, str]) -> AgentSettings:
    parser = argparse.ArgumentParser(
        prog="cnipamd",
        description="cnipam's node agent: holds the stores open and answers the CNI calls "
        "that `cnipam` plugins forward to it.",
    )
    default_socket = env.get(SOCKET_VARIABLE.decode()) or DEFAULT_SOCKET.decode()
    parser.add_argument(
        "--socket",
        default=default_socket,
        help=f"UNIX socket to listen on (default: ${SOCKET_VARIABLE.decode()} or %(default)s)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=positive_duration,
        metavar="DURATION",
        help="release leaked leases this often (default: never). A lease leaks when its network's CNI cache is in use "
        "but holds no entry for the lease's container and interface",
    )
    parser.add_argument(
        "--reconcile-grace",
        type=duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="release a leaked owner only once two passes at least this far apart saw it leaked (default: 10m): "
        "a runtime writes its cache entry after the ADD",
    )
    parser.add_argument(
        "--cni-cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR", help="libcni's cache folder (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        action="append",
        default=[],
        metavar="FILE",
        help="a store file to open at start (and reconcile), repeatable; "
        "stores that calls name are opened on first use anyway",
    )
    parser.add_argument(
        "--allow-group",
        type=group_id,
        metavar="GROUP",
        help="also answer members of GROUP (name or gid); the socket becomes root:GROUP 0660. Their calls run in "
        "a child process with their own uid and groups, so they can do nothing through the agent that their own "
        "plugin could not. Default: only root's calls are answered; anyone else's plugin is told to run the call "
        "itself",
    )
    parser.add_argument(
        "--max-calls",
        type=count,
        default=DEFAULT_MAX_CALLS,
        metavar="N",
        help="calls answered at once (default %(default)s); beyond it a plugin is told to run its call itself",
    )
    parser.add_argument(
        "--max-stores",
        type=count,
        default=DEFAULT_MAX_STORES,
        metavar="N",
        help="stores held open at once (default %(default)s); the least recently used idle one is closed for a new one",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_duration,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="DURATION",
        help="a connection must deliver its whole request within this (default: 10s), however slowly it trickles",
    )
    parser.add_argument(
        "--store-idle",
        type=positive_duration,
        default=DEFAULT_STORE_IDLE,
        metavar="DURATION",
        help="close a store no call has used for this long (default: 10m); stores named with --db stay open",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off; HOST defaults to 127.0.0.1)",
    )
    parser.add_argument(
        "--metrics-public", action="store_true", help="allow --metrics-address on a non-loopback address"
    )
    args = parser.parse_args(argv)
    stores = tuple(os.path.abspath(path) for path in args.db)
    boot_env = {VARIABLE: env[VARIABLE]} if env.get(VARIABLE) else {}
    try:
        metrics = metrics_address(args.metrics_address, args.metrics_public) if args.metrics_address else None
    except InvalidConfig as exc:
        parser.error(exc.message)
    return AgentSettings(
        os.path.abspath(args.socket), args.reconcile_interval, args.reconcile_grace, args.cni_cache_dir, stores,
        args.allow_group, args.max_calls, args.max_stores, args.request_timeout, args.store_idle, boot_env, metrics,
    )  # fmt: skip
