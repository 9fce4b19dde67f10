"""The interface every store engine implements natively.

It speaks IPAM, not key-value: "allocate these pools for this owner, atomically",
"release this owner", "collect garbage for this network". Each engine implements it
with its own transactions (SQL for SQLite, Txn with compares for etcd), because a
generic key-value layer forces whole-object compare-and-swap and scans (see
shared/reference/distributed.md §1.3). `tests/store/test_store_conformance.py` runs one
suite against every engine.
"""

from __future__ import annotations

import abc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence

    from ..core.collector import Collection
    from ..core.docker_pools import AddressUse, DockerPool, PoolClaim
    from ..core.history import HistoryRecord, Retention
    from ..core.ipam_config import PoolSpec
    from ..core.leases import Cursor, Lease, Owner
    from ..core.pool_usage import PoolUsage
    from ..core.reuse import ReuseDelay
    from ..core.tenancy import Subject
    from .lease_query import LeaseQuery


class Batch:
    """What Store.batch gives for a `with` block. `broken`: the store itself failed in it
    (not one write: an I/O error, a full disk, damage), so its writes were all undone, or
    will be when the block ends; each must then be made again outside a batch."""

    broken = False

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class StoreEvents:
    """What a long-running process (cnipamd, cnipam-docker) learns from its stores' work
    for its metrics. A store reports its lock waits and retries to the `events` it was
    given; the plugin gives none, so each report costs it one `is None` test and no
    import. The daemons report their own queues and failed calls to the same object."""

    def lock_waited(self, seconds: float) -> None:
        """A write waited this long for the store's writer lock (shared with other processes)."""

    def retried(self) -> None:
        """A change was computed again because another writer changed what it read (etcd)."""

    def queue_waited(self, seconds: float) -> None:
        """A call waited this long behind the daemon's other calls on the same store."""

    def failed(self, error: BaseException) -> None:
        """A call on the store ended with `error` (the daemon counts the store's own)."""


