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
* The life of an address after day one: `boot/<host>`, the boot the host last repaired
  for, and `bootlease/<host>/<boot>/<family>/<address hex>`, an index of the host's CNI
  leases by boot, so a reboot repair reads only earlier boots' leases (core.reboot);
  `kept/<host>/<handle>/<slot>`, the address a repair keeps for an attachment that may
  come back; `sighting/<host>/<network>/<handle>`, when the host's collector first saw
  one of its owners leaked (core.collector). A block also records when its addresses
  were released (the reuse delay, core.reuse), the pool it was claimed for and when its
  host last used it: an empty block its host left idle for `blockIdle` is taken over by
  the next host that allocates there (or given back by `cnipamd`), compared like every
  other change, and never a host's last block of a pool.

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

from ..core.addresses import BITS, format_ip
from ..core.allocator import gateway_reservation, grant, refuse_taken, reserved_subnet, returned_address, search_windows
from ..core.errors import (
    AddressConflict,
    CnipamError,
    InvalidConfig,
    NotFound,
    StoreBusy,
    StoreCorrupt,
    StoreIOError,
)
from ..core.history import COLLECTED, IMPORTED
from ..core.ipam_config import names_ranges, parse_pool_key
from ..core.leases import GATEWAY, LEASE, Cursor, Lease, refuse_changed
from ..core.reuse import NO_DELAY, eligibility, last_resort, older
from .cluster import ClusterStore
from .etcd_change import CHUNK, MAX_TXN_OPS, Change, StaleRead, paged
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
    encode_address,
    escape,
    unescape,
)
from .etcdv3 import delete_op, mod_revision_is, prefix_end, put_op
from .settings import DEFAULT_BLOCK_IDLE
from .trusted_path import UntrustedPath, trusted_path
from .write_lock import take_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
    from typing import TypeVar

    T = TypeVar("T")

    from ..core.addresses import Network
    from ..core.collector import Collection  # run time: in collect_garbage
    from ..core.docker_pools import AddressUse, DockerPool, PoolClaim  # run time: in the Docker methods
    from ..core.history import HistoryRecord, Retention
    from ..core.ipam_config import PoolSpec
    from ..core.leases import Owner
    from ..core.pool_usage import PoolUsage
    from ..core.reuse import ReuseDelay
    from ..core.tenancy import Subject
    from .etcdv3 import EtcdClient
    from .lease_query import LeaseQuery

STALE_LIMIT = 5
BATCH = 20  # leases per Txn when releasing or importing many: each costs up to six operations (its history record)


ADD_STEP = (
    6  # earlier boots' leases (and their owners' others) an ADD releases in its own Txn: well within 128 operations
)


class Rebooted(Exception):
    """An ADD found the host's repair due and the rest of it small: make that last step
    apart (it records the boot), then compute the ADD again."""


