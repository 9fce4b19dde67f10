"""The cluster engine: one address space shared by many hosts through etcd v3.

Keys, under the configured prefix (shared/reference/distributed.md §0 and §3):
* `lease/<family>/<address hex>`: one key per held address, the lease record as JSON.
  Creating it is compared against `create_revision == 0`, so two hosts can never hold
  one address.
* `owner/<handle>/<slot>`: the owner index (an address per handle and slot), so DEL by
  container and the idempotent ADD read one short prefix, never a scan.
* `block/<family>/<block hex>`: 256 addresses (an IPv4 /24, an IPv6 /120) as a bitmap
  of the taken ones, plus the host that claimed the block. Finding a free address reads
  the bitmaps of at most 64 consecutive blocks with a bounded range; an absent key is a
  block nobody has claimed, wholly free. A host allocates in its own blocks and in
  unclaimed ones (which it claims in the same transaction), and borrows from other
  hosts' blocks only when neither is left: hosts then write different keys and do not
  fight over compare-and-swap (Calico's block affinity; shared/reference/distributed.md
  §1.2).
* `cursor/<host>/<pool>`: each host's round-robin position, so the position is not a
  key every host rewrites. On one host the order is exactly the SQLite engine's.
* `host/<host>`: when the host last wrote, so an operator can tell a dead host from a
  quiet one before releasing its leases (`cnipamctl hosts`).
* `dpool/<id>` and `counter/docker_pool`: the Docker driver's pools.

Every change is one Txn: the compares are the revisions of every key the change was
computed from, so a change computed from a stale read fails as a whole and is computed
again (optimistic concurrency, bounded by the timeout). Processes of one host queue on a
local `flock` first, as the SQLite engine's writers do, so they never race each other;
compares only ever fail between hosts.

Range reads are always bounded by `range_end` to a chunk of blocks or to one owner's
keys: etcd 3.4 counts every key of a range to answer even a `limit=1` read
(shared/reference/distributed.md §3.1).
"""

from __future__ import annotations

import os
import time
from fcntl import LOCK_UN, flock

from ..core.addresses import format_ip
from ..core.allocator import gateway_reservations, grant, refuse_taken, search_windows
from ..core.errors import AddressConflict, CnipamError, InvalidConfig, NotFound, PoolExhausted, StoreBusy, StoreCorrupt
from ..core.ipam_config import parse_pool_key
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
from .cluster import ClusterStore
from .etcd_change import CHUNK, Change, StaleRead, paged
from .etcd_keys import (
    BLOCK_BITS,
    BLOCK_SIZE,
    Block,
    HostSeen,
    Keys,
    decode_address,
    decode_block,
    decode_cursor,
    decode_lease,
    escape,
    unescape,
)
from .etcdv3 import prefix_end
from .write_lock import take_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import TypeVar

    T = TypeVar("T")

    from ..core.addresses import Network
    from ..core.docker_pools import DockerPool, PoolClaim  # run time: in the Docker methods
    from ..core.ipam_config import PoolSpec
    from ..core.leases import Owner
    from ..core.pool_usage import PoolUsage
    from .etcdv3 import EtcdClient

STALE_LIMIT = 5
BATCH = 25  # leases per Txn when releasing or importing many: each costs up to four operations


