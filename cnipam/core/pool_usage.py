"""How full each pool is: the one definition `cnipamctl usage`, `cnipamctl metrics` and
the daemons' pool gauges share.

A pool's key names its ranges (ipam_config.parse_pool_key), so usage needs no config;
a config only adds the pools nothing has been allocated from yet. Addresses are counted
by where they lie, not by the row's `pool` column: an address is unique in the whole
store, so a lease of another pool (overlapping configs sharing one store) or a gateway
reserved by another pool still takes that address away from this one. Only the gateways
inside a pool's ranges count as reserved: a gateway outside them never was allocatable.

The engines find the pools and count the rows of an address range each in their own way
(an index range count in SQLite, the rows already read on etcd); the arithmetic is here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .errors import InvalidConfig
from .ipam_config import parse_pool_key
from .leases import GATEWAY
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from .ipam_config import AddressRange, PoolSpec
    from .leases import Lease

    # (family, first, last) -> (leases, gateway reservations) at addresses first..last
    RangeCount = Callable[[int, int, int], tuple[int, int]]
    # (family, address) -> whether the store holds a gateway reservation there
    IsReserved = Callable[[int, int], bool]


class PoolUsage(Record):
    """One pool: its size (usable addresses of its ranges), how many of them are reserved
    for gateways and leased, and the network its rows were written for (of the first one
    the engine finds, should two networks share the pool; "" while it holds none)."""

    __slots__ = ("pool", "family", "network", "size", "reserved", "used")

    def __init__(self, pool: str, family: int, network: str, size: int, reserved: int, used: int) -> None:
        self.pool = pool
        self.family = family
        self.network = network
        self.size = size
        self.reserved = reserved
        self.used = used

    @property
    def free(self) -> int:
        return max(0, self.size - self.reserved - self.used)

    @property
    def percent(self) -> float:
        """Share of the pool not free (leased or reserved), one decimal."""
        return round(100.0 * (self.size - self.free) / self.size, 1) if self.size else 100.0

    def as_json(self) -> dict[str, object]:
        return {
            "pool": self.pool, "family": self.family, "network": self.network, "size": self.size,
            "reserved": self.reserved, "used": self.used, "free": self.free, "percent": self.percent,
        }  # fmt: skip


def pool_usage(
    found: dict[str, str], count: RangeCount, is_reserved: IsReserved, configured: Iterable[PoolSpec] = ()
) -> tuple[list[PoolUsage], list[str]]:
    """Usage of the pools the store holds rows of (`found`: pool key -> network) and of the
    `configured` ones, IPv4 first, then by key; and the pool keys that could not be read.

    A configured gateway counts as reserved before the store reserves it (at the pool's
    first ADD), once, whichever pools share it."""
    pools: dict[str, tuple[tuple[AddressRange, ...], str]] = {
        spec.key: (spec.ranges, found.get(spec.key, "")) for spec in configured
    }
    unreadable = []
    for key in sorted(set(found) - set(pools)):
        try:
            pools[key] = (parse_pool_key(key), found[key])
        except InvalidConfig:
            unreadable.append(key)
    pending: dict[int, list[int]] = {}  # configured gateways the store does not reserve yet
    for ranges, _ in pools.values():
        for address_range in ranges:
            gateway, family = address_range.gateway, address_range.network.family
            if gateway is not None and not is_reserved(family, gateway):
                _insert_unique(pending.setdefault(family, []), gateway)
    usages = []
    for key, (ranges, network) in pools.items():
        family = ranges[0].network.family
        size = reserved = used = 0
        for address_range in ranges:
            leased, gateways = count(family, address_range.first, address_range.last)
            size += address_range.last - address_range.first + 1
            used += leased
            reserved += gateways + _count(pending.get(family, []), address_range.first, address_range.last)
        usages.append(PoolUsage(key, family, network, size, reserved, used))
    return sorted(usages, key=lambda usage: (usage.family, usage.pool)), unreadable


def usage_of_rows(
    rows: Sequence[Lease], configured: Iterable[PoolSpec] = (), empty: dict[str, str] | None = None
) -> tuple[list[PoolUsage], list[str]]:
    """`pool_usage` over rows already read (an engine that has no cheaper way to count);
    `empty`: pools the store knows without rows (Docker pools: key -> network)."""
    found: dict[str, str] = dict(empty or {})
    leased: dict[int, list[int]] = {}
    reserved: dict[int, list[int]] = {}
    for row in sorted(rows, key=lambda row: (row.family, row.address)):
        if not found.get(row.pool):
            found[row.pool] = row.network
        (reserved if row.kind == GATEWAY else leased).setdefault(row.family, []).append(row.address)

    def count(family: int, first: int, last: int) -> tuple[int, int]:
        return _count(leased.get(family, []), first, last), _count(reserved.get(family, []), first, last)

    def is_reserved(family: int, address: int) -> bool:
        return _count(reserved.get(family, []), address, address) > 0

    return pool_usage(found, count, is_reserved, configured)


def _insert_unique(addresses: list[int], address: int) -> None:
    index = bisect_left(addresses, address)
    if index == len(addresses) or addresses[index] != address:
        addresses.insert(index, address)


def _count(addresses: list[int], first: int, last: int) -> int:
    return bisect_right(addresses, last) - bisect_left(addresses, first)
