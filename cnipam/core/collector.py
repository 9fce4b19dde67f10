"""A collector that cannot free a live address.

Releasing a live address is worse than leaking one: it gives one address to two
containers (whereabouts #162/#176, calico #12257/#13538, vpc-cni #3019). Calico's rules,
learned from those, are followed by cnipamd's reconciler and `cnipamctl gc`:

* an owner is valid until proven leaked: it is a candidate only when none of its
  attachments is in the valid set (the runtime's list, or libcni's result cache);
* it must be seen leaked in two passes at least `grace` seconds apart: the store keeps
  when each owner was first seen leaked (a sighting), a pass that finds it valid again
  forgets it, and a lease made after the sighting (the same handle, a new attachment)
  starts the count again;
* it is checked again inside the transaction that releases it (the engines call
  `leaked_owners` there, with a valid set that asks afresh), and
* all leases of an owner go together or none does.

A `grace` of 0 releases in one pass (CNI's own GC, where the runtime's list is the
authority). Pure: the engines read and write, the clock is passed in.
"""

from __future__ import annotations

from .errors import InvalidConfig
from .leases import LEASE
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container, Iterable

    from .leases import Lease


class Collection(Record):
    """One pass of a collector over one network: the leases seen leaked (candidates), the
    leases released (in a dry run, those it would release), and the sightings the store
    keeps afterwards (handle -> first seen)."""

    __slots__ = ("candidates", "released", "sightings")

    def __init__(self, candidates: list[Lease], released: list[Lease], sightings: dict[str, float]) -> None:
        self.candidates = candidates
        self.released = released
        self.sightings = sightings


def owner_of(lease: Lease) -> str:
    """The key an owner's leases are grouped under: its handle (every CNI lease that
    records a container has one)."""
    return lease.handle if lease.handle is not None else f"{lease.family}/{lease.address}"


def leaked_owners(leases: Iterable[Lease], network: str, valid: Container[tuple[str, str]]) -> dict[str, list[Lease]]:
    """The owners of `network` none of whose attachments is valid, with their leases.

    Leases that record no container, or no owner (a Docker pool's addresses, which record
    their endpoint's name as container, and anonymous leases), are never candidates:
    nothing a runtime's list says covers them. Each distinct attachment is asked about once, so a valid set that looks
    afresh at every question (cnipamd's, at the result cache) cannot answer yes for one
    lease of an owner and no for the other."""
    owners: dict[str, list[Lease]] = {}
    for lease in leases:
        if lease.network == network and lease.kind == LEASE and lease.container_id and lease.handle is not None:
            owners.setdefault(owner_of(lease), []).append(lease)
    leaked = {}
    for owner, held in owners.items():
        attachments = {(lease.container_id, lease.ifname) for lease in held}
        if not any(attachment in valid for attachment in attachments):
            leaked[owner] = held
    return leaked


def judge(
    leaked: dict[str, list[Lease]], seen: dict[str, float], now: float, grace: float
) -> tuple[list[str], dict[str, float]]:
    """The leaked owners to release now, and the sightings to keep (handle -> first seen).

    With `grace` > 0, an owner is released when it was first seen leaked at least `grace`
    ago and after its newest lease was made; every other leaked owner keeps (or gets) its
    sighting; owners no longer leaked lose theirs."""
    if grace <= 0:
        return sorted(leaked), {}
    due: list[str] = []
    keep: dict[str, float] = {}
    for owner, held in sorted(leaked.items()):
        first = seen.get(owner)
        if first is None or first < max(lease.created for lease in held):
            keep[owner] = now
        elif now - first >= grace:
            due.append(owner)
        else:
            keep[owner] = first
    return due, keep


def gc_disabled(config: dict[str, object]) -> bool:
    """A network config's `disableGC` (libcni's escape valve, cni #1086): true, or the
    string "true" in any case, as libcni reads it. Such a network is never collected."""
    value = config.get("disableGC", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidConfig(f"disableGC: expected true or false, got {str(value)[:40]}")