class Store(abc.ABC):
    events: StoreEvents | None = None  # a daemon's metrics (cnipam.metrics.daemon)
    # The kernel boot this process runs in (core.reboot), given by whoever opens the store
    # for CNI calls: the first write that finds the store repaired for another boot
    # releases this host's leases of earlier boots. "" (cnipamctl, the Docker driver)
    # never repairs anything by itself.
    boot: str = ""
    # The engine's clock (time.time): when leases are made and addresses released. Tests
    # replace it to move time without waiting.
    clock: Callable[[], float]
    # The reuse delay of each pool this process allocated from, by pool key, as the call's
    # config gave it (a store does not record configs): what `usage` tells cooling
    # addresses from free ones by, in a daemon that serves many calls.
    reuse_delays: dict[str, float]
    # The host a history record names for a lease of this store: the node name of a
    # store only one host writes, the store's host on etcd.
    history_host: str

    @abc.abstractmethod
    def allocate(self, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        """One lease per pool for `owner`, all or nothing, in pool order.

        A pool's gateway is reserved so no other pool sharing the store hands it out. An
        owner's existing lease is returned or refused as `allocator.reuse_existing` says.
        Raises AddressConflict, PoolExhausted, StoreBusy.
        """

    @abc.abstractmethod
    def release(self, handle: str | None, addresses: Iterable[tuple[int, int]] = ()) -> list[Lease]:
        """Release every lease of `handle` and the named (family, address) leases, atomically.

        Gateway reservations are never released here. Releasing what is not held is not an
        error (CNI DEL must be idempotent); the released leases are returned.
        """

    @abc.abstractmethod
    def release_gateway(self, family: int, address: int) -> Lease | None:
        """Free a gateway reservation (the operator's choice, never a DEL's), atomically.

        Refused with AddressConflict while leases of the reservation's pool remain: their
        containers route through it. The round-robin position stays where it is. Returns
        the reservation, or None when the address is not a reservation.
        """

    @abc.abstractmethod
    def held_by(self, handle: str) -> list[Lease]:
        """The leases of one owner."""

    @abc.abstractmethod
    def lookup(self, family: int, address: int) -> Lease | None:
        """The lease or reservation of one address."""

    @abc.abstractmethod
    def leases(self, network: str | None = None) -> list[Lease]:
        """Every lease and reservation (of one network, if given), in address order."""

    @abc.abstractmethod
    def scan_leases(self, query: LeaseQuery) -> Iterator[Lease]:
        """The leases and reservations `query` names, in address order, read in pages of
        lease_query.PAGE: a listing of any size holds one page at a time. Each page is read
        on its own (a row changed between two pages is seen as it was when its page was
        read), so a listing is exact row by row, not one snapshot of the whole store."""

    @abc.abstractmethod
    def cursors(self) -> dict[str, Cursor]:
        """Every pool's round-robin position (export, inspection)."""

    @abc.abstractmethod
    def collect_garbage(
        self, network: str, valid: Container[tuple[str, str]], grace: float = 0.0, apply: bool = True
    ) -> Collection:
        """Release the owners of `network` none of whose (container, ifname) is in `valid`,
        by core.collector's rules: each owner's leases all or none, `valid` asked again
        inside the releasing transaction, and with `grace` > 0 only owners the store saw
        leaked at least `grace` seconds before (their sightings are kept in the store).
        Without `apply`, a dry run: what a pass would release now and the sightings it
        would keep, nothing written.

        Only this host's leases are judged: `valid` is one runtime's list, and a store
        several hosts share (etcd) holds other hosts' live attachments, which that list
        cannot name. Leases that record no container (anonymous, or migrated without one)
        are kept: nothing says whether they are garbage.
        """

    @abc.abstractmethod
    def earlier_boot_leases(self) -> list[Lease]:
        """This host's CNI leases of boots other than `boot` (core.reboot.ended_by_reboot)."""

    @abc.abstractmethod
    def release_earlier_boots(self) -> list[Lease]:
        """Release `earlier_boot_leases`, keep each address for its attachment's return
        (core.reuse.RETURN_HOLD), and record `boot` as repaired; crash-safe like every
        write. Nothing when `boot` is "". Every write of a store opened with a boot does
        this first when the store was last repaired for another boot."""

    @abc.abstractmethod
    def release_exactly(self, leases: Sequence[Lease], cursors: Mapping[str, Cursor]) -> None:
        """Release these leases and forget these round-robin positions only if every one
        is still exactly as given (an operator's report, applied as it was read); else
        AddressConflict naming the first that changed, and nothing is released.

        On etcd more than one Txn's worth is checked whole first and then written in
        batches; a change between the check and a later batch stops it there, and says so.
        """

    @abc.abstractmethod
    def exhausted(self, pools: tuple[PoolSpec, ...]) -> list[PoolSpec]:
        """The pools without a single free address."""

    @abc.abstractmethod
    def usage(self, configured: Iterable[PoolSpec] = ()) -> list[PoolUsage]:
        """How full each pool of the store (and each `configured` pool) is, as
        core.pool_usage defines it; cooling addresses judged by the configured pools'
        reuse delays, else by `reuse_delays`.

        Read at every metrics scrape: each engine counts without building a lease per row
        where it can (docs/observability.md gives the cost at a million leases).
        """

    @abc.abstractmethod
    def import_leases(
        self, leases: Iterable[Lease], cursors: dict[str, Cursor], history: Sequence[HistoryRecord] | None = None
    ) -> int:
        """Insert leases and round-robin positions in one transaction (migration, bulk load).

        A conflicting address refuses the whole import. Returns the number inserted. The
        `history` of an export is kept as it was; without one (a migration, an export
        made before the store kept history) each lease's history starts with an
        IMPORTED record at the import.
        """

    @abc.abstractmethod
    def history(self, subject: Subject | None = None) -> list[HistoryRecord]:
        """The history records of `subject` (all of them for None) in time order, as
        written (core.history; core.tenancy pairs them into tenancies)."""

    @abc.abstractmethod
    def history_retention(self) -> Retention:
        """How much history the store keeps (core.history's default until one is set)."""

    @abc.abstractmethod
    def set_history_retention(self, retention: Retention) -> None:
        """Keep this much history from now on; what it no longer keeps goes as the engine
        says (at once in SQLite, by each host's next writes on etcd)."""

    @abc.abstractmethod
    def claim_docker_pool(self, claim: PoolClaim) -> DockerPool:
        """Record a new Docker pool under a never-reused id, in one write transaction.

        An explicit pool is honoured or refused (AddressConflict) when it overlaps another
        Docker pool other than as its sibling (core.docker_pools.sibling_refusal), never
        replaced by another block; a dynamic claim gets the lowest free block of its size
        inside the main pool (PoolExhausted when none is left).
        """

    @abc.abstractmethod
    def import_docker_pools(self, pools: Iterable[DockerPool], leases: Iterable[Lease]) -> int:
        """Record Docker pools under the ids given, with their address leases, in one
        write transaction (migration from another driver: dockerd keeps naming the pools
        by the ids it was given, so they must be kept exactly). Returns the number of pools.

        Afterwards each pool behaves exactly as if `claim_docker_pool` had made it:
        `request_docker_address`, `release_docker_address` and `release_docker_pool` work
        on its id. Each lease must be `pool.lease(address, created)` of one of `pools`
        (an address of the pool's usable range), else InvalidConfig. Refused whole, with
        AddressConflict naming the clash and nothing written: an id that already exists, a
        pool overlapping an existing Docker pool or another imported one other than as its
        sibling, an address the
        store already holds (any lease or reservation, CNI or Docker). An id of the
        driver's own form (`SPACE/CIDR/N`, core.docker_pools.pool_serial) moves the never-reuse
        counter to at least N, so no later claim mints that id again.
        """

    @abc.abstractmethod
    def release_docker_pool(self, pool_id: str) -> DockerPool:
        """Forget a Docker pool and release its addresses, atomically. Raises NotFound."""

    @abc.abstractmethod
    def docker_pools(self) -> list[DockerPool]:
        """Every Docker pool, oldest first."""

    @abc.abstractmethod
    def request_docker_address(
        self,
        pool_id: str,
        requested: int | None,
        serial: bool = False,
        reuse: ReuseDelay | None = None,
        use: AddressUse | None = None,
    ) -> Lease:
        """Lease the named address of a Docker pool, or its lowest free one (`serial`: the
        next free one after the last dynamic one, wrapping), atomically. `reuse` is the
        driver's reuse delay for a dynamic address (core.reuse; None: none); `use` what
        dockerd asked it for, recorded in the lease (core.docker_pools.address_use).

        Raises NotFound (pool), InvalidConfig (address outside the pool or of another
        family), AddressConflict (taken), PoolExhausted.
        """

    @abc.abstractmethod
    def release_docker_address(self, pool_id: str, family: int, address: int) -> Lease | None:
        """Release one address of a Docker pool, atomically; None when it was not held by
        the pool (not an error, as in Docker's own IPAM). Raises NotFound, InvalidConfig."""

    @abc.abstractmethod
    def repair(self, apply: bool) -> list[str]:
        """Rebuild in place what the engine derives from its leases, where `problems` finds
        it wrong, and forget round-robin positions that lie outside their pools; what was
        changed (without `apply`, what would be: nothing is written). The leases are the
        truth and are never changed: a free index or bitmap that disagrees with them is
        rebuilt from them, so repair can make a leased address taken again, never free.
        SQLite: the free index, the text form of addresses, the release times of held
        addresses, in one transaction. etcd: the blocks' bitmaps and release times, the
        owner and boot indexes, each fix one Txn compared with what it was computed from."""

    @abc.abstractmethod
    def problems(self) -> list[str]:
        """Integrity check: every invariant the engine relies on; empty when healthy."""

    def batch(self) -> Batch:
        """A `with` block whose writes share one transaction where the engine can do that
        (group commit, cnipam-docker): each write is undone alone when it fails, and all of
        them are durable together when the block ends, which raises if they cannot be.
        Here, for engines that cannot (etcd: one Txn per write), each write commits alone,
        as outside a block."""
        return Batch()

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; the store stays as committed."""
