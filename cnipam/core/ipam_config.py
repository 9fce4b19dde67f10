"""The dialect-neutral IPAM configuration that every config dialect parses into.

A config is a list of `PoolSpec`s, one per address the owner gets (one per family in the
ecs dialect, one per range set in host-local's), plus what the result echoes (routes,
DNS). The allocator and the stores only ever see this form.
"""

from __future__ import annotations

from .addresses import Network, format_ip, parse_cidr, parse_ip
from .errors import InvalidConfig
from .record import Record
from .reuse import NO_DELAY, ReuseDelay

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

Range = tuple[int, int]  # inclusive (first, last) integer addresses

# Limits on what one config may ask for, so that no input costs more than its size
# allows (docs/security.md, fix 13). A range set of 16,384 /24s is a 480 KB
# config, within the 1 MiB a call may send; a call gets one address per range set.
MAX_RANGES = 16384
MAX_REQUESTED = 1024


class AddressRange(Record):
    """Addresses `first`..`last` of one subnet, with that subnet's gateway (if any)."""

    __slots__ = ("network", "first", "last", "gateway")

    def __init__(self, network: Network, first: int, last: int, gateway: int | None) -> None:
        self.network = network
        self.first = first
        self.last = last
        self.gateway = gateway

    def __str__(self) -> str:
        family = self.network.family
        if (self.first, self.last) == default_bounds(self.network):
            return str(self.network)
        return f"{self.network}[{format_ip(family, self.first)}-{format_ip(family, self.last)}]"


class PoolSpec(Record):
    """One address to hand out, from an ordered tuple of ranges of one family.

    `slot` says which of the owner's addresses this is (an owner holds at most one lease
    per slot); `key` names the pool for the round-robin position, so the position follows
    the pool's ranges, not its place in the config; `requested` is an address the caller
    asked for. `lowest_free` makes the search start from the first range every time
    (Docker's IPAM hands out the first free address) instead of after the pool's
    round-robin position (ecs-ipam, host-local); such pools keep no position. `reuse`
    says how long a released address rests before it is handed out again (core.reuse).
    """

    __slots__ = ("slot", "key", "ranges", "requested", "release_moves_cursor", "lowest_free", "reuse")

    def __init__(
        self,
        slot: str,
        key: str,
        ranges: tuple[AddressRange, ...],
        requested: int | None = None,
        release_moves_cursor: bool = True,
        lowest_free: bool = False,
        reuse: ReuseDelay = NO_DELAY,
    ) -> None:
        self.slot = slot
        self.key = key
        self.ranges = ranges
        self.requested = requested
        self.release_moves_cursor = release_moves_cursor  # ecs-ipam: yes; host-local: no (leases.Cursor)
        self.lowest_free = lowest_free
        self.reuse = reuse

    @property
    def family(self) -> int:
        return self.ranges[0].network.family

    @property
    def pieces(self) -> tuple[Range, ...]:
        """Allocatable addresses in search order: the ranges in config order, without any
        gateway of the pool's ranges (each is reserved only once a lease of its own range
        needs it, so until then nothing but this keeps the pool from handing it out).
        Each range takes the gateways inside it by bisection: n log n, not every pair."""
        gateways = sorted({r.gateway for r in self.ranges if r.gateway is not None})
        if len(gateways) <= 1:
            return tuple(piece for r in self.ranges for piece in cut_out(r.first, r.last, gateways))
        from bisect import bisect_left, bisect_right

        return tuple(
            piece
            for r in self.ranges
            for piece in cut_out(
                r.first, r.last, gateways[bisect_left(gateways, r.first) : bisect_right(gateways, r.last)]
            )
        )

    def range_of(self, address: int) -> AddressRange | None:
        for address_range in self.ranges:
            if address_range.first <= address <= address_range.last and address != address_range.gateway:
                return address_range
        return None

    def allows(self, address: int) -> bool:
        return self.range_of(address) is not None

    def __str__(self) -> str:
        return ", ".join(str(address_range) for address_range in self.ranges)

    def with_requested(self, address: int | None) -> PoolSpec:
        return PoolSpec(
            self.slot, self.key, self.ranges, address, self.release_moves_cursor, self.lowest_free, self.reuse
        )


POOL_KEY_LIMIT = 256  # characters of a pool key that names its ranges; a longer one is a digest
DIGEST_PREFIX = "sha256:"


def pool_key(ranges: tuple[AddressRange, ...]) -> str:
    """The pool's name in the store (its leases' `pool`, its round-robin position's key):
    the ranges themselves, order-independent, while that text is short; beyond
    POOL_KEY_LIMIT characters a digest of it, so that what a row stores does not grow with
    the config (a range set of 8,000 /24s is a 200 KB text, which every gateway row used
    to repeat). Such a pool's ranges are then known only from its config."""
    text = ",".join(sorted(str(address_range) for address_range in ranges))
    if len(text) <= POOL_KEY_LIMIT:
        return text
    from hashlib import sha256  # only for a pool of many ranges

    return DIGEST_PREFIX + sha256(text.encode()).hexdigest()[:32]


