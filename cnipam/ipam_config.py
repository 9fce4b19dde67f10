"""The dialect-neutral IPAM configuration that every config dialect parses into.

A config is a list of `PoolSpec`s, one per address the owner gets (one per family in the
ecs dialect, one per range set in host-local's), plus what the result echoes (routes,
DNS). The allocator and the stores only ever see this form.
"""

from __future__ import annotations

from .addresses import Network, parse_cidr, parse_ip
from .errors import InvalidConfig
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

Range = tuple[int, int]  # inclusive (first, last) integer addresses


class PoolSpec(Record):
    """One address to hand out.

    `slot` says which of the owner's addresses this is (an owner holds at most one lease
    per slot); `key` names the pool for the round-robin position, so the position follows
    the pool, not its place in the config; `ranges` are the allocatable addresses, sorted,
    with network, broadcast and gateway already cut out.
    """

    __slots__ = ("slot", "key", "network", "gateway", "ranges", "requested")

    def __init__(
        self,
        slot: str,
        key: str,
        network: Network,
        gateway: int | None,
        ranges: tuple[Range, ...],
        requested: int | None = None,
    ) -> None:
        self.slot = slot
        self.key = key
        self.network = network
        self.gateway = gateway
        self.ranges = ranges
        self.requested = requested

    @property
    def family(self) -> int:
        return self.network.family

    def allows(self, address: int) -> bool:
        return any(first <= address <= last for first, last in self.ranges)

    def with_requested(self, address: int | None) -> PoolSpec:
        return PoolSpec(self.slot, self.key, self.network, self.gateway, self.ranges, address)


class IPAMConfig(Record):
    """A parsed config: the pools, what the result echoes, and the ecs owner id if any."""

    __slots__ = ("pools", "routes", "dns", "owner_id")

    def __init__(
        self, pools: tuple[PoolSpec, ...], routes: tuple[dict[str, object], ...], dns: dict[str, object], owner_id: str | None
    ) -> None:
        self.pools = pools
        self.routes = routes
        self.dns = dns
        self.owner_id = owner_id


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
        routes.append(dict(route))
    return tuple(routes)
