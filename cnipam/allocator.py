"""Allocation policy, free of I/O: the order in which a pool's addresses are tried and
what an owner's existing leases mean for a new request.

Upstream ecs-ipam hands out the next free address after the last one allocated or
released, wrapping round; host-local does the same per range set. Stores keep that
position per pool and answer "lowest free address in [first, last]" with an index seek;
`search_windows` turns the position into the ordered windows to ask about, so every
engine walks the same order and no engine ever probes addresses one by one.
"""

from __future__ import annotations

from .addresses import format_ip
from .errors import AddressConflict
from .ipam_config import PoolSpec, Range
from .leases import Lease, Owner


def search_windows(ranges: tuple[Range, ...], cursor: int | None) -> list[Range]:
    """Windows to search, in order: after the cursor to the end, then from the start up to
    and including the cursor (a just-released address comes back last)."""
    if cursor is None:
        return list(ranges)
    after = [(max(first, cursor + 1), last) for first, last in ranges if last > cursor]
    before = [(first, min(last, cursor)) for first, last in ranges if first <= cursor]
    return after + before


def reuse_existing(owner: Owner, spec: PoolSpec, held: list[Lease]) -> Lease | None:
    """The owner's lease for this slot if the request may simply return it.

    Raises AddressConflict where the owner's existing lease forbids the request: an ecs id
    already holding an address in the slot (upstream refuses, and the ECS agent counts on
    it), or an attachment whose lease does not fit what it asks for now.
    """
    mine = [lease for lease in held if lease.slot == spec.slot and lease.kind == "lease"]
    if not mine:
        return None
    lease = mine[0]
    if owner.exclusive:
        raise AddressConflict(f"{owner.describe()} already holds {lease.ip} in IPv{lease.family}")
    if spec.requested is not None and spec.requested != lease.address:
        wanted = format_ip(spec.family, spec.requested)
        raise AddressConflict(f"{owner.describe()} already holds {lease.ip}, not the requested {wanted}")
    if lease.family != spec.family or not spec.allows(lease.address):
        raise AddressConflict(f"{owner.describe()} already holds {lease.ip}, outside {spec.network}; DEL it first")
    return lease