def names_ranges(key: str) -> bool:
    """Whether parse_pool_key can read the ranges from this key (not a digest)."""
    return not key.startswith(DIGEST_PREFIX)


def parse_pool_key(key: str) -> tuple[AddressRange, ...]:
    """The ranges a pool key names (inspection: usage per pool). Gateways are not in the
    key; the store's gateway reservations say which addresses were kept for them. A
    digest (names_ranges is False) names none: InvalidConfig."""
    if not names_ranges(key):
        raise InvalidConfig(f"pool {key} is named by a digest of its ranges, which only its config lists")
    ranges = []
    for part in key.split(","):
        subnet, bracket, bounds = part.partition("[")
        _, network = parse_cidr(subnet, "pool")
        first, last = default_bounds(network)
        if bracket:
            low, _, high = bounds.rstrip("]").partition("-")
            first, last = parse_ip(low, "pool")[1], parse_ip(high, "pool")[1]
        ranges.append(AddressRange(network, first, last, None))
    return tuple(ranges)


def default_bounds(network: Network) -> Range:
    """Network + 1 to the last address, less the broadcast address for IPv4."""
    return network.value + 1, network.last - (1 if network.family == 4 else 0)


ECS = "ecs"
HOST_LOCAL = "host-local"


class IPAMConfig(Record):
    """A parsed config: its dialect, the pools, what the result echoes, the ecs owner id
    if any, and the two things only the edge may act on (files to read, where the store is).

    The dialect decides what identifies the caller, because the upstreams differ: ecs-ipam
    owns addresses by `ipam.id` and releases a named address whoever holds it (its
    README: "either id or an IP address must be specified in delete operation"), while
    host-local owns them by the attachment (container id + interface) and a DEL touches
    only that attachment's leases, whatever addresses the runtime repeats on it.
    """

    __slots__ = ("dialect", "pools", "routes", "dns", "owner_id", "resolv_conf", "data_dir")

    def __init__(
        self,
        dialect: str,
        pools: tuple[PoolSpec, ...],
        routes: tuple[dict[str, object], ...],
        dns: dict[str, object],
        owner_id: str | None,
        resolv_conf: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self.dialect = dialect  # ECS or HOST_LOCAL
        self.pools = pools
        self.routes = routes
        self.dns = dns
        self.owner_id = owner_id
        self.resolv_conf = resolv_conf  # a file the edge reads into `dns` (host-local's resolvConf)
        self.data_dir = data_dir  # the folder the store lives in, when the config says (host-local's dataDir)

    def with_dns(self, dns: dict[str, object]) -> IPAMConfig:
        return IPAMConfig(self.dialect, self.pools, self.routes, dns, self.owner_id, self.resolv_conf, self.data_dir)


def cut_out(first: int, last: int, excluded: Sequence[int]) -> tuple[Range, ...]:
    """The ranges of [first, last] that remain once the `excluded` addresses are removed."""
    ranges: list[Range] = []
    start = first
    for address in sorted(set(excluded)):
        if address < start or address > last:
            continue
        if address > start:
            ranges.append((start, address - 1))
        start = address + 1
    if start <= last:
        ranges.append((start, last))
    return tuple(ranges)


# The integer fields of a CNI route (Go's types.Route: int, so int64): they are echoed in
# the result, which a runtime cannot decode once the ADD has been committed.
_ROUTE_INTEGERS = ("mtu", "advmss", "priority", "table", "scope")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def optional_text(raw: dict[str, object], key: str, where: str) -> str | None:
    """A string setting that may be absent but never empty or NUL-bearing: most of them end
    up as file paths, host names or key prefixes, where either would mean something else."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidConfig(f"{where}.{key}: expected a non-empty string")
    return value


def parse_routes(value: object, family: int | None, what: str) -> tuple[dict[str, object], ...]:
    """Validate a route list; every route needs a `dst`, and families must match `family` if given."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig(f"{what}: expected a list of routes, got {type(value).__name__}")
    routes = []
    for index, route in enumerate(value):
        where = f"{what}[{index}]"
        if not isinstance(route, dict):
            raise InvalidConfig(f"{where}: expected an object with dst and optional gw")
        if "dst" not in route:
            raise InvalidConfig(f"{where}: route has no dst")
        _, dst = parse_cidr(route["dst"], f"{where}.dst")
        if family is not None and dst.family != family:
            raise InvalidConfig(f"{where}.dst: {route['dst']} is not an IPv{family} prefix")
        if route.get("gw") is not None:
            gw_family, _ = parse_ip(route["gw"], f"{where}.gw")
            if gw_family != dst.family:
                raise InvalidConfig(f"{where}.gw: {route['gw']} is not in the same family as dst {route['dst']}")
        for key in _ROUTE_INTEGERS:
            number = route.get(key)
            if number is not None and (type(number) is not int or not _INT64_MIN <= number <= _INT64_MAX):
                raise InvalidConfig(f"{where}.{key}: expected an integer, got {str(number)[:40]}")
        routes.append(dict(route))
    return tuple(routes)
