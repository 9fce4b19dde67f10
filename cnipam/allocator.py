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


def search_windows(pieces: tuple[Range, ...], cursor: int | None) -> list[Range]:
    """Windows to search, in order: from just after the cursor to the end of its piece,
    the pieces after it, wrapping round to the pieces before it, and last the start of its
    own piece up to the cursor (so a just-released address comes back last). A cursor in
    no piece (none yet, or the config changed) starts from the first piece, as host-local
    does."""
    if cursor is not None:
        for index, (first, last) in enumerate(pieces):
            if first <= cursor <= last:
                head = [(cursor + 1, last)] if cursor < last else []
                return [*head, *pieces[index + 1 :], *pieces[:index], (first, cursor)]
    return list(pieces)


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
        raise AddressConflict(f"{owner.describe()} already holds {lease.ip}, outside {spec}; DEL it first")
    return lease
