"""The driver's configuration: gipam's environment and flags, plus cnipam's own.

gipam reads defaults, then `GIPAM_*` variables, then `-flags` (flags win); the same
order holds here, and Go's flag syntax (`-v4 X`, `-v4=X`, `--v4 X`) is accepted. Unlike
gipam, a malformed value is refused with its name instead of silently replaced by the
default, and either family may be left out (IPv4-only and IPv6-only both work).

The plugin API has no authentication of its own: whoever reaches the socket or the TCP
port may release any pool. TCP mode is loopback-only unless `--public`, or unless it
serves TLS that requires a client certificate (`--tls-*`), which is how a dockerd on
another host can use the driver safely; dockerd is then pointed at it by a `NAME.json`
spec with a `TLSConfig` (Docker's plugin discovery), which the driver writes when told
where dockerd finds its own certificate and key (`--spec-*`).
"""

from __future__ import annotations

import argparse
import os

from ..core.addresses import BITS, Network
from ..core.errors import InvalidConfig, InvalidEnvironment
from ..core.record import Record
from ..core.reuse import NO_DELAY, ReuseDelay, parse_reuse
from ..service import LOOPBACK, metrics_address
from ..store.settings import StoreSettings
from .requests import subnet, usable

DEFAULT_NAME = "cnipam"
SOCKET_DIR = "/run/docker/plugins"  # fixed in dockerd: --exec-root does not move it
SPEC_DIR = "/etc/docker/plugins"
DEFAULT_BLOCK = {4: 24, 6: 64}  # gipam's GIPAM_V4AB and GIPAM_V6AB defaults
DEFAULT_READ_TIMEOUT = (
    120.0  # seconds; dockerd's plugin client keeps idle connections and reconnects when one was closed
)
# seconds from a request's first byte to its whole body: dockerd sends a few hundred bytes at once
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64  # dockerd keeps a handful; each connection is a thread