class EtcdStore(ClusterStore):
    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        host: str,
        timeout: float,
        lock_path: str | None = None,
        boot: str = "",
        block_idle: float = DEFAULT_BLOCK_IDLE,
        shared_folders: bool = False,
        liveness: bool = True,
    ) -> None:
        """`liveness`: every committed change also records that `host` is alive
        (`host/<host>`, what `hosts list` shows and `release_host` checks); an operator's
        tool passes False, so neither its own machine nor a node it runs on looks alive."""
        if not host or "\x00" in host:
            raise InvalidConfig("store: the host name must be a non-empty string")
        self.client = client
        self.keys = Keys(prefix.encode(), host)
        self.timeout = timeout
        self.boot = boot
        self.block_idle = block_idle
        self.liveness = liveness
        self.clock = time.time
        self.reuse_delays = {}
        self.history_host = host
        self._repaired = False  # this process saw the store repaired for its boot (a boot outlives no process)
        self._repairing = False
        self._stepped = False  # the current call made its step of a due repair
        self._lock_depth = 0
        self.retries = 0  # transactions computed again after a failed compare (benchmarks)
        self.warm_misses = 0  # attempts from this process's own earlier knowledge that turned out stale
        self._lock_fd = _open_lock(lock_path, shared_folders) if lock_path else None
        self._warm: Change | None = None
        self._lock_path = lock_path or ""

    # -- the interface ---------------------------------------------------------------

    def allocate(self, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        return self._optimistic(lambda change: self._allocate(change, owner, pools), warm=True, reads_boot=True)

    def _allocate(self, change: Change, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        for spec in pools:
            self.reuse_delays[spec.key] = spec.reuse.delay
        change.prefetch(owner.handle, pools, boot=self._repair_due())
        due = change.repaired is not None and change.repaired[0] != self.boot
        if due and not self._stepped:  # this call's step of the repair, in the ADD's own Txn while it fits
            self._stepped = True
            step = self._earlier_boot_leases(change, ADD_STEP)
            if len(step) < ADD_STEP:
                raise Rebooted()  # the last step: made apart, it also records the boot
            change.remove_leases([lease for lease, _ in step], repair=True)
        held = change.held_by(owner.handle) if owner.handle else []
        if due and held:  # an attachment back after a reboot: its leases are kept for it, it takes them again
            ended = self._ended(change, held)
            change.remove_leases(ended, repair=True)
            gone = {(lease.family, lease.address) for lease in ended}
            held = [lease for lease in held if (lease.family, lease.address) not in gone]
        return grant(
            owner, pools, held, change.now,
            lambda spec, address, network, now: self._reserve_gateway(change, spec, address, network, now),
            lambda spec: self._take_requested(change, spec),
            lambda spec, owner: self._take_next(change, spec, owner),
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

        return self._optimistic(plan, warm=True)

    def release_gateway(self, family: int, address: int) -> Lease | None:
        def plan(change: Change) -> Lease | None:
            found = change.leases_at([(family, address)])
            if not found or found[0].kind != GATEWAY:
                return None
            subnet = reserved_subnet(found[0])
            if subnet is None:  # recorded before reservations named their subnet: its pool's leases
                users = [lease for lease in self._leases_of_pool(found[0].pool) if lease.kind == LEASE]
            else:
                users = [
                    lease for lease in change.leases_between(family, subnet.value, subnet.last) if lease.kind == LEASE
                ]
            if users:
                served = f"pool {found[0].pool}" if subnet is None else str(subnet)
                raise AddressConflict(f"gateway {found[0].ip} still serves {len(users)} lease(s) of {served}")
            change.remove_leases(found)
            return found[0]

        return self._optimistic(plan)

    def held_by(self, handle: str) -> list[Lease]:
        return self._within_timeout(lambda: sorted(self._change().held_by(handle), key=_address_order))

    def lookup(self, family: int, address: int) -> Lease | None:
        return self._within_timeout(lambda: self._change().lease_at(family, address))

    def leases(self, network: str | None = None) -> list[Lease]:
        return [lease for lease, _, _ in self._scan_leases() if network is None or lease.network == network]

    def cursors(self) -> dict[str, Cursor]:
        start = self.keys.under("cursor", escape(self.keys.host))
        kvs, _ = self.client.range(start, prefix_end(start))
        return {unescape(kv.key[len(start) :].decode()): decode_cursor(kv.value) for kv in kvs}

    def collect_garbage(
        self, network: str, valid: Container[tuple[str, str]], grace: float = 0.0, apply: bool = True
    ) -> Collection:
        """core.collector's pass over the leases this host made (another host's runtime
        is not in `valid`): they are scanned and judged, the sightings written, then each
        due owner is released in a Txn that reads its leases again (compared at commit)
        and asks `valid` again: all of an owner or nothing."""
        from ..core.collector import Collection, judge, leaked_owners  # not at the top: ADD and DEL never need it

        if apply:
            self._stepped = False
            self._repair_if_due()
        now = self.clock()
        revisions = {}
        leased = []
        for lease, revision, host in self._scan_leases():
            if lease.network == network and lease.kind == LEASE and lease.container_id and host == self.keys.host:
                leased.append(lease)
                revisions[lease.family, lease.address] = revision
        leaked = leaked_owners(leased, network, valid)
        seen = self._sightings(network) if grace > 0 else {}
        due, keep = judge(leaked, seen, now, grace)
        candidates = [lease for held in leaked.values() for lease in held]
        if not apply:
            return Collection(candidates, [lease for owner in due for lease in leaked[owner]], keep)
        self._write_sightings(network, seen if grace > 0 else dict.fromkeys(due, now), keep)
        released: list[Lease] = []
        for owner in due:
            held = leaked[owner]

            def plan(change: Change, held: list[Lease] = held) -> list[Lease]:
                current = change.leases_at([(lease.family, lease.address) for lease in held])
                unchanged = [
                    lease
                    for lease in current
                    if lease in held
                    and change.lease_revision(lease.family, lease.address) == revisions[lease.family, lease.address]
                ]
                if len(unchanged) != len(held) or not leaked_owners(unchanged, network, valid):
                    return []  # changed or valid again: the owner keeps everything
                change.release_event = COLLECTED
                change.remove_leases(unchanged)
                return unchanged

            released += self._optimistic(plan)
        return Collection(candidates, released, keep)

    def _sightings(self, network: str) -> dict[str, float]:
        start = self.keys.under("sighting", escape(self.keys.host), escape(network))
        found = {}
        for kv in paged(self.client, start, prefix_end(start)):
            try:
                found[unescape(kv.key[len(start) :].decode())] = float(kv.value)
            except ValueError:
                continue  # a damaged sighting is a sighting not made: the owner waits one more grace period
        return found

    def _write_sightings(self, network: str, seen: dict[str, float], keep: dict[str, float]) -> None:
        """Sightings only delay a release, never cause one unchecked, so they are written
        without compares, in Txns of at most MAX_TXN_OPS operations."""
        ops = [
            put_op(self.keys.sighting(self.keys.host, network, owner), repr(at).encode())
            for owner, at in keep.items()
            if seen.get(owner) != at
        ]
        ops += [delete_op(self.keys.sighting(self.keys.host, network, owner)) for owner in seen if owner not in keep]
        for start in range(0, len(ops), MAX_TXN_OPS):
            self.client.txn([], ops[start : start + MAX_TXN_OPS])

    def earlier_boot_leases(self) -> list[Lease]:
        return [lease for lease, _ in self._earlier_boot_leases(self._change())]

    def _earlier_boot_leases(self, change: Change, limit: int = 0) -> list[tuple[Lease, int]]:
        """This host's leases of earlier boots, found through the boot index (only those
        boots' entries are read), with the revisions read; with `limit`, about that many,
        completed with the other leases of their owners (a step never splits an owner)."""
        if not self.boot:
            return []
        host = escape(self.keys.host)
        start = self.keys.under("bootlease", host)
        current = self.keys.under("bootlease", host, escape(self.boot))
        pairs: list[tuple[int, int]] = []
        for first, end in ((start, current), (prefix_end(current), prefix_end(start))):
            if limit:
                kvs, _ = self.client.range(first, end, limit=limit - len(pairs), keys_only=True)
            else:
                kvs = list(paged(self.client, first, end, keys_only=True))
            for kv in kvs:
                _, family, address = kv.key[len(start) :].decode().split("/")
                pairs.append((int(family), int(address, 16)))
            if limit and len(pairs) >= limit:
                break
        found = self._ended(change, change.leases_at(pairs))
        if limit:
            handles = sorted({lease.handle for lease in found if lease.handle is not None})
            known = {(lease.family, lease.address) for lease in found}
            found += [
                lease
                for lease in self._ended(change, change.held_by_all(handles))
                if (lease.family, lease.address) not in known
            ]
        return [(lease, change.lease_revision(lease.family, lease.address)) for lease in found]

    def _ended(self, change: Change, leases: Iterable[Lease]) -> list[Lease]:
        """The leases a reboot of this host ended (core.reboot), among leases `change` read."""
        from ..core.reboot import ended_by_reboot  # only while a repair is due, or by hand

        return [
            lease for lease in leases
            if ended_by_reboot(lease, self.boot)
            and change.lease_hosts.get((lease.family, lease.address)) == self.keys.host
        ]  # fmt: skip

    def release_earlier_boots(self) -> list[Lease]:
        if not self.boot:
            return []
        self._lock()
        try:
            return self._repair_step(everything=True)
        finally:
            self._unlock()

    def _repair_step(self, everything: bool = False) -> list[Lease]:
        """One step of the repair (core.reboot), under the host's lock: about one Txn's
        worth of the earlier boots' leases released (all of them when `everything`), each
        only if unchanged since read, each address kept for its attachment, positions
        left; when none is left, the addresses earlier repairs kept and nobody came back
        for are forgotten and the boot is recorded, last, so a repair cut short is
        finished by the next call."""
        self._repairing = True
        try:
            check = self._change()
            if check.repaired_boot() == self.boot:
                self._repaired = True
                return []
            recorded = check.repaired[1] if check.repaired else 0
            victims = self._earlier_boot_leases(check, 0 if everything else BATCH)
            released = self._release_seen(victims, repair=True)
            if not everything and len(victims) >= BATCH:
                return released
            start = self.keys.under("kept", escape(self.keys.host))
            stale = [
                delete_op(kv.key)
                for kv in paged(self.client, start, prefix_end(start), keys_only=True)
                if kv.mod_revision < recorded
            ]
            for first in range(0, len(stale), MAX_TXN_OPS):
                self.client.txn([], stale[first : first + MAX_TXN_OPS])

            def record(change: Change) -> None:
                change.repaired_boot()
                key = self.keys.repaired_boot(self.keys.host)
                change.ops[key] = put_op(key, self.boot.encode())

            self._optimistic(record)
        finally:
            self._repairing = False
        self._repaired = True
        return released

    def _repair_due(self) -> bool:
        return bool(self.boot) and not self._repaired and not self._repairing

    def _repair_if_due(self) -> None:
        """A step of the repair, once per call while it is due (one read when it is not,
        once per process: a process never outlives its boot)."""
        if not self._repair_due() or self._stepped:
            return
        self._stepped = True
        self._lock()
        try:
            self._repair_step()
        finally:
            self._unlock()

    def _release_ended_within(self, change: Change, family: int, first: int, last: int) -> bool:
        """While a repair is due: release, in `change`, this host's earlier boots' leases
        inside [first, last] (as many as one Txn holds), so a pool full of them serves."""
        if change.repaired is None or change.repaired[0] == self.boot:
            return False
        ended = self._ended(change, change.leases_between(family, first, last))[: BATCH // 2]
        change.remove_leases(ended, repair=True)
        return bool(ended)

    def release_exactly(self, leases: Sequence[Lease], cursors: Mapping[str, Cursor]) -> None:
        """Checked whole in one read first; then one Txn when it fits, else batches by
        owner, each compared with what the check read."""
        check = self._change()
        refuse_changed(
            leases, check.leases_at([(lease.family, lease.address) for lease in leases]), cursors, self.cursors()
        )
        victims = [(lease, check.lease_revision(lease.family, lease.address)) for lease in leases]
        done = len(self._release_seen(victims))
        if done != len(victims):
            raise AddressConflict(
                f"release stopped after {done} of {len(victims)} lease(s): the rest changed meanwhile"
            )

        def forget(change: Change) -> None:
            for pool, cursor in cursors.items():
                key = self.keys.cursor(pool)
                kvs, _ = self.client.range(key)
                if not kvs or decode_cursor(kvs[0].value) != cursor:
                    raise AddressConflict(f"the position of pool {pool} changed meanwhile; the leases are released")
                change.compares[key] = mod_revision_is(key, kvs[0].mod_revision)
                change.delete(key)

        if cursors:
            self._optimistic(forget)

    def exhausted(self, pools: tuple[PoolSpec, ...]) -> list[PoolSpec]:
        """While a reboot repair is due, a pool whose only addresses are earlier boots'
        leases is not exhausted: the next ADD frees one (core.reboot)."""

        def scan() -> list[PoolSpec]:
            self._stepped = False
            self._repair_if_due()
            change = self._change()
            if self.boot:
                change.repaired_boot()
            return [
                spec for spec in pools
                if all(change.find_free(spec.family, *window, True) is None for window in spec.pieces)
                and not (change.repaired is not None and change.repaired[0] != self.boot and any(
                    self._ended(change, change.leases_between(spec.family, *window)) for window in spec.pieces
                ))
            ]  # fmt: skip

        return self._within_timeout(scan)

    def usage(self, configured: Iterable[PoolSpec] = ()) -> list[PoolUsage]:
        """From every lease and every block, read in bounded chunks (etcd cannot count a
        range's values); a block's `freed` and `kept` times are the resting addresses."""
        from ..core.pool_usage import RowCounts, pool_usage

        pools = {pool.key: pool.lease_network for pool in self.docker_pools()}
        rows = [lease for lease, _, _ in self._scan_leases()]
        return pool_usage(RowCounts(rows, self._released(), pools), configured, self.reuse_delays, self.clock())

    def _released(self) -> Iterator[tuple[int, int, float, bool]]:
        """Every free address a block remembers the release of: (family, address, when, kept)."""
        for family in (4, 6):
            start = self.keys.under("block", str(family))
            for kv in paged(self.client, start, prefix_end(start)):
                block = decode_block(family, int(kv.key[len(start) :], 16), kv)
                for kept, times in ((False, block.freed), (True, block.kept)):
                    for offset, at in times.items():
                        if not block.used >> offset & 1:
                            yield family, block.first + offset, at, kept

    def import_leases(
        self, leases: Iterable[Lease], cursors: dict[str, Cursor], history: Sequence[HistoryRecord] | None = None
    ) -> int:
        """Checked as a whole first, then written in Txns of BATCH leases (etcd caps a Txn
        at 128 operations): a clash found by the check refuses everything; one that appears between
        the check and the last batch (another host allocating at that moment) stops the
        import with the batches before it kept, and says so. The history of an export is
        appended to this host's, after the leases."""
        rows = list(leases)
        seen: set[tuple[int, int]] = set()
        for lease in rows:
            if (lease.family, lease.address) in seen:
                raise AddressConflict(f"import refused: {lease.ip} appears twice in the input")
            seen.add((lease.family, lease.address))
        check = self._change()
        for lease in check.leases_at(sorted(seen)):
            raise AddressConflict(f"import refused: {lease.ip} is already held by {lease.handle or 'a reservation'}")
        written = 0
        now = self.clock()
        for start in range(0, len(rows), BATCH):
            current = rows[start : start + BATCH]

            def plan(change: Change, current: list[Lease] = current, done: int = written) -> None:
                for one in current:
                    if change.leases_at([(one.family, one.address)]):
                        raise AddressConflict(f"import stopped after {done} lease(s): {one.ip} was taken meanwhile")
                    change.take(one.family, one.address, claim=False)
                    change.add_lease(one, IMPORTED if history is None else None, now)  # else the export's records

            self._optimistic(plan)
            written += len(current)
        if cursors:

            def positions(change: Change) -> None:
                for pool, cursor in cursors.items():
                    change.set_cursor(pool, cursor)

            self._optimistic(positions)
        for start in range(0, len(history or ()), MAX_TXN_OPS - 3):

            def append(change: Change, start: int = start) -> None:
                change.history.extend((history or ())[start : start + MAX_TXN_OPS - 3])

            self._optimistic(append)
        return written

    def history(self, subject: Subject | None = None) -> list[HistoryRecord]:
        """Every host's records, read in bounded pages and merged by time (records carry
        no index by address or owner on etcd: the history is bounded, so it is scanned)."""
        from .etcd_history import decode_record

        start = self.keys.under("history")
        found = [decode_record(kv) for kv in paged(self.client, start, prefix_end(start))]
        if subject is not None:
            found = [r for r in found if subject.matches(r.family, r.address, r.handle, r.container_id)]
        return sorted(found, key=lambda record: record.at)

    def history_retention(self) -> Retention:
        from .etcd_history import decode_retention

        return decode_retention(self._within_timeout(lambda: self.client.range(self.keys.history_retention)[0]))

    def set_history_retention(self, retention: Retention) -> None:
        """Each host's next writes apply it to that host's records, a few per write;
        hosts silent for longer than its age lose theirs now."""
        from .etcd_history import encode_retention

        self._within_timeout(lambda: self.client.put(self.keys.history_retention, encode_retention(retention)))
        self.prune_silent_history()

    def prune_silent_history(self) -> list[str]:
        """Delete the history of every host that has appended nothing for longer than the
        retention's age (all of it is past the age), each with its log, only while the
        log is unchanged. Returns those hosts."""
        from .etcd_history import decode_log, silent

        retention = self.history_retention()
        now = self.clock()
        start = self.keys.under("historylog")
        pruned = []
        for kv in paged(self.client, start, prefix_end(start)):
            if not silent(decode_log([kv]), retention, now):
                continue
            host = unescape(kv.key[len(start) :].decode())
            records = self.keys.under("history", escape(host))
            deletes = [delete_op(records, prefix_end(records)), delete_op(kv.key)]
            if self.client.txn([mod_revision_is(kv.key, kv.mod_revision)], deletes).succeeded:
                pruned.append(host)
        return pruned

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
        from ..core.docker_pools import pool_serial, pools_overlapping, refuse_import

        wanted = list(pools)
        rows = list(leases)
        check = self._change()
        existing, _ = check.docker_pools()
        check.leases_at((lease.family, lease.address) for lease in rows)  # one round trip per MAX_TXN_OPS

        refuse_import(
            wanted,
            rows,
            lambda pool_id: any(pool.id == pool_id for pool in existing),
            lambda network: pools_overlapping(existing, network),
            check.lease_at,
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
        return sorted(self._change().docker_pools()[0], key=lambda pool: (pool.created, pool.id))

    def request_docker_address(
        self,
        pool_id: str,
        requested: int | None,
        serial: bool = False,
        reuse: ReuseDelay | None = None,
        use: AddressUse | None = None,
    ) -> Lease:
        from ..core.docker_pools import AddressUse  # not at the top: the plugin never needs it

        def plan(change: Change) -> Lease:
            pool = change.docker_pool(pool_id)
            if requested is not None:
                pool.check_named(requested)
            spec = pool.spec(requested, serial, NO_DELAY if reuse is None else reuse, use)
            return self._allocate(change, pool.owner(use or AddressUse()), (spec,))[0]

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
        problems.extend(self._boot_index_problems(leases))
        for block in blocks.values():
            for offset in (*block.freed, *block.kept):
                if block.used >> offset & 1:
                    problems.append(
                        f"{format_ip(block.family, block.first + offset)}: taken, yet recorded as released in its block"
                    )
        problems.extend(orphans(by_address.values(), self.cursors()))
        return problems[:50]

    def repair(self, apply: bool) -> list[str]:
        """Each fix is one Txn: a block rewritten only while its revision is the one read
        (every allocation and release in it changes the block), an index entry written or
        deleted only while the lease (or the entry) is as read. A fix that loses to a
        concurrent change is computed again from fresh reads (blocks) or left for the next
        run (indexes, which the change that beat it wrote correctly)."""
        from .orphans import orphan_cursors  # only when repairing

        leases = list(self._scan_leases())
        changes = self._repair_blocks(leases, apply) + self._repair_indexes(leases, apply)
        cursors = self.cursors()
        for pool in sorted(orphan_cursors(cursors)):
            changes.append(f"forgot the position of pool {pool}, which lies outside it")
            if apply:
                self.client.delete(self.keys.cursor(pool))
        return changes

    def _repair_blocks(self, leases: list[tuple[Lease, int, str]], apply: bool) -> list[str]:
        expected: dict[tuple[int, int], int] = {}
        for lease, _, _ in leases:
            at = (lease.family, lease.address >> BLOCK_BITS)
            expected[at] = expected.get(at, 0) | 1 << (lease.address & (BLOCK_SIZE - 1))
        known = {(block.family, block.number): block for block in self.blocks()}
        changes = []
        for at in sorted(set(known) | set(expected)):
            block = known.get(at) or self._change().block(*at)
            wanted = expected.get(at, 0)
            resting = sum(1 for offset in (*block.freed, *block.kept) if wanted >> offset & 1)
            if block.used == wanted and not resting:
                continue
            stray, missing = (block.used & ~wanted).bit_count(), (wanted & ~block.used).bit_count()
            changes.append(
                f"block {format_ip(block.family, block.first)}/{block.prefix}: bitmap rebuilt from its leases "
                f"({stray} taken but not leased made free, {missing} leased made taken"
                + (f", {resting} leased no longer recorded as released)" if resting else ")")
            )
            if apply:

                def plan(change: Change, at: tuple[int, int] = at) -> None:
                    block = change.block(*at)
                    first = block.first
                    held = change.leases_between(block.family, first, first + BLOCK_SIZE - 1)
                    block.used = sum(1 << (lease.address - first) for lease in held)
                    for times in (block.freed, block.kept):
                        for offset in [offset for offset in times if block.used >> offset & 1]:
                            del times[offset]
                    change.rewrite_block(block)

                self._optimistic(plan)
        return changes

    def _repair_indexes(self, leases: list[tuple[Lease, int, str]], apply: bool) -> list[str]:
        """The owner index (handle and slot -> address) and the boot index (host and boot ->
        address) named by the leases, no more and no less."""
        changes: list[str] = []
        by_address = {(lease.family, lease.address): (lease, revision) for lease, revision, _ in leases}
        owners = {self.keys.owner(lease.handle, lease.slot): lease for lease, _, _ in leases if lease.handle}
        boots = {
            self.keys.boot_lease(host, lease.boot, lease.family, lease.address): lease
            for lease, _, host in leases
            if lease.boot
        }
        for kind, wanted, value in (("owner", owners, True), ("bootlease", boots, False)):
            start = self.keys.under(kind)
            for kv in paged(self.client, start, prefix_end(start)):
                lease = wanted.pop(kv.key, None)
                if lease is not None and (not value or kv.value == encode_address(lease.family, lease.address)):
                    continue
                name = kv.key[len(start) :].decode(errors="replace")
                changes.append(f"{kind} index entry {name}: deleted, it names no such lease")
                if apply:
                    self.client.txn([mod_revision_is(kv.key, kv.mod_revision)], [delete_op(kv.key)])
            for key, lease in sorted(wanted.items()):
                changes.append(f"{lease.ip}: its {kind} index entry written again")
                if apply:
                    lease_key = self.keys.lease(lease.family, lease.address)
                    compares = [mod_revision_is(lease_key, by_address[lease.family, lease.address][1])]
                    written = encode_address(lease.family, lease.address) if value else b""
                    self.client.txn(compares, [put_op(key, written)])
        return changes

    def _boot_index_problems(self, leases: list[tuple[Lease, int, str]]) -> list[str]:
        """Every lease that records a boot has its entry in the boot index, and every
        entry names such a lease: a repair trusts the index to find them all."""
        problems = []
        expected = {
            self.keys.boot_lease(host, lease.boot, lease.family, lease.address): lease
            for lease, _, host in leases
            if lease.boot
        }
        start = self.keys.under("bootlease")
        for kv in paged(self.client, start, prefix_end(start), keys_only=True):
            if expected.pop(kv.key, None) is None:
                problems.append(
                    f"boot index entry {kv.key[len(start) :].decode(errors='replace')}"
                    " names no lease of that host and boot"
                )
        problems.extend(f"{lease.ip}: its boot {lease.boot} has no index entry" for lease in expected.values())
        return problems

    def close(self) -> None:
        self.client.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the cluster's own operations (cnipamctl hosts) --------------------------------

    def blocks(self) -> list[Block]:
        """Blocks a host claimed or that hold an address (not those kept only to remember
        when their addresses were released)."""
        found: list[Block] = []
        for family in (4, 6):
            start = self.keys.under("block", str(family))
            for kv in paged(self.client, start, prefix_end(start)):
                block = decode_block(family, int(kv.key[len(start) :], 16), kv)
                if block.host or block.used:
                    found.append(block)
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
        gateways: dict[str, int] = {}
        for lease, _, host in self._scan_leases():
            counted = leases if lease.kind == LEASE else gateways
            counted[host] = counted.get(host, 0) + 1
        names = sorted(set(seen) | set(blocks) | set(leases) | set(gateways))
        return [
            HostSeen(name, seen.get(name, 0.0), blocks.get(name, 0), leases.get(name, 0), gateways.get(name, 0))
            for name in names
            if name
        ]

    def return_idle_blocks(self) -> list[Block]:
        """Give every empty block whose host left it unused for `block_idle` back to the
        shared pool, except one block per host and pool: a non-empty one if the host has
        one, else the one it touched last. Each return compares the block and the one its
        host keeps, so a block used meanwhile, or two returns that each counted on the
        other's block, never land."""
        if not self.block_idle:
            return []
        now = self.clock()
        groups: dict[tuple[str, str], list[Block]] = {}
        for block in self.blocks():
            if block.host:
                groups.setdefault((block.host, block.pool), []).append(block)
        returned: list[Block] = []
        for blocks in groups.values():
            keeper = max(blocks, key=lambda block: (block.used != 0, block.touched))
            for block in blocks:
                if block is keeper or block.used or block.touched > now - self.block_idle:
                    continue

                def plan(change: Change, block: Block = block, keeper: Block = keeper) -> bool:
                    current = change.block(block.family, block.number)
                    if current.revision != block.revision:
                        return False
                    change.disown(current, keeper)
                    return True

                if self._optimistic(plan):
                    returned.append(block)
        return returned

    def repair_block(self, family: int, number: int, revision: int, clear: int, disown: bool) -> None:
        def plan(change: Change) -> None:
            block = change.block(family, number)
            where = f"{format_ip(family, block.first)}/{block.prefix}"
            if block.revision != revision:
                raise AddressConflict(f"block {where} changed since the report was made; nothing was changed in it")
            bits = [offset for offset in range(BLOCK_SIZE) if clear >> offset & 1]
            held = change.leases_at([(family, block.first + offset) for offset in bits])
            if held:
                raise AddressConflict(f"{held[0].ip} in block {where} is leased now; nothing was changed in it")
            block.used &= ~clear
            if disown:
                block.host, block.pool = "", ""
            change.rewrite_block(block)

        self._optimistic(plan)

    def release_host(self, host: str, grace: float) -> tuple[list[Lease], int]:
        """A host that is only quiet would keep using the addresses handed out again,
        hence the grace period. Each release compares the lease's revision as read, so a
        lease that changed meanwhile is left alone. What the host kept for itself (its
        repaired boot, sightings, kept addresses) goes with it."""
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
        for kind in ("sighting", "kept", "cursor"):  # its collector's sightings, what its repairs kept, its positions
            start = self.keys.under(kind, escape(host))
            self.client.delete(start, prefix_end(start))
        self.client.delete(self.keys.repaired_boot(host))
        return released, given_up

    # -- steps of a change ---------------------------------------------------------------

    def _reserve_gateway(self, change: Change, spec: PoolSpec, address: int, network: str, now: float) -> int | None:
        gateway, reservation = gateway_reservation(spec, address, network, now, change.lease_at)
        if reservation is not None:
            if change.lease_at(reservation.family, reservation.address) is None:
                change.take(reservation.family, reservation.address, claim=False)
                change.add_lease(reservation)
            else:
                change.rewrite_lease(reservation)
        return gateway

    def _take_requested(self, change: Change, spec: PoolSpec) -> int:
        address = spec.requested
        assert address is not None
        refuse_taken(change.lease_at(spec.family, address))
        change.take(spec.family, address, claim=True, pool=spec.key)
        return address

    def _take_next(self, change: Change, spec: PoolSpec, owner: Owner) -> int:
        """The address a repair kept for the owner, else the first eligible one (core.reuse):
        own and unclaimed blocks first, other hosts' only when none is left; else what
        core.reuse.last_resort says."""
        family = spec.family
        if owner.handle is not None:
            kept = change.kept_address(owner.handle, spec.slot)
            address = returned_address(spec, kept)
            if (
                address is not None
                and not change.block(family, address >> BLOCK_BITS).used >> (address & (BLOCK_SIZE - 1)) & 1
            ):
                change.take(family, address, claim=True, pool=spec.key)
                change.forget_kept(owner.handle, spec.slot)
                return address
            if kept is not None:
                change.forget_kept(owner.handle, spec.slot)  # taken by another meanwhile: nothing to keep any more
        cursor = None
        if not spec.lowest_free:
            position = change.cursor(spec.key)
            cursor = position.address if position is not None and position.family == spec.family else None
        windows = search_windows(spec.pieces, cursor)
        rule = eligibility(spec.reuse, change.now)
        for borrow in (False, True):  # own and unclaimed blocks first; other hosts' only when none is left
            for first, last in windows:
                address = change.find_free(family, first, last, borrow, rule)
                if address is not None:
                    change.take(family, address, claim=True, pool=spec.key)
                    return address
        for first, last in windows:  # a pool full of earlier boots' leases serves a new container at once
            self._release_ended_within(change, family, first, last)
        cooling = held = None
        for first, last in windows:
            cooling = older(cooling, change.oldest_released(family, first, last, False))
            held = older(held, change.oldest_released(family, first, last, True))
        address = last_resort(spec, cooling, held, change.now)
        change.take(family, address, claim=True, pool=spec.key)
        return address

    def _release_seen(self, victims: list[tuple[Lease, int]], repair: bool = False) -> list[Lease]:
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
                change.remove_leases(still, repair)
                return still

            released.extend(self._optimistic(plan))
        return released

    def _change(self, warm: Change | None = None) -> Change:
        return Change(self.client, self.keys, warm, self.clock(), self.block_idle, self.liveness)

    def _optimistic(self, plan: Callable[[Change], T], warm: bool = False, reads_boot: bool = False) -> T:
        """Compute a change from fresh reads and commit it if nothing it read has changed;
        otherwise compute it again, until the timeout (then StoreBusy: CNI code 11).

        `warm`: first try on what the last committed change of this process knew (blocks,
        gateways, positions, the leases it wrote) without reading anything; every fact
        used is compared, so a stale one only costs a failed Txn and a fresh attempt. A
        long-lived process (the agent, the Docker driver) then allocates, and releases
        what it allocated, in one round trip. A refusal computed from that knowledge is
        not trusted, nor is "nothing to write" (Change.commit): both are checked again.

        In a store opened with a boot, the reboot repair comes first when due: checked
        here with one read, unless the plan reads the boot with its own reads
        (`reads_boot`) and raises Rebooted."""
        return self._within_timeout(lambda: self._optimistic_within(plan, warm, reads_boot))

    def _optimistic_within(self, plan: Callable[[Change], T], warm: bool, reads_boot: bool) -> T:
        deadline = self.client.deadline or time.monotonic() + self.client.timeout
        if self._lock_depth == 0:
            self._stepped = False  # a new call
        self._lock(deadline)
        earlier, stale = self._warm, 0
        try:
            if not reads_boot:
                self._repair_if_due()
            while True:
                change = self._change(self._warm if warm else None)
                if change.log is None and self._warm is not None:
                    # the host's history log as this process last wrote it, compared at commit like any fact
                    change.log, change.retention = self._warm.log, self._warm.retention
                warm = False
                try:
                    outcome = plan(change)
                except Rebooted:
                    self._stepped = False
                    self._repair_if_due()
                    continue
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
                    if change.repaired is not None and change.repaired[0] == self.boot:
                        self._repaired = True
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

    def _scan_leases(
        self, within: Network | None = None, after: tuple[int, int] | None = None
    ) -> Iterator[tuple[Lease, int, str]]:
        """Every lease (inside `within`, after `after`) with its key's revision and the
        host that wrote it, in address order, read block chunk by block chunk so each
        range stays bounded."""
        for family in (4, 6):
            low, high = 0, (1 << BITS[family]) - 1
            if within is not None:
                if within.family != family:
                    continue
                low, high = within.value, within.last
            if after is not None and after[0] >= family:
                if after[0] > family or after[1] >= high:
                    continue
                low = max(low, after[1] + 1)
            start = self.keys.under("block", str(family))
            numbers = [
                number
                for kv in paged(self.client, start, prefix_end(start), keys_only=True)
                if low >> BLOCK_BITS <= (number := int(kv.key[len(start) :], 16)) <= high >> BLOCK_BITS
            ]
            for index in range(0, len(numbers), CHUNK):
                chunk = numbers[index : index + CHUNK]
                first = max(chunk[0] << BLOCK_BITS, low)
                last = min(((chunk[-1] + 1) << BLOCK_BITS) - 1, high)
                for kv in paged(self.client, self.keys.lease(family, first), self.keys.lease(family, last) + b"\x00"):
                    yield decode_lease(self.keys, kv)

    def scan_leases(self, query: LeaseQuery) -> Iterator[Lease]:
        if query.handle is not None:  # the owner index names its few addresses
            yield from (lease for lease in self.held_by(query.handle) if query.matches(lease))
            return
        for lease, _, _ in self._scan_leases(query.within, query.after):
            if query.matches(lease):
                yield lease

    def _leases_of_pool(self, pool: str) -> list[Lease]:
        if not names_ranges(pool):  # a digest: only a scan finds them (cnipamctl's release of a gateway)
            return [lease for lease, _, _ in self._scan_leases() if lease.pool == pool]
        found: list[Lease] = []
        for address_range in parse_pool_key(pool):
            network = address_range.network
            found.extend(
                lease
                for lease in self._change().leases_between(network.family, network.value, network.last)
                if lease.pool == pool
            )
        return found

    # -- the host's writers' queue ------------------------------------------------------

    def _within_timeout(self, work: Callable[[], T]) -> T:
        """One operation, one deadline: the host's lock, every request and every retry
        share the timeout (an operation inside another keeps the outer one's). Scans
        over the whole store (GC, cnipamctl) are not one operation: each of their
        transactions is."""
        client = self.client
        if client.deadline is not None:
            return work()
        client.deadline = time.monotonic() + client.timeout  # the store's timeout, at least the client's floor
        try:
            return work()
        finally:
            client.deadline = None

    def _lock(self, deadline: float | None = None) -> None:
        """Re-entrant: a repair runs inside the change that found it due. The wait ends at
        `deadline`, else at the current operation's, else a timeout from now."""
        if self._lock_depth == 0 and self._lock_fd is not None:
            if deadline is None:
                deadline = self.client.deadline or time.monotonic() + self.timeout
            started = time.monotonic()
            take_lock(self._lock_fd, max(deadline - started, 0.0), self._lock_path)
            if self.events is not None:
                self.events.lock_waited(time.monotonic() - started)
        self._lock_depth += 1

    def _retried(self) -> None:
        self.retries += 1
        if self.events is not None:
            self.events.retried()

    def _unlock(self) -> None:
        self._lock_depth -= 1
        if self._lock_depth == 0 and self._lock_fd is not None:
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


def _open_lock(path: str, shared_folders: bool) -> int | None:
    """The host's writers' queue; without a writable place for it the engine still works
    (compares keep it correct), its processes just retry more under contention. A place
    another user could have prepared (trusted_path: their link, a folder they can change)
    is refused, not skipped: the operator named it, and it would let them make root
    create the lock file wherever they like."""
    try:
        real = trusted_path(path, create=True, shared_folders=shared_folders)
        return os.open(real, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except UntrustedPath:
        raise
    except (OSError, StoreIOError):
        return None
