"""The history of every address: one record per allocation and per release, written by
the engines in the same transaction as the change itself, and kept within a retention.

Container addresses are reused within minutes, and the logs that name an address (flow
logs, firewall logs, intrusion alerts) name nothing else; the store's current leases say
only who holds an address now. A record keeps, for one event of one lease, everything
that lease knew: address, pool, network, owner, container, interface, netns, host, boot,
when it was made (`held_from`) and when the event happened (`at`). A release record is
then a whole tenancy, from `held_from` to `at`; core.tenancy pairs the records back into
tenancies and answers "who held this address at that moment".

Records are appended in time order and pruned oldest first, a few per write: those past
the retention's age or beyond its count. The engines keep them in insertion order with
ids (or sequence numbers) without gaps from the oldest to the newest, so the count is
the difference of two ids, never a scan, and pruning is always a prefix. Only addresses
handed to owners are recorded, not the gateway reservations, which no container holds.

Pure: the clock is passed in.
"""

from __future__ import annotations

from .addresses import format_ip
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .leases import Lease

# What happened to the address. A tenancy starts with ALLOCATED or IMPORTED and ends with
# one of the others.
ALLOCATED = "allocated"  # an ADD, a Docker RequestAddress (also an address a reboot kept, taken back)
IMPORTED = "imported"  # written by an import or a migration: what happened before is not known here
RELEASED = "released"  # a DEL, a Docker release, cnipamctl release, a dead host's release
COLLECTED = "collected"  # released by a collector: CNI GC, cnipamd's reconciler, cnipamctl gc
REPAIRED = "repaired"  # released by the reboot repair (kept a while for its attachment)
STARTS = (ALLOCATED, IMPORTED)
EVENTS = (ALLOCATED, IMPORTED, RELEASED, COLLECTED, REPAIRED)

PRUNE_BATCH = 8  # records a write deletes beyond as many as it adds, at most
# SQLite prunes only in the writes whose ids cross a multiple of PRUNE_EVERY (then as
# many as were added since and PRUNE_BATCH more per write): the other writes only append,
# which keeps the history's cost on an ADD within its budget (bench/history.py); the
# history then holds at most PRUNE_EVERY records beyond the retention's count.
PRUNE_EVERY = 16

DEFAULT_MAX_AGE = 30 * 86400.0
DEFAULT_MAX_RECORDS = 100_000


class Holding(Record):
    """Who held an address, and since when: what a history record repeats of its lease,
    and what a tenancy (core.tenancy) made of such records says."""

    __slots__ = (
        "family", "address", "pool", "network", "handle", "container_id", "ifname", "netns", "host", "boot",
        "held_from",
    )  # fmt: skip

    def __init__(
        self,
        family: int,
        address: int,
        pool: str,
        network: str,
        handle: str | None,
        container_id: str,
        ifname: str,
        netns: str,
        host: str,
        boot: str,
        held_from: float,
    ) -> None:
        self.family = family
        self.address = address
        self.pool = pool
        self.network = network
        self.handle = handle
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.host = host
        self.boot = boot
        self.held_from = held_from

    @property
    def ip(self) -> str:
        return format_ip(self.family, self.address)


class HistoryRecord(Holding):
    """One event of one lease. `host` names the host the lease was on (empty on a store
    only one host uses: its node name is recorded there instead)."""

    __slots__ = ("at", "event")

    def __init__(
        self,
        at: float,
        event: str,
        family: int,
        address: int,
        pool: str,
        network: str,
        handle: str | None,
        container_id: str,
        ifname: str,
        netns: str,
        host: str,
        boot: str,
        held_from: float,
    ) -> None:
        super().__init__(family, address, pool, network, handle, container_id, ifname, netns, host, boot, held_from)
        self.at = at
        self.event = event


def record_of(lease: Lease, event: str, at: float, host: str) -> HistoryRecord:
    return HistoryRecord(
        at, event, lease.family, lease.address, lease.pool, lease.network, lease.handle, lease.container_id,
        lease.ifname, lease.netns, host, lease.boot, lease.created,
    )  # fmt: skip


class Retention(Record):
    """How much history a store keeps: records younger than `max_age` seconds, and at
    most `max_records` of them (on etcd: per host, each host's own records)."""

    __slots__ = ("max_age", "max_records")

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.max_age = max_age
        self.max_records = max_records


DEFAULT_RETENTION = Retention()


def prune_due(identity: int) -> bool:
    """Whether the write that appended the one record `identity` prunes (SQLite's rule;
    a write of several records always does)."""
    return identity % PRUNE_EVERY == 0


def prune_end(oldest: Sequence[tuple[int, float]], newest: int, retention: Retention, now: float, batch: int) -> int:
    """The id below which records go, given the oldest ones (id, at) in id order (as many
    as the caller looked at), ids without gaps up to `newest`: those beyond the count
    (known from the ids alone) and those older than the age, at most `batch` in all,
    always a prefix (a record younger than the age stops the age's share, even should an
    older one follow it after the clock was set back)."""
    if not oldest:
        return 0
    first = oldest[0][0]
    end = max(first, min(newest - retention.max_records + 1, first + batch))
    cutoff = now - retention.max_age
    for identity, at in oldest:
        if identity < end:
            continue
        if identity >= first + batch or at >= cutoff:
            break
        end = identity + 1
    return end
