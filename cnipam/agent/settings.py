"""`cnipamd`'s command line, turned into one value before anything starts.

Durations take Go's syntax (`90s`, `10m`), like IPAM_DB_CONNECTION_TIMEOUT, or plain
seconds.
"""

from __future__ import annotations

import argparse
import os

from ..agent_client import DEFAULT_SOCKET, SOCKET_VARIABLE
from ..core.durations import parse_go_duration
from ..core.errors import InvalidConfig
from ..core.record import Record
from ..service import metrics_address

DEFAULT_CACHE_DIR = "/var/lib/cni"  # libcni's default cache folder
DEFAULT_GRACE = 600.0


class AgentSettings(Record):
    __slots__ = ("socket", "reconcile_interval", "reconcile_grace", "cache_dir", "stores", "metrics")

    def __init__(
        self,
        socket: str,
        reconcile_interval: float | None,
        reconcile_grace: float,
        cache_dir: str,
        stores: tuple[str, ...],
        metrics: tuple[str, int] | None = None,
    ) -> None:
        self.socket = socket
        self.reconcile_interval = reconcile_interval  # None: the reconciler is off
        self.reconcile_grace = reconcile_grace
        self.cache_dir = cache_dir
        self.stores = stores  # store files to hold (and reconcile) from the start
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
        help="leave leases younger than this alone (default: 10m): a runtime writes its cache entry after the ADD",
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
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off; HOST defaults to 127.0.0.1)",
    )
    parser.add_argument(
        "--metrics-public", action="store_true", help="allow --metrics-address on a non-loopback address"
    )
    args = parser.parse_args(argv)
    stores = tuple(os.path.abspath(path) for path in args.db)
    try:
        metrics = metrics_address(args.metrics_address, args.metrics_public) if args.metrics_address else None
    except InvalidConfig as exc:
        parser.error(exc.message)
    return AgentSettings(
        os.path.abspath(args.socket), args.reconcile_interval, args.reconcile_grace, args.cni_cache_dir, stores, metrics
    )
