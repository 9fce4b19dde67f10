"""Tenancies: who held an address from when to when, put back together from the history
records (core.history) and the store's current leases.

A tenancy is one lease's life: it is known by its address and the moment the lease was
made (`held_from`, which every record of that lease repeats), so a start record and an
end record pair up exactly, and a current lease is the tenancy still under way. Each
piece may be missing: a start record pruned (past the retention) or written before the
store kept history leaves the release record or the lease, which still say when the
tenancy began; an end record on another host's history that was pruned first leaves a
tenancy that is over without saying when (`ended` UNKNOWN).

Pure: what the engines read is passed in.
"""

from __future__ import annotations

from .history import ALLOCATED, STARTS, Holding, record_of
from .leases import LEASE, describe_holder
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .history import HistoryRecord
    from .leases import Lease

HELD = "held"  # `ended` of a tenancy whose lease the store still holds
UNKNOWN = "unknown"  # `ended` of a tenancy that is over, its end record gone


class Subject(Record):
    """What `cnipamctl history` is asked about: an address (family, address), or owners
    (their handles) and a container id."""

    __slots__ = ("address", "handles", "container_id")

    def __init__(
        self, address: tuple[int, int] | None = None, handles: tuple[str, ...] = (), container_id: str = ""
    ) -> None:
        self.address = address
        self.handles = handles
        self.container_id = container_id

    def matches(self, family: int, address: int, handle: str | None, container_id: str) -> bool:
        if self.address is not None:
            return self.address == (family, address)
        return handle in self.handles or (bool(self.container_id) and container_id == self.container_id)


class Tenancy(Holding):
    """One lease's life. `started`: the event that began it (history.ALLOCATED or
    IMPORTED), None when its record is gone; `since`: when that record was written (for
    an import, the import: what the lease did before is not known here); `ended`: the
    event that ended it, HELD while it lasts, UNKNOWN when it is over without a record;
    `held_to`: when it ended, None while held or when unknown."""

    __slots__ = ("held_to", "started", "since", "ended")

    def __init__(self, holding: Holding) -> None:
        """A tenancy of whom `holding` names (a record of it, or its lease's allocation),
        its start and end not known yet."""
        super().__init__(*(getattr(holding, name) for name in Holding.__slots__))
        self.held_to: float | None = None
        self.started: str | None = None
        self.since: float | None = None
        self.ended = UNKNOWN

    def holder(self) -> str:
        return describe_holder(self.handle, self.container_id, self.ifname)

    def held_at(self, moment: float) -> bool:
        """Whether the address was this tenancy's at `moment` (for an end not known: at any
        moment after it began)."""
        return self.held_from <= moment and (self.held_to is None or moment < self.held_to)

    def overlaps(self, since: float | None, until: float | None) -> bool:
        return (until is None or self.held_from <= until) and (
            since is None or self.held_to is None or self.held_to >= since
        )

    def as_json(self) -> dict[str, object]:
        return {
            "ip": self.ip, "family": self.family, "held_from": self.held_from, "held_to": self.held_to,
            "started": self.started, "since": self.since, "ended": self.ended, "handle": self.handle,
            "container_id": self.container_id, "ifname": self.ifname, "network": self.network, "pool": self.pool,
            "netns": self.netns, "host": self.host, "boot": self.boot,
        }  # fmt: skip


def tenancies(records: Iterable[HistoryRecord], leases: Iterable[Lease], host: str = "") -> list[Tenancy]:
    """The tenancies the records and the current leases (of the same subject) tell of, by
    start, then address. `host`: what to record as the host of a lease no record names
    (the store's own host)."""
    found: dict[tuple[int, int, float], Tenancy] = {}
    for record in sorted(records, key=lambda record: record.at):
        key = (record.family, record.address, record.held_from)
        tenancy = found.get(key)
        if tenancy is None:
            tenancy = found[key] = Tenancy(record)
        if record.event in STARTS:
            if tenancy.started is None or record.event == ALLOCATED:  # an allocation record tells more than an import
                tenancy.started, tenancy.since = record.event, record.at
        else:
            tenancy.ended, tenancy.held_to = record.event, record.at
    for lease in leases:
        if lease.kind != LEASE:
            continue
        key = (lease.family, lease.address, lease.created)
        tenancy = found.get(key)
        if tenancy is None:
            tenancy = found[key] = Tenancy(record_of(lease, ALLOCATED, lease.created, host))
        tenancy.ended, tenancy.held_to = HELD, None
    return sorted(found.values(), key=lambda tenancy: (tenancy.held_from, tenancy.family, tenancy.address))
