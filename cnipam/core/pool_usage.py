"""How full each pool is: the one definition `cnipamctl usage`, `cnipamctl metrics` and
the daemons' pool gauges share.

A pool's key names its ranges (ipam_config.parse_pool_key), so usage needs no config;
a config only adds the pools nothing has been allocated from yet, and the ranges of a
pool of many ranges, which the store names by a digest. Addresses are counted by where
they lie, not by the row's `pool` column: an address is unique in the whole store, so a
lease of another pool (overlapping configs sharing one store) or a gateway reserved by
another pool still takes that address away from this one. Only the gateways inside a
pool's ranges count as reserved: a gateway outside them never was allocatable.

An address nobody holds is `cooling` while core.reuse would not give it to a new owner
yet: released less than the pool's reuse delay ago, or kept for the attachment a reboot
took it from; else it is free. The delay is a pool's config's, which the store does not
record: the caller says which it knows (a config, the delays of the calls a daemon
served); a pool whose delay is unknown counts only the addresses kept after a reboot.

A pool whose ranges are unknown (a digest key without its config, or a key that cannot
be read) has no size: its reserved and used addresses are the rows of its own key, and
nothing is said about free ones (`size` None).

The engines count each in their own way (`Counts`: SQL range counts in SQLite, rows
already read on etcd); the arithmetic and the rules are here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .errors import InvalidConfig
from .ipam_config import parse_pool_key
from .leases import GATEWAY
from .record import Record
from .reuse import ReuseDelay, eligibility

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Protocol

    from .ipam_config import AddressRange, PoolSpec
    from .leases import Lease
    from .reuse import Eligibility

    class Counts(Protocol):
        """What an engine counts for `pool_usage`."""

        def pools(self) -> dict[str, str]:
            """Every pool key the store holds rows of (or knows, as a Docker pool), with the
            network its rows were written for ("" when unknown)."""

        def in_range(self, family: int, first: int, last: int) -> tuple[int, int]:
            """Leases and gateway reservations at addresses first..last."""

        def is_reserved(self, family: int, address: int) -> bool:
            """Whether a gateway reservation is held at `address`."""

        def resting(self, family: int, first: int, last: int, rule: Eligibility) -> int:
            """Free addresses of first..last released lately that `rule` does not allow yet."""

        def of_key(self, key: str) -> tuple[int, int, int]:
            """Family (0 for none), leases and gateway reservations of the rows of pool `key`."""


class PoolUsage(Record):
    """One pool: its size (usable addresses of its ranges; None when the ranges are not
    known), how many of them are reserved for gateways, leased and cooling, and the
    network its rows were written for (of the first one the engine finds, should two
    networks share the pool; "" while it holds none)."""

    __slots__ = ("pool", "family", "network", "size", "reserved", "used", "cooling")

    def __init__(
        self, pool: str, family: int, network: str, size: int | None, reserved: int, used: int, cooling: int = 0
    ) -> None:
        self.pool = pool
        self.family = family
        self.network = network
        self.size = size
        self.reserved = reserved
        self.used = used
        self.cooling = cooling

    @property
    def free(self) -> int | None:
        """Addresses a new owner may take now (cooling ones are not counted)."""
        if self.size is None:
            return None
        return max(0, self.size - self.reserved - self.used - self.cooling)

    @property
    def percent(self) -> float | None:
        """Share of the pool leased or reserved, one decimal (cooling addresses can still be
        handed out, so they do not make a pool fuller)."""
        if self.size is None:
            return None
        return round(100.0 * min(self.reserved + self.used, self.size) / self.size, 1) if self.size else 100.0

    def as_json(self) -> dict[str, object]:
        return {
            "pool": self.pool, "family": self.family, "network": self.network, "size": self.size,
            "reserved": self.reserved, "used": self.used, "cooling": self.cooling, "free": self.free,
            "percent": self.percent,
        }  # fmt: skip


def pool_usage(
    counts: Counts, configured: Iterable[PoolSpec] = (), delays: Mapping[str, float] | None = None, now: float = 0.0
) -> list[PoolUsage]:
    """Usage of the pools the store holds rows of and of the `configured` ones, IPv4 first,
    then by key. A configured pool's reuse delay is its config's, another's `delays`' (by
    pool key); `now` is the time cooling is judged at.

    A configured gateway counts as reserved before the store reserves it (at the pool's
    first ADD), once, whichever pools share it."""
    found = counts.pools()
    known = dict(delays or {})
    pools: dict[str, tuple[tuple[AddressRange, ...], str]] = {}
    for spec in configured:
        pools[spec.key] = (spec.ranges, found.get(spec.key, ""))
        known[spec.key] = spec.reuse.delay
    usages = []
    for key in sorted(set(found) - set(pools)):
        try:
            pools[key] = (parse_pool_key(key), found[key])
        except InvalidConfig:
            family, used, reserved = counts.of_key(key)
            usages.append(PoolUsage(key, family, found[key], None, reserved, used))
    pending: dict[int, list[int]] = {}  # configured gateways the store does not reserve yet
    for ranges, _ in pools.values():
        for address_range in ranges:
            gateway, family = address_range.gateway, address_range.network.family
            if gateway is not None and not counts.is_reserved(family, gateway):
                _insert_unique(pending.setdefault(family, []), gateway)
    for key, (ranges, network) in pools.items():
        family = ranges[0].network.family
        rule = eligibility(ReuseDelay(known.get(key, 0.0)), now)
        size = reserved = used = cooling = 0
        for address_range in ranges:
            first, last = address_range.first, address_range.last
            leased, gateways = counts.in_range(family, first, last)
            size += last - first + 1
            used += leased
            reserved += gateways + _count(pending.get(family, []), first, last)
            cooling += counts.resting(family, first, last, rule)
        usages.append(PoolUsage(key, family, network, size, reserved, used, cooling))
    return sorted(usages, key=lambda usage: (usage.family, usage.pool))


class RowCounts:
    """`Counts` over rows already read (an engine that has no cheaper way to count):
    the leases, the free addresses released lately (family, address, when, whether kept
    for a returning attachment), and the pools known without rows (Docker pools: key ->
    network)."""

    def __init__(
        self,
        rows: Sequence[Lease],
        released: Iterable[tuple[int, int, float, bool]] = (),
        empty: Mapping[str, str] | None = None,
    ) -> None:
        self.found: dict[str, str] = dict(empty or {})
        self.leased: dict[int, list[int]] = {}
        self.reserved: dict[int, list[int]] = {}
        self.keys: dict[str, list[Lease]] = {}
        for row in sorted(rows, key=lambda row: (row.family, row.address)):
            if not self.found.get(row.pool):
                self.found[row.pool] = row.network
            self.keys.setdefault(row.pool, []).append(row)
            (self.reserved if row.kind == GATEWAY else self.leased).setdefault(row.family, []).append(row.address)
        self.released = sorted(released)

    def pools(self) -> dict[str, str]:
        return self.found

    def in_range(self, family: int, first: int, last: int) -> tuple[int, int]:
        return _count(self.leased.get(family, []), first, last), _count(self.reserved.get(family, []), first, last)

    def is_reserved(self, family: int, address: int) -> bool:
        return _count(self.reserved.get(family, []), address, address) > 0

    def resting(self, family: int, first: int, last: int, rule: Eligibility) -> int:
        start = bisect_left(self.released, (family, first))
        end = bisect_right(self.released, (family, last, float("inf"), True))
        return sum(not rule.allows(at, held) for _, _, at, held in self.released[start:end])

    def of_key(self, key: str) -> tuple[int, int, int]:
        rows = self.keys.get(key, [])
        gateways = sum(row.kind == GATEWAY for row in rows)
        return (rows[0].family if rows else 0), len(rows) - gateways, gateways


def _insert_unique(addresses: list[int], address: int) -> None:
    index = bisect_left(addresses, address)
    if index == len(addresses) or addresses[index] != address:
        addresses.insert(index, address)


def _count(addresses: list[int], first: int, last: int) -> int:
    return bisect_right(addresses, last) - bisect_left(addresses, first)
