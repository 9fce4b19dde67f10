"""What a migration would import, decided before anything is written.

Readers turn an upstream store into `Found` records; `plan` matches them against the
pools of the network config the host will use, so every imported lease lands in the
pool (and round-robin position) the plugin will look in, and everything that cannot be
imported is listed with the reason. The import itself is one store transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..core.addresses import format_ip
from ..core.ipam_config import AddressRange, IPAMConfig, PoolSpec
from ..core.leases import GATEWAY, LEASE, Cursor, Lease, Owner


@dataclass(frozen=True)
class Found:
    """One address an upstream store holds, with whatever identity it recorded."""

    family: int
    address: int
    owner_id: str | None = None  # ecs-ipam's id ("" in the file means none)
    container_id: str = ""
    ifname: str = ""
    gateway: bool = False
    source: str = ""  # where it was read, for the report

    @property
    def ip(self) -> str:
        return format_ip(self.family, self.address)


@dataclass(frozen=True)
class Position:
    """An upstream round-robin position: an address, and which pool it belongs to if known."""

    family: int
    address: int
    pool_index: int | None = None  # host-local's last_reserved_ip.N names its range set


@dataclass
class Plan:
    leases: list[Lease] = field(default_factory=list)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    notes: list[str] = field(default_factory=list)


def plan(
    found: list[Found], positions: list[Position], config: IPAMConfig, network: str, moves_on_release: bool
) -> Plan:
    result = Plan()
    now = time.time()
    slots_taken: dict[tuple[str, str], str] = {}
    addresses_taken: set[tuple[int, int]] = set()
    for item in sorted(found, key=lambda f: (f.family, f.address)):
        spec, why = _pool_of(config.pools, item)
        if spec is None:
            result.refused.append((item.ip, f"{why} ({item.source})" if item.source else why))
            continue
        if (item.family, item.address) in addresses_taken:
            result.refused.append((item.ip, "appears twice"))
            continue
        if item.gateway:
            result.leases.append(
                Lease(item.family, item.address, GATEWAY, spec.key, GATEWAY, None, network, "", "", now)
            )
            addresses_taken.add((item.family, item.address))
            continue
        owner = Owner.for_request(item.owner_id or None, network, item.container_id, item.ifname)
        if owner.handle is not None:
            other = slots_taken.get((owner.handle, spec.slot))
            if other is not None:
                result.refused.append((item.ip, f"{owner.describe()} already holds {other} in the same pool"))
                continue
            slots_taken[owner.handle, spec.slot] = item.ip
        lease = Lease(
            item.family,
            item.address,
            LEASE,
            spec.key,
            spec.slot,
            owner.handle,
            network,
            item.container_id,
            item.ifname,
            now,
        )
        result.leases.append(lease)
        addresses_taken.add((item.family, item.address))
    for position in positions:
        spec = _position_pool(config.pools, position)
        if spec is None:
            result.notes.append(
                f"round-robin position {format_ip(position.family, position.address)} is outside every pool; not kept"
            )
        else:
            result.cursors[spec.key] = Cursor(position.family, position.address, moves_on_release)
    return result


def _pool_of(pools: tuple[PoolSpec, ...], item: Found) -> tuple[PoolSpec | None, str]:
    """The pool an upstream record belongs to, or None and why it fits none."""
    for spec in pools:
        if spec.family != item.family:
            continue
        for address_range in spec.ranges:
            if item.gateway and item.address == address_range.gateway:
                return spec, ""
            if not item.gateway and spec.allows(item.address):
                return spec, ""
    for spec in pools:
        for address_range in spec.ranges:
            if item.family != spec.family or item.address not in address_range.network:
                continue
            if item.gateway:
                return (
                    None,
                    f"a gateway of {address_range.network}, "
                    f"but the config's gateway there is {_gateway_text(address_range)}",
                )
            if item.address == address_range.gateway:
                return None, f"leased upstream, but it is the config's gateway of {address_range.network}"
            return None, f"inside {address_range.network} but outside the configured range {address_range}"
    return None, "outside every configured pool"


def _gateway_text(address_range: AddressRange) -> str:
    return "none" if address_range.gateway is None else format_ip(address_range.network.family, address_range.gateway)


def _position_pool(pools: tuple[PoolSpec, ...], position: Position) -> PoolSpec | None:
    if position.pool_index is not None:
        if position.pool_index < len(pools) and pools[position.pool_index].allows(position.address):
            return pools[position.pool_index]
        return None
    return next((spec for spec in pools if spec.family == position.family and spec.allows(position.address)), None)
