"""What `show` and `release` mean by ADDRESS|OWNER.

An operator knows an address, an ecs id (what the ECS agent passed as `ipam.id`), a
container id (what `docker ps` or `crictl ps` shows), or a store handle (`id:<id>`,
`cni:<network>/<container>/<ifname>`, as `--json` prints). One argument accepts all of
them; something that looks like an address but is not one is refused as such instead
of being searched for as an owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import digits as DIGITS

from ..core.addresses import format_ip, parse_cidr, parse_ip
from ..core.errors import InvalidConfig
from ..core.leases import Lease
from ..store.base import Store
from ..store.lease_query import LeaseQuery
from .failures import BadInput, NothingHeld

_ADDRESS_CHARACTERS = frozenset("0123456789abcdefABCDEF.:")


@dataclass(frozen=True)
class Selection:
    """The leases a target names, and the store.release arguments that free exactly them."""

    what: str  # how messages name the target
    leases: list[Lease]
    handle: str | None  # release everything this owner holds
    addresses: tuple[tuple[int, int], ...]  # and/or exactly these


def looks_like_address(text: str) -> bool:
    """An address, or an address with a prefix length (`10.0.0.7/24`, as a CNI result
    prints it)."""
    address, _, prefix = text.partition("/")
    return ("." in address or ":" in address) and set(address) <= _ADDRESS_CHARACTERS and set(prefix) <= set(DIGITS)


def parse_address(text: str, what: str = "") -> tuple[int, int]:
    """An address, or the address of `address/prefix` (what a CNI result and `ip addr` print)."""
    named = f"{what} " if what else ""
    try:
        if "/" in text:
            address, network = parse_cidr(text.strip(), "address")
            return network.family, address
        return parse_ip(text.strip(), "address")
    except InvalidConfig:
        raise BadInput(f"{named}{text!r} is not an IP address") from None


def select(store: Store, target: str) -> Selection:
    """The leases `target` names; NothingHeld when it names nothing held."""
    if not target.strip():
        raise BadInput("an empty ADDRESS|OWNER names nothing")
    if looks_like_address(target) and not target.startswith(("id:", "cni:")):
        family, address = parse_address(target)
        found = store.lookup(family, address)
        if found is None:
            raise NothingHeld(f"{format_ip(family, address)} is not leased")
        return Selection(found.ip, [found], None, ((family, address),))
    if target.startswith(("id:", "cni:")):
        held = store.held_by(target)
        if not held:
            raise NothingHeld(f"no lease is held by {target}")
        return Selection(target, held, target, ())
    by_id = store.held_by("id:" + target)
    by_container = [lease for lease in store.scan_leases(LeaseQuery(container=target)) if lease not in by_id]
    if not by_id and not by_container:
        raise NothingHeld(f"no lease is held by {target!r} (neither an ecs id nor a container id in the store)")
    what = f"id {target!r}" if by_id else f"container {target!r}"
    if by_id and by_container:
        what = f"id or container {target!r}"
    leases = sorted(by_id + by_container, key=lambda lease: (lease.family, lease.address))
    return Selection(
        what,
        leases,
        "id:" + target if by_id else None,
        tuple((lease.family, lease.address) for lease in by_container),
    )