class DriverTLS(Record):
    """TLS for TCP mode: the driver's certificate and key, the CA a client's certificate
    must chain to (one is required), and what dockerd's NAME.json names (the CA it checks
    the driver's certificate with, its own certificate and key; None: no spec is written)."""

    __slots__ = ("cert", "key", "client_ca", "spec_ca", "spec_cert", "spec_key")

    def __init__(
        self, cert: str, key: str, client_ca: str, spec_ca: str, spec_cert: str | None, spec_key: str | None
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.spec_ca = spec_ca
        self.spec_cert = spec_cert
        self.spec_key = spec_key


class DriverSettings(Record):
    __slots__ = (
        "name", "socket", "spec_dir", "address", "public", "store", "gipam_file", "mains", "blocks", "read_timeout",
        "request_timeout", "max_connections", "tls", "reuse", "metrics",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        socket: str,
        spec_dir: str,
        address: str,
        public: bool,
        store: StoreSettings,
        gipam_file: str,
        mains: dict[int, Network | None],
        blocks: dict[int, int],
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        tls: DriverTLS | None = None,
        reuse: ReuseDelay = NO_DELAY,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        self.name = name
        self.socket = socket  # the UNIX socket, unless `address` asks for TCP
        self.spec_dir = spec_dir
        self.address = address  # host:port for TCP, "" for the UNIX socket
        self.public = public  # TCP on a non-loopback address was asked for explicitly
        self.store = store  # as the plugin chooses it (CNIPAM_STORE, IPAM_DB_PATH), unless --db or --store names it
        self.gipam_file = gipam_file
        self.mains = mains  # the main pool per family that dynamic pools are cut from
        self.blocks = blocks  # the prefix length of a dynamic pool per family
        # longest wait for the first byte of a client's next request on a kept-alive connection
        self.read_timeout = read_timeout
        self.request_timeout = request_timeout  # a request, once begun, must arrive whole within this
        self.max_connections = max_connections  # connections served at once; more are answered 503 and closed
        self.tls = tls  # TCP mode only
        # Docker's own IPAM reuses a freed address at once (lowest free first; serial for
        # swarm), and a restarted container usually gets its address back that way: so no
        # delay unless asked for (core.reuse).
        self.reuse = reuse
        self.metrics = metrics  # (host, port) of the /metrics endpoint; None: off

    def main_pool(self, family: int) -> tuple[Network | None, int]:
        return self.mains[family], self.blocks[family]

    @property
    def spec_file(self) -> str:
        """Where dockerd finds the driver in TCP mode: NAME.spec (a URL), or NAME.json (a URL
        and the TLS settings dockerd connects with)."""
        return os.path.join(self.spec_dir, self.name + (".json" if self.tls is not None else ".spec"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnipam-docker",
        description="Docker remote IPAM driver on cnipam's store (gipam-compatible configuration).",
        allow_abbrev=False,
    )
    p.add_argument("--name", help=f"plugin name, as in --ipam-driver NAME (default {DEFAULT_NAME})")
    p.add_argument("--socket", help=f"UNIX socket path (default {SOCKET_DIR}/NAME.sock)")
    p.add_argument("--spec-dir", help=f"where TCP mode writes NAME.spec (default {SPEC_DIR})")
    p.add_argument(
        "--db", help="the SQLite store file (default: CNIPAM_STORE, else IPAM_DB_PATH, else cnipam's default store)"
    )
    p.add_argument(
        "--store",
        metavar="JSON",
        help='the store as an ipam.store object, e.g. \'{"type": "etcd", "endpoints": [...]}\' (as CNIPAM_STORE)',
    )
    p.add_argument(
        "-address", "--address", dest="address", help="host:port: serve TCP instead of the UNIX socket (GIPAM_ADDRESS)"
    )
    p.add_argument(
        "--read-timeout",
        metavar="DURATION",
        help=f"close a silent connection after this long (default {DEFAULT_READ_TIMEOUT:.0f}s)",
    )
    p.add_argument(
        "--request-timeout",
        metavar="DURATION",
        help=f"a request must arrive whole within this of its first byte (default {DEFAULT_REQUEST_TIMEOUT:.0f}s); "
        "else 408",
    )
    p.add_argument(
        "--max-connections",
        metavar="N",
        help=f"connections served at once (default {DEFAULT_MAX_CONNECTIONS}); more are answered 503 and closed",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="allow TCP on a non-loopback address without TLS (NO AUTHENTICATION: anyone who reaches the port may "
        "release any pool)",
    )
    tls = p.add_argument_group(
        "TLS (TCP mode)", "serve HTTPS and accept only clients whose certificate the CA signed; any address then"
    )
    tls.add_argument("--tls-cert", metavar="FILE", help="the driver's certificate (PEM, with its chain)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key")
    tls.add_argument("--tls-ca", metavar="FILE", help="the CA a client's (dockerd's) certificate must chain to")
    tls.add_argument(
        "--spec-ca", metavar="FILE", help="for NAME.json: the CA dockerd checks the driver with (default --tls-ca)"
    )
    tls.add_argument("--spec-cert", metavar="FILE", help="for NAME.json: dockerd's client certificate")
    tls.add_argument(
        "--spec-key", metavar="FILE", help="for NAME.json: its key; without --spec-cert/--spec-key no spec is written"
    )
    p.add_argument(
        "--reuse-delay",
        metavar="DURATION",
        help="keep a released address from a new container this long (CNIPAM_REUSE_DELAY; default 0)",
    )
    p.add_argument(
        "--when-only-cooling",
        choices=("reuse", "wait"),
        help="when only addresses inside the delay are free: hand out the oldest (reuse, default) or answer 503 (wait)"
        " (CNIPAM_WHEN_ONLY_COOLING)",
    )
    p.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off; HOST defaults to 127.0.0.1)",
    )
    p.add_argument("--metrics-public", action="store_true", help="allow --metrics-address on a non-loopback address")
    p.add_argument(
        "-file", "--file", dest="file", help="gipam's lease file (GIPAM_FILE); import it with `cnipamctl migrate gipam`"
    )
    for family in (4, 6):
        p.add_argument(
            f"-v{family}", f"--v{family}", dest=f"v{family}", help=f"main IPv{family} pool (GIPAM_V{family})"
        )
        p.add_argument(
            f"-v{family}ab", f"--v{family}ab", dest=f"v{family}ab", help=f"prefix length of a dynamic IPv{family} pool"
        )
    return p


def load(argv: list[str], env: dict[str, str]) -> DriverSettings:
    """Defaults < GIPAM_* environment < flags. Raises InvalidConfig/InvalidEnvironment."""
    args = parser().parse_args(argv)

    def pick(flag_value: str | None, variable: str) -> tuple[str, str]:
        if flag_value is not None:
            return flag_value, f"-{variable.removeprefix('GIPAM_').lower()}"
        return env.get(variable, ""), variable

    name = args.name or DEFAULT_NAME
    if not name or "/" in name or name.startswith("."):
        raise InvalidConfig(f"--name {name!r} is not a plugin name")
    mains: dict[int, Network | None] = {}
    blocks: dict[int, int] = {}
    for family in (4, 6):
        value, origin = pick(getattr(args, f"v{family}"), f"GIPAM_V{family}")
        main = subnet(value, origin) if value else None
        if main is not None and main.family != family:
            raise InvalidConfig(f"{origin}: {value} is not an IPv{family} subnet")
        mains[family] = main
        raw, origin = pick(getattr(args, f"v{family}ab"), f"GIPAM_V{family}AB")
        blocks[family] = _prefix(raw, origin, family) if raw else DEFAULT_BLOCK[family]
        if main is not None and blocks[family] < main.prefix:
            raise InvalidConfig(f"{origin}: a /{blocks[family]} block does not fit in main pool {main}")
        usable(Network(family, 0, blocks[family]), origin)
    address, _ = pick(args.address, "GIPAM_ADDRESS")
    tls = _tls(args, address)
    if address:
        host, _, port = address.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidConfig(f"address {address!r}: expected host:port")
        if host.strip("[]") not in ("", *LOOPBACK) and not args.public and tls is None:
            raise InvalidConfig(
                f"address {address!r} is not a loopback address; the plugin API has no authentication "
                "(serve TLS with client certificates: --tls-cert, --tls-key, --tls-ca; or add --public)"
            )
    if args.db:
        store = StoreSettings.for_file(env, args.db)
    else:
        store = StoreSettings.for_store(env, args.store) if args.store else StoreSettings.from_env(env)
    gipam_file, _ = pick(args.file, "GIPAM_FILE")
    read_timeout = (
        _duration(args.read_timeout, "--read-timeout") if args.read_timeout is not None else DEFAULT_READ_TIMEOUT
    )
    delay = args.reuse_delay if args.reuse_delay is not None else env.get("CNIPAM_REUSE_DELAY", "")
    when = args.when_only_cooling if args.when_only_cooling is not None else env.get("CNIPAM_WHEN_ONLY_COOLING", "")
    reuse = parse_reuse(
        delay or None,
        when or None,
        "--reuse-delay" if args.reuse_delay is not None else "CNIPAM_REUSE_DELAY",
        "--when-only-cooling" if args.when_only_cooling is not None else "CNIPAM_WHEN_ONLY_COOLING",
    )
    request_timeout = DEFAULT_REQUEST_TIMEOUT
    if args.request_timeout is not None:
        request_timeout = _duration(args.request_timeout, "--request-timeout")
    max_connections = DEFAULT_MAX_CONNECTIONS
    if args.max_connections is not None:
        if not args.max_connections.isdigit() or int(args.max_connections) < 1:
            raise InvalidConfig(f"--max-connections {args.max_connections!r} is not a whole number above 0")
        max_connections = int(args.max_connections)
    metrics = metrics_address(args.metrics_address, args.metrics_public) if args.metrics_address else None
    return DriverSettings(
        name, args.socket or f"{SOCKET_DIR}/{name}.sock", args.spec_dir or SPEC_DIR, address, args.public,
        store, gipam_file, mains, blocks, read_timeout, request_timeout, max_connections, tls, reuse, metrics,
    )  # fmt: skip


def _tls(args: argparse.Namespace, address: str) -> DriverTLS | None:
    server = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    spec = {"--spec-ca": args.spec_ca, "--spec-cert": args.spec_cert, "--spec-key": args.spec_key}
    given = [flag for flag, value in {**server, **spec}.items() if value]
    if not given:
        return None
    if not address:
        raise InvalidConfig(f"{given[0]} is for TCP mode: give -address HOST:PORT too")
    missing = [flag for flag, value in server.items() if not value]
    if missing:
        raise InvalidConfig(f"TLS needs --tls-cert, --tls-key and --tls-ca together ({', '.join(missing)} missing)")
    if bool(args.spec_cert) != bool(args.spec_key):
        raise InvalidConfig("--spec-cert and --spec-key go together: dockerd's certificate and its key")

    def absolute(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    return DriverTLS(
        os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key), os.path.abspath(args.tls_ca),
        os.path.abspath(args.spec_ca or args.tls_ca), absolute(args.spec_cert), absolute(args.spec_key),
    )  # fmt: skip


def _duration(raw: str, origin: str) -> float:
    from ..core.durations import parse_go_duration

    try:
        seconds = parse_go_duration(raw)
    except ValueError as exc:
        raise InvalidConfig(f"{origin} {raw!r} is not a duration such as 2m or 500ms ({exc})") from None
    if not 0 < seconds <= 86400:
        raise InvalidConfig(f"{origin} {raw!r} must be more than 0 and at most 24h")
    return seconds


def _prefix(raw: str, origin: str, family: int) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= BITS[family]:
        raise InvalidEnvironment(f"{origin}={raw!r} is not a prefix length between 0 and {BITS[family]}")
    return int(raw)
