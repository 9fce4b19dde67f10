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
from .leases import GATEWAY, LEASE, Cursor, Lease, Owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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


def gateway_reservations(
    spec: PoolSpec, network: str, now: float, lookup: Callable[[int, int], Lease | None]
) -> list[Lease]:
    """The gateway reservations a pool still needs recorded (`lookup`: the lease of an
    address as the transaction sees it). A gateway already reserved needs nothing; one
    leased to an owner is refused, since its container would answer for the subnet."""
    needed = []
    for address_range in spec.ranges:
        gateway = address_range.gateway
        if gateway is None or gateway not in address_range.network:
            continue
        found = lookup(spec.family, gateway)
        if found is None:
            needed.append(Lease(spec.family, gateway, GATEWAY, spec.key, GATEWAY, None, network, "", "", now))
        elif found.kind != GATEWAY:
            raise AddressConflict(
                f"gateway {found.ip} of {address_range.network} is already leased to {found.describe_holder()}"
            )
    return needed


def refuse_taken(found: Lease | None) -> None:
    """A requested address must be free: refused naming who holds it."""
    if found is not None:
        what = "reserved as a gateway" if found.kind == GATEWAY else f"already leased to {found.describe_holder()}"
        raise AddressConflict(f"requested address {found.ip} is {what}")


def grant(
    owner: Owner,
    pools: tuple[PoolSpec, ...],
    held: list[Lease],
    now: float,
    reserve_gateways: Callable[[PoolSpec, str, float], None],
    take_requested: Callable[[PoolSpec], int],
    take_next: Callable[[PoolSpec], int],
    record: Callable[[Lease], None],
    set_cursor: Callable[[str, Cursor], None],
) -> list[Lease]:
    """One lease per pool for `owner`, in pool order: the steps every engine takes inside
    its own transaction, given as that engine's operations. `held` is the owner's leases
    as the transaction sees them; what is granted is appended to it."""
    granted = []
    for spec in pools:
        lease = reuse_existing(owner, spec, held)
        if lease is None:
            reserve_gateways(spec, owner.network, now)
            address = take_requested(spec) if spec.requested is not None else take_next(spec)
            lease = Lease(
                spec.family, address, LEASE, spec.key, spec.slot, owner.handle,
                owner.network, owner.container_id, owner.ifname, now,
            )  # fmt: skip
            record(lease)
            if not spec.lowest_free:
                set_cursor(spec.key, Cursor(spec.family, address, spec.release_moves_cursor))
            held.append(lease)
        granted.append(lease)
    return granted
