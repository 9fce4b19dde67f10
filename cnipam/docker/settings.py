"""The driver's configuration: gipam's environment and flags, plus cnipam's own.

gipam reads defaults, then `GIPAM_*` variables, then `-flags` (flags win); the same
order holds here, and Go's flag syntax (`-v4 X`, `-v4=X`, `--v4 X`) is accepted. Unlike
gipam, a malformed value is refused with its name instead of silently replaced by the
default, and either family may be left out (IPv4-only and IPv6-only both work).
"""

from __future__ import annotations

import argparse
import os

from ..core.addresses import BITS, Network
from ..core.errors import InvalidConfig, InvalidEnvironment
from ..core.record import Record
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


class DriverSettings(Record):
    __slots__ = (
        "name",
        "socket",
        "spec_dir",
        "address",
        "public",
        "store",
        "gipam_file",
        "mains",
        "blocks",
        "read_timeout",
        "metrics",
    )

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
        self.read_timeout = (
            read_timeout  # longest wait for a client's next bytes: an idle or stalled connection holds a thread
        )
        self.metrics = metrics  # (host, port) of the /metrics endpoint; None: off

    def main_pool(self, family: int) -> tuple[Network | None, int]:
        return self.mains[family], self.blocks[family]

    @property
    def spec_file(self) -> str:
        return os.path.join(self.spec_dir, self.name + ".spec")


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
    p.add_argument("--public", action="store_true", help="allow TCP on a non-loopback address (no authentication!)")
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
    if address:
        host, _, port = address.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidConfig(f"address {address!r}: expected host:port")
        if host.strip("[]") not in ("", *LOOPBACK) and not args.public:
            raise InvalidConfig(
                f"address {address!r} is not a loopback address; the plugin API has no authentication (add --public)"
            )
    if args.db:
        store = StoreSettings.for_file(env, args.db)
    else:
        store = StoreSettings.from_env({**env, "CNIPAM_STORE": args.store} if args.store else env)
    gipam_file, _ = pick(args.file, "GIPAM_FILE")
    read_timeout = (
        _duration(args.read_timeout, "--read-timeout") if args.read_timeout is not None else DEFAULT_READ_TIMEOUT
    )
    metrics = metrics_address(args.metrics_address, args.metrics_public) if args.metrics_address else None
    return DriverSettings(
        name, args.socket or f"{SOCKET_DIR}/{name}.sock", args.spec_dir or SPEC_DIR, address, args.public,
        store, gipam_file, mains, blocks, read_timeout, metrics,
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
