"""Allocation policy, free of I/O: the order in which a pool's addresses are tried and
what an owner's existing leases mean for a new request.

Upstream ecs-ipam hands out the next free address after the last one allocated or
released, wrapping round; host-local does the same per range set. Stores keep that
position per pool and answer "lowest free address in [first, last]" with an index seek;
`search_windows` turns the position into the ordered windows to ask about, so every
engine walks the same order and no engine ever probes addresses one by one.
"""

from __future__ import annotations

from .addresses import Network, format_ip, parse_cidr
from .errors import AddressConflict, InvalidConfig
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


def gateway_reservation(
    spec: PoolSpec, address: int, network: str, now: float, lookup: Callable[[int, int], Lease | None]
) -> tuple[int | None, Lease | None]:
    """For a lease of `address` from `spec`: the gateway it depends on (None when its range
    has none inside its subnet), and the reservation of that gateway to write (None when
    the one recorded serves as it is): a new one, or the recorded one widened.

    A gateway is reserved when the first lease of its range needs it, not for every range
    of the pool at once: what an ADD writes must not grow with the number of ranges (a
    range set of 8,000 /24s wrote 8,000 reservations). The reservation names the subnet it
    protects (`slot`); a pool whose range shares the gateway in a wider subnet widens it,
    so the reservation always covers every lease that depends on it, and goes when the
    last of them does (`gateway_still_needed`). A gateway leased to an owner is refused,
    since its container would answer for the subnet. `lookup`: the lease of an address as
    the transaction sees it."""
    address_range = spec.range_of(address)
    if address_range is None or address_range.gateway is None or address_range.gateway not in address_range.network:
        return None, None
    gateway, subnet = address_range.gateway, address_range.network
    found = lookup(spec.family, gateway)
    if found is None:
        return gateway, Lease(spec.family, gateway, GATEWAY, spec.key, str(subnet), None, network, "", "", now)
    if found.kind != GATEWAY:
        raise AddressConflict(f"gateway {found.ip} of {subnet} is already leased to {found.describe_holder()}")
    protected = reserved_subnet(found)
    if protected is not None and protected.prefix > subnet.prefix:  # nested (both hold the gateway): widen
        return gateway, Lease(
            found.family, found.address, GATEWAY, found.pool, str(subnet), None, found.network, "", "", found.created
        )
    return gateway, None


def reserved_subnet(reservation: Lease) -> Network | None:
    """The subnet a gateway reservation protects; None for one recorded before reservations
    named it (their slot is "gateway"), which is kept for good."""
    try:
        return parse_cidr(reservation.slot, "slot")[1]
    except InvalidConfig:
        return None


def refuse_taken(found: Lease | None) -> None:
    """A requested address must be free: refused naming who holds it."""
    if found is not None:
        what = "reserved as a gateway" if found.kind == GATEWAY else f"already leased to {found.describe_holder()}"
        raise AddressConflict(f"requested address {found.ip} is {what}")


def returned_address(spec: PoolSpec, kept: tuple[int, int] | None) -> int | None:
    """The address a reboot kept for this owner's slot (core.reboot), when the pool may
    hand it out: the attachment came back, so it gets the address it had before."""
    if kept is None or spec.requested is not None:
        return None
    family, address = kept
    return address if family == spec.family and spec.allows(address) else None


def grant(
    owner: Owner,
    pools: tuple[PoolSpec, ...],
    held: list[Lease],
    now: float,
    reserve_gateway: Callable[[PoolSpec, int, str, float], int | None],
    take_requested: Callable[[PoolSpec], int],
    take_next: Callable[[PoolSpec, Owner], int],
    record: Callable[[Lease], None],
    set_cursor: Callable[[str, Cursor], None],
) -> list[Lease]:
    """One lease per pool for `owner`, in pool order: the steps every engine takes inside
    its own transaction, given as that engine's operations. `held` is the owner's leases
    as the transaction sees them; what is granted is appended to it. `take_next` gives the
    owner the address a reboot kept for it (`returned_address`) when there is one, else
    the next eligible one (core.reuse). `reserve_gateway` records what gateway_reservation
    asks for the address taken and returns the gateway the lease depends on; a pool never
    hands out one of its own gateways (PoolSpec.pieces)."""
    granted = []
    for spec in pools:
        lease = reuse_existing(owner, spec, held)
        if lease is None:
            address = take_requested(spec) if spec.requested is not None else take_next(spec, owner)
            gateway = reserve_gateway(spec, address, owner.network, now)
            lease = Lease(
                spec.family, address, LEASE, spec.key, spec.slot, owner.handle,
                owner.network, owner.container_id, owner.ifname, now, owner.boot, owner.netns, gateway,
            )  # fmt: skip
            record(lease)
            if not spec.lowest_free:
                set_cursor(spec.key, Cursor(spec.family, address, spec.release_moves_cursor))
            held.append(lease)
        granted.append(lease)
    return granted