class EtcdStore(ClusterStore):
    def __init__(
        self, client: EtcdClient, prefix: str, host: str, timeout: float, lock_path: str | None = None
    ) -> None:
        if not host or "\x00" in host:
            raise InvalidConfig("store: the host name must be a non-empty string")
        self.client = client
        self.keys = Keys(prefix.encode(), host)
        self.timeout = timeout
        self.retries = 0  # transactions computed again after a failed compare (benchmarks)
        self.warm_misses = 0  # attempts from this process's own earlier knowledge that turned out stale
        self._lock_fd = _open_lock(lock_path) if lock_path else None
        self._warm: Change | None = None
        self._lock_path = lock_path or ""

    # -- the interface ---------------------------------------------------------------

    def allocate(self, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        return self._optimistic(lambda change: self._allocate(change, owner, pools), warm=True)

    def _allocate(self, change: Change, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        change.prefetch(owner.handle, pools)
        held = change.held_by(owner.handle) if owner.handle else []
        return grant(
            owner, pools, held, time.time(),
            lambda spec, network, now: self._reserve_gateways(change, spec, network, now),
            lambda spec: self._take_requested(change, spec),
            lambda spec: self._take_next(change, spec),
            change.add_lease,
            change.set_cursor,
        )  # fmt: skip

    def release(self, handle: str | None, addresses: Iterable[tuple[int, int]] = ()) -> list[Lease]:
        named = list(addresses)

        def plan(change: Change) -> list[Lease]:
            victims = {}
            if handle:
                for lease in change.held_by(handle):
                    victims[lease.family, lease.address] = lease
            for lease in change.leases_at(named):
                if lease.kind == LEASE:
                    victims[lease.family, lease.address] = lease
            change.remove_leases(list(victims.values()))
            return list(victims.values())

        return self._optimistic(plan)

    def release_gateway(self, family: int, address: int) -> Lease | None:
        def plan(change: Change) -> Lease | None:
            found = change.leases_at([(family, address)])
            if not found or found[0].kind != GATEWAY:
                return None
            users = [lease for lease in self._leases_of_pool(found[0].pool) if lease.kind == LEASE]
            if users:
                raise AddressConflict(
                    f"gateway {found[0].ip} still serves {len(users)} lease(s) of pool {found[0].pool}"
                )
            change.remove_leases(found)
            return found[0]

        return self._optimistic(plan)

    def held_by(self, handle: str) -> list[Lease]:
        return sorted(Change(self.client, self.keys).held_by(handle), key=_address_order)

    def lookup(self, family: int, address: int) -> Lease | None:
        return Change(self.client, self.keys).lease_at(family, address)

    def leases(self, network: str | None = None) -> list[Lease]:
        return [lease for lease, _, _ in self._scan_leases() if network is None or lease.network == network]

    def cursors(self) -> dict[str, Cursor]:
        start = self.keys.under("cursor", escape(self.keys.host))
        kvs, _ = self.client.range(start, prefix_end(start))
        return {unescape(kv.key[len(start) :].decode()): decode_cursor(kv.value) for kv in kvs}

    def collect_garbage(self, network: str, valid: set[tuple[str, str]]) -> list[Lease]:
        victims = [
            (lease, revision)
            for lease, revision, _ in self._scan_leases()
            if lease.network == network
            and lease.kind == LEASE
            and lease.container_id
            and (lease.container_id, lease.ifname) not in valid
        ]
        return self._release_seen(victims)

    def exhausted(self, pools: tuple[PoolSpec, ...]) -> list[PoolSpec]:
        change = Change(self.client, self.keys)
        return [
            spec
            for spec in pools
            if all(change.find_free(spec.family, *window, True) is None for window in spec.pieces)
        ]

    def usage(self, configured: Iterable[PoolSpec] = ()) -> tuple[list[PoolUsage], list[str]]:
        """From every lease, read in bounded chunks (etcd cannot count a range's values)."""
        from ..core.pool_usage import usage_of_rows

        pools = {pool.key: pool.lease_network for pool in self.docker_pools()}
        return usage_of_rows([lease for lease, _, _ in self._scan_leases()], configured, pools)

    def import_leases(self, leases: Iterable[Lease], cursors: dict[str, Cursor]) -> int:
        """Checked as a whole first, then written in Txns of BATCH leases (etcd caps a Txn
        at 128 operations): a clash found by the check refuses everything; one that appears between
        the check and the last batch (another host allocating at that moment) stops the
        import with the batches before it kept, and says so."""
        rows = list(leases)
        seen: set[tuple[int, int]] = set()
        for lease in rows:
            if (lease.family, lease.address) in seen:
                raise AddressConflict(f"import refused: {lease.ip} appears twice in the input")
            seen.add((lease.family, lease.address))
        check = Change(self.client, self.keys)
        for lease in check.leases_at(sorted(seen)):
            raise AddressConflict(f"import refused: {lease.ip} is already held by {lease.handle or 'a reservation'}")
        written = 0
        for start in range(0, len(rows), BATCH):
            current = rows[start : start + BATCH]

            def plan(change: Change, current: list[Lease] = current, done: int = written) -> None:
                for one in current:
                    if change.leases_at([(one.family, one.address)]):
                        raise AddressConflict(f"import stopped after {done} lease(s): {one.ip} was taken meanwhile")
                    change.take(one.family, one.address, claim=False)
                    change.add_lease(one)

            self._optimistic(plan)
            written += len(current)
        if cursors:

            def positions(change: Change) -> None:
                for pool, cursor in cursors.items():
                    change.set_cursor(pool, cursor)

            self._optimistic(positions)
        return written

    def claim_docker_pool(self, claim: PoolClaim) -> DockerPool:
        from ..core.docker_pools import place_pool  # not at the top: the plugin never needs it

        def plan(change: Change) -> DockerPool:
            pools, serial = change.docker_pools()
            pool = place_pool(claim, pools, serial + 1, time.time())
            change.put_docker_pool(pool, serial + 1)
            return pool

        return self._optimistic(plan)

    def import_docker_pools(self, pools: Iterable[DockerPool], leases: Iterable[Lease]) -> int:
        """Checked as a whole first; then the addresses in Txns of BATCH, and the pools
        last in one Txn that fails if any of them appeared meanwhile. A crash in between
        leaves addresses held for a pool that is not there yet (`cnipamctl check` names
        them), never a pool whose addresses could be handed out twice."""
        from ..core.docker_pools import pool_serial, refuse_import

        wanted = list(pools)
        rows = list(leases)
        check = Change(self.client, self.keys)
        existing, _ = check.docker_pools()
        check.leases_at((lease.family, lease.address) for lease in rows)  # one round trip per MAX_TXN_OPS

        def overlap(network: Network) -> DockerPool | None:
            return next((pool for pool in existing if pool.network.overlaps(network)), None)

        refuse_import(
            wanted, rows, lambda pool_id: any(pool.id == pool_id for pool in existing), overlap, check.lease_at
        )
        self.import_leases(rows, {})

        def plan(change: Change) -> None:
            current, serial = change.docker_pools()
            for pool in wanted:
                if any(other.id == pool.id for other in current):
                    raise AddressConflict(
                        f"import stopped: pool id {pool.id!r} appeared meanwhile; its addresses are imported"
                    )
                serial = max(serial, pool_serial(pool.id) or 0)
                change.put_docker_pool(pool, serial)

        self._optimistic(plan)
        return len(wanted)

    def release_docker_pool(self, pool_id: str) -> DockerPool:
        """Its addresses in Txns of BATCH, the pool itself with the last of them: a crash
        in between leaves the pool with fewer addresses, never addresses without a pool."""

        def plan(change: Change) -> DockerPool | None:
            pool = change.docker_pool(pool_id)
            between = change.leases_between(pool.family, pool.network.value, pool.network.last)
            victims = [lease for lease in between if lease.network == pool.lease_network]
            change.remove_leases(victims[:BATCH])
            if len(victims) > BATCH:
                return None
            change.delete(self.keys.docker_pool(pool_id))
            return pool

        while True:
            released = self._optimistic(plan)
            if released is not None:
                return released

    def docker_pools(self) -> list[DockerPool]:
        return sorted(Change(self.client, self.keys).docker_pools()[0], key=lambda pool: (pool.created, pool.id))

    def request_docker_address(self, pool_id: str, requested: int | None, serial: bool = False) -> Lease:
        def plan(change: Change) -> Lease:
            pool = change.docker_pool(pool_id)
            if requested is not None:
                pool.check_named(requested)
            return self._allocate(change, pool.owner(), (pool.spec(requested, serial),))[0]

        return self._optimistic(plan, warm=True)

    def release_docker_address(self, pool_id: str, family: int, address: int) -> Lease | None:
        def plan(change: Change) -> Lease | None:
            pool = change.docker_pool(pool_id)
            pool.check_own(family, address)
            found = change.leases_at([(family, address)])
            if not found or not pool.holds(found[0]):
                return None
            change.remove_leases(found)
            return found[0]

        return self._optimistic(plan)

    def problems(self) -> list[str]:
        from .orphans import orphans

        problems: list[str] = []
        leases = list(self._scan_leases())
        by_address = {(lease.family, lease.address): lease for lease, _, _ in leases}
        blocks = {(block.family, block.number): block for block in self.blocks()}
        for (family, address), lease in by_address.items():
            block = blocks.get((family, address >> BLOCK_BITS))
            if block is None or not block.used >> (address & (BLOCK_SIZE - 1)) & 1:
                problems.append(f"{lease.ip}: leased but free in its block's bitmap")
        for block in blocks.values():
            used = block.used
            while used:
                bit = (used & -used).bit_length() - 1
                used &= used - 1
                if (block.family, block.first + bit) not in by_address:
                    problems.append(
                        f"{format_ip(block.family, block.first + bit)}: taken in its block's bitmap but not leased"
                    )
        start = self.keys.under("owner")
        indexed = set()
        for kv in paged(self.client, start, prefix_end(start)):
            indexed.add(kv.key)
            handle, _, slot = kv.key[len(start) :].decode().partition("/")
            target = decode_address(kv.value)
            pointed = by_address.get(target) if target else None
            if pointed is None or pointed.handle != unescape(handle) or pointed.slot != unescape(slot):
                problems.append(
                    f"owner index {unescape(handle)}/{unescape(slot)} "
                    f"points to {kv.value.decode(errors='replace')}, not its lease"
                )
        for lease in by_address.values():
            if lease.handle and self.keys.owner(lease.handle, lease.slot) not in indexed:
                problems.append(f"{lease.ip}: its owner {lease.handle} has no index entry")
        problems.extend(orphans(by_address.values(), self.cursors()))
        return problems[:50]

    def close(self) -> None:
        self.client.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the cluster's own operations (cnipamctl hosts) --------------------------------

    def blocks(self) -> list[Block]:
        found: list[Block] = []
        for family in (4, 6):
            start = self.keys.under("block", str(family))
            found.extend(
                decode_block(family, int(kv.key[len(start) :], 16), kv)
                for kv in paged(self.client, start, prefix_end(start))
            )
        return found

    def hosts(self) -> list[HostSeen]:
        start = self.keys.under("host")
        seen = {
            unescape(kv.key[len(start) :].decode()): float(kv.value or 0)
            for kv in paged(self.client, start, prefix_end(start))
        }
        blocks: dict[str, int] = {}
        for block in self.blocks():
            if block.host:
                blocks[block.host] = blocks.get(block.host, 0) + 1
        leases: dict[str, int] = {}
        for _, _, host in self._scan_leases():
            leases[host] = leases.get(host, 0) + 1
        names = sorted(set(seen) | set(blocks) | set(leases))
        return [HostSeen(name, seen.get(name, 0.0), blocks.get(name, 0), leases.get(name, 0)) for name in names if name]

    def release_host(self, host: str, grace: float) -> tuple[list[Lease], int]:
        """A host that is only quiet would keep using the addresses handed out again,
        hence the grace period. Each release compares the lease's revision as read, so a
        lease that changed meanwhile is left alone."""
        last = {record.host: record.seen for record in self.hosts()}.get(host)
        if last is None:
            raise NotFound(f"no host {host!r} in the store")
        age = time.time() - last
        if age < grace:
            raise AddressConflict(
                f"host {host!r} wrote {age:.0f}s ago, within the grace period of {grace:.0f}s; is it really dead?"
            )
        victims = [(lease, revision) for lease, revision, owner in self._scan_leases() if owner == host]
        released = self._release_seen(victims)
        given_up = 0
        for block in self.blocks():
            if block.host != host:
                continue

            def plan(change: Change, block: Block = block) -> None:
                change.disown(block)

            self._optimistic(plan)
            given_up += 1
        self.client.delete(self.keys.host_seen(host))
        return released, given_up

    # -- steps of a change ---------------------------------------------------------------

    def _reserve_gateways(self, change: Change, spec: PoolSpec, network: str, now: float) -> None:
        for reservation in gateway_reservations(spec, network, now, change.lease_at):
            change.take(reservation.family, reservation.address, claim=False)
            change.add_lease(reservation)

    def _take_requested(self, change: Change, spec: PoolSpec) -> int:
        address = spec.requested
        assert address is not None
        refuse_taken(change.lease_at(spec.family, address))
        change.take(spec.family, address, claim=True)
        return address

    def _take_next(self, change: Change, spec: PoolSpec) -> int:
        cursor = None
        if not spec.lowest_free:
            position = change.cursor(spec.key)
            cursor = position.address if position is not None and position.family == spec.family else None
        windows = search_windows(spec.pieces, cursor)
        for borrow in (False, True):  # own and unclaimed blocks first; other hosts' only when none is left
            for first, last in windows:
                address = change.find_free(spec.family, first, last, borrow)
                if address is not None:
                    change.take(spec.family, address, claim=True)
                    return address
        raise PoolExhausted(f"no free address left in {spec}")

    def _release_seen(self, victims: list[tuple[Lease, int]]) -> list[Lease]:
        """Release leases as they were read: each one only if its key is unchanged since."""
        released: list[Lease] = []
        for batch in _owner_batches(victims):

            def plan(change: Change, batch: list[tuple[Lease, int]] = batch) -> list[Lease]:
                current = {
                    (lease.family, lease.address): lease
                    for lease in change.leases_at([(v.family, v.address) for v, _ in batch])
                }
                still = [
                    lease for lease, revision in batch
                    if (lease.family, lease.address) in current
                    and change.lease_revision(lease.family, lease.address) == revision
                ]  # fmt: skip
                change.remove_leases(still)
                return still

            released.extend(self._optimistic(plan))
        return released

    def _optimistic(self, plan: Callable[[Change], T], warm: bool = False) -> T:
        """Compute a change from fresh reads and commit it if nothing it read has changed;
        otherwise compute it again, until the timeout (then StoreBusy: CNI code 11).

        `warm`: first try on what the last committed change of this process knew (blocks,
        gateways, positions) without reading anything; every fact used is compared, so a
        stale one only costs a failed Txn and a fresh attempt. A long-lived process (the
        agent, the Docker driver) then allocates in one round trip. A refusal computed
        from that knowledge is not trusted: it is computed again from fresh reads."""
        deadline = time.monotonic() + max(self.timeout, 0.001)
        self._lock()
        earlier, stale = self._warm, 0
        try:
            while True:
                change = Change(self.client, self.keys, self._warm if warm else None)
                warm = False
                try:
                    outcome = plan(change)
                except StaleRead as seen:
                    self._warm = None
                    stale += 1
                    if stale > STALE_LIMIT:  # not a race: the store really is inconsistent
                        raise StoreCorrupt(str(seen)) from None
                    self._retried()
                    continue
                except CnipamError:
                    if not change.warm:
                        raise
                    self._warm = None
                    self.warm_misses += 1
                    continue
                revision = change.commit()
                if revision is not None:
                    if revision:
                        self._warm = change.settled(revision, earlier)
                    return outcome
                self._warm = None
                if change.warm:
                    self.warm_misses += 1
                else:
                    self._retried()
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"etcd store {self.keys.prefix.decode()}: too much contention, "
                        f"gave up after {self.retries} retries"
                    )
        finally:
            self._unlock()

    # -- reads ----------------------------------------------------------------------------

    def _scan_leases(self) -> Iterator[tuple[Lease, int, str]]:
        """Every lease with its key's revision and the host that wrote it, in address
        order, read block chunk by block chunk so each range stays bounded."""
        for family in (4, 6):
            start = self.keys.under("block", str(family))
            numbers = [
                int(kv.key[len(start) :], 16) for kv in paged(self.client, start, prefix_end(start), keys_only=True)
            ]
            for index in range(0, len(numbers), CHUNK):
                chunk = numbers[index : index + CHUNK]
                first, last = chunk[0] << BLOCK_BITS, ((chunk[-1] + 1) << BLOCK_BITS) - 1
                for kv in paged(self.client, self.keys.lease(family, first), self.keys.lease(family, last) + b"\x00"):
                    yield decode_lease(self.keys, kv)

    def _leases_of_pool(self, pool: str) -> list[Lease]:
        found: list[Lease] = []
        for address_range in parse_pool_key(pool):
            network = address_range.network
            found.extend(
                lease
                for lease in Change(self.client, self.keys).leases_between(network.family, network.value, network.last)
                if lease.pool == pool
            )
        return found

    # -- the host's writers' queue ------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_fd is not None:
            started = time.monotonic()
            take_lock(self._lock_fd, self.timeout, self._lock_path)
            if self.events is not None:
                self.events.lock_waited(time.monotonic() - started)

    def _retried(self) -> None:
        self.retries += 1
        if self.events is not None:
            self.events.retried()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            flock(self._lock_fd, LOCK_UN)


def _owner_batches(victims: list[tuple[Lease, int]]) -> list[list[tuple[Lease, int]]]:
    """Batches of at most BATCH leases that never split one owner's leases, so a process
    killed between two Txns leaves every owner all of its leases or none. In address order
    a dual-stack attachment's IPv4 and IPv6 leases lie far apart, and a plain slicing left
    such an attachment half-released (found by the crash campaign, campaigns/crash.py)."""
    owners: dict[object, list[tuple[Lease, int]]] = {}
    for victim in victims:
        lease = victim[0]
        owners.setdefault(lease.handle if lease.handle is not None else (lease.family, lease.address), []).append(
            victim
        )
    batches: list[list[tuple[Lease, int]]] = []
    current: list[tuple[Lease, int]] = []
    for leases in owners.values():
        if current and len(current) + len(leases) > BATCH:
            batches.append(current)
            current = []
        for start in range(0, len(leases), BATCH):  # more than BATCH leases of one owner: never from CNI (one per pool)
            current.extend(leases[start : start + BATCH])
            if len(current) >= BATCH:
                batches.append(current)
                current = []
    if current:
        batches.append(current)
    return batches


def _address_order(lease: Lease) -> tuple[int, int]:
    return lease.family, lease.address


def _open_lock(path: str) -> int | None:
    """The host's writers' queue; without a writable place for it the engine still works
    (compares keep it correct), its processes just retry more under contention."""
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
