"""Rows whose pool no longer explains them, whatever engine holds them.

A pool is named by its ranges (`ipam_config.pool_key`), so a lease, a gateway
reservation or a round-robin position can be checked against the pool it claims to
belong to without the network config: a lease outside its pool's ranges, a gateway
outside its pool's subnets, a position outside its pool all mean the store was edited
by hand or by a bug. A pool of many ranges is named by a digest (`names_ranges` is
False): its rows cannot be checked without its config, and are not reported.
"""

from __future__ import annotations

from ..core.addresses import format_ip
from ..core.errors import InvalidConfig
from ..core.ipam_config import names_ranges, parse_pool_key
from ..core.leases import GATEWAY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..core.ipam_config import AddressRange
    from ..core.leases import Cursor, Lease


class PoolKeys:
    """Pool keys parsed once each: whether an address lies inside the pool a key names."""

    def __init__(self) -> None:
        self.pools: dict[str, tuple[AddressRange, ...] | None] = {}

    def inside(self, pool: str, family: int, address: int, whole_subnet: bool = False) -> bool | None:
        """None when `pool` is not a pool key; `whole_subnet`: anywhere in its subnets. A
        digest (a pool too long to name) counts as inside: its ranges are in its config only."""
        if not names_ranges(pool):
            return True
        if pool not in self.pools:
            try:
                self.pools[pool] = parse_pool_key(pool)
            except InvalidConfig:
                self.pools[pool] = None
        ranges = self.pools[pool]
        if ranges is None:
            return None
        return any(
            r.network.family == family and (address in r.network if whole_subnet else r.first <= address <= r.last)
            for r in ranges
        )


def orphans(leases: Iterable[Lease], cursors: dict[str, Cursor]) -> list[str]:
    found: list[str] = []
    inside = PoolKeys().inside
    for lease in leases:
        verdict = inside(lease.pool, lease.family, lease.address, lease.kind == GATEWAY)
        if verdict is None:
            found.append(f"{lease.ip}: pool {lease.pool!r} is not a pool description")
        elif not verdict:
            found.append(f"orphan: {lease.ip} ({lease.kind}) lies outside its pool {lease.pool}")
    for pool in orphan_cursors(cursors):
        cursor = cursors[pool]
        found.append(
            f"orphan: the position of pool {pool!r} ({format_ip(cursor.family, cursor.address)}) lies outside it"
        )
    return found


def orphan_cursors(cursors: dict[str, Cursor]) -> list[str]:
    """The pools whose round-robin position lies outside them (Store.repair forgets them)."""
    inside = PoolKeys().inside
    return [pool for pool, cursor in cursors.items() if not inside(pool, cursor.family, cursor.address, False)]
