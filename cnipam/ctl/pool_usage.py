"""How full each pool is, computed from the store's rows and the pools' ranges.

A pool's key names its ranges (ipam_config.parse_pool_key), so usage needs no config;
a config only adds the pools nothing has been allocated from yet, and the ranges of a
pool of many ranges, which the store names by a digest. Rows are counted by
address, not by their `pool` column: an address is unique in the whole store, so a
lease of another pool (overlapping configs sharing one store) or a gateway reserved
by another pool still takes that address away from this one. Only the gateways inside
a pool's ranges count as reserved: a gateway outside them never was allocatable.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..core.errors import InvalidConfig
from ..core.ipam_config import AddressRange, PoolSpec, parse_pool_key
from ..core.leases import GATEWAY, Lease


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    family: int
    size: int
    reserved: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.size - self.reserved - self.used)

    @property
    def percent(self) -> float:
        """Share of the pool not free (leased or reserved), one decimal."""
        return round(100.0 * (self.size - self.free) / self.size, 1) if self.size else 100.0

    def as_json(self) -> dict[str, object]:
        return {
            "pool": self.pool, "family": self.family, "size": self.size, "reserved": self.reserved,
            "used": self.used, "free": self.free, "percent": self.percent,
        }  # fmt: skip


def pool_usage(rows: Sequence[Lease], configured: Iterable[PoolSpec] = ()) -> tuple[list[PoolUsage], list[str]]:
    """Usage per pool (IPv4 first, then by key), and the pool keys that could not be read."""
    pools: dict[str, tuple[AddressRange, ...]] = {spec.key: spec.ranges for spec in configured}
    unreadable = []
    for key in sorted({row.pool for row in rows} - set(pools)):
        try:
            pools[key] = parse_pool_key(key)
        except InvalidConfig:
            unreadable.append(key)
    leased = _sorted_addresses(rows, lambda row: row.kind != GATEWAY)
    reserved = _sorted_addresses(rows, lambda row: row.kind == GATEWAY)
    for ranges in pools.values():  # a configured gateway is reserved in the store only at the pool's first ADD
        for address_range in ranges:
            if address_range.gateway is not None:
                _insert_unique(reserved.setdefault(address_range.network.family, []), address_range.gateway)
    usages = []
    for key, ranges in pools.items():
        family = ranges[0].network.family
        usages.append(
            PoolUsage(
                key,
                family,
                sum(r.last - r.first + 1 for r in ranges),
                sum(_count(reserved.get(family, []), r) for r in ranges),
                sum(_count(leased.get(family, []), r) for r in ranges),
            )
        )
    return sorted(usages, key=lambda usage: (usage.family, usage.pool)), unreadable


def _sorted_addresses(rows: Sequence[Lease], keep: Callable[[Lease], bool]) -> dict[int, list[int]]:
    chosen: dict[int, list[int]] = {}
    for row in rows:
        if keep(row):
            chosen.setdefault(row.family, []).append(row.address)
    for addresses in chosen.values():
        addresses.sort()
    return chosen


def _insert_unique(addresses: list[int], address: int) -> None:
    index = bisect_left(addresses, address)
    if index == len(addresses) or addresses[index] != address:
        addresses.insert(index, address)


def _count(addresses: list[int], address_range: AddressRange) -> int:
    return bisect_right(addresses, address_range.last) - bisect_left(addresses, address_range.first)
