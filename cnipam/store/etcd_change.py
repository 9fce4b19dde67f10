"""One optimistic etcd transaction of the cluster engine (`Change`).

A plan (an allocation, a release, a pool claim) reads through a `Change` and writes into
it; every key a decision was based on becomes a compare of its revision, and `commit`
sends the compares and the writes as one Txn, which fails as a whole when anything read
has changed meanwhile. The engine (etcd.py) then computes the plan again.
"""

from __future__ import annotations

import time

from ..core.addresses import BITS, format_ip
from ..core.allocator import reserved_subnet
from ..core.errors import NotFound, StoreBusy
from ..core.history import ALLOCATED, RELEASED, REPAIRED, record_of
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
from ..core.reuse import FORGET_AFTER, Freed, older
from .etcd_history import HistoryLog, decode_log, decode_retention, encode_log, encode_record
from .etcd_keys import (
    BLOCK_BITS,
    HEX,
    Block,
    Keys,
    decode_address,
    decode_block,
    decode_cursor,
    decode_docker_pool,
    decode_lease,
    encode_address,
    encode_block,
    encode_cursor,
    encode_docker_pool,
    encode_lease,
    escape,
    unescape,
)
from .etcdv3 import (
    create_revision_is,
    delete_op,
    mod_revision_is,
    nothing_in,
    prefix_end,
    put_op,
    range_op,
    unchanged_since,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ..core.docker_pools import DockerPool
    from ..core.history import HistoryRecord, Retention
    from ..core.ipam_config import PoolSpec
    from ..core.reuse import Eligibility
    from .etcdv3 import EtcdClient, KeyValue

CHUNK = 64  # blocks per bounded range read
MAX_TXN_OPS = 128  # etcd's default limit on the compares, and on the operations, of one Txn


class StaleRead(Exception):
    """Two reads of one change disagree: another host wrote between them. The change is
    computed again; only when it persists is it the store's fault."""


class Change:
    """One optimistic transaction: what was read (and at which revision) and what to write.

    Reads are cached, so a plan that looks at a key twice sees it once; writes go to
    `ops`, and every key a decision was based on goes to `compares`. `commit` sends both
    as one Txn.
    """

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        warm: Change | None = None,
        now: float | None = None,
        idle: float = 0.0,
        liveness: bool = True,
    ) -> None:
        self.client = client
        self.keys = keys
        self.liveness = liveness  # the commit records that the host is alive (EtcdStore)
        self.now = time.time() if now is None else now  # the engine's clock, read once per attempt
        self.idle = idle  # an empty block its host has not touched for this long may be taken over (0: never)
        self.compares: dict[bytes, dict[str, object]] = {}
        self.ops: dict[bytes, dict[str, object]] = {}
        self.blocks: dict[tuple[int, int], Block] = {}
        self.chunks: set[tuple[int, int]] = set()
        self.found: dict[tuple[int, int], tuple[Lease | None, int]] = {}  # lease reads: (lease, mod revision)
        self.cursors: dict[str, Cursor | None] = {}
        self.owners: dict[str, list[KeyValue]] = {}
        self.kept: dict[tuple[str, str], tuple[int, int] | None] = {}  # (handle, slot) -> address a repair keeps for it
        self.kept_read: set[str] = set()  # handles whose kept addresses were read
        self.lease_hosts: dict[tuple[int, int], str] = {}  # the host that wrote each lease read
        self.repaired: tuple[str, int] | None = None  # the host's repaired boot and its revision, when read
        self.taken_over: dict[tuple[int, int], Block] = {}  # another host's idle empty block -> the block it keeps
        self.written_blocks: set[tuple[int, int]] = set()
        self.written_leases: dict[tuple[int, int], bool] = {}  # True: put, False: deleted
        self.history: list[HistoryRecord] = []  # records this change appends (etcd_history.py)
        self.release_event = RELEASED  # what the releases of this change are (a collector's: COLLECTED)
        self.log: HistoryLog | None = None  # the host's history log, once read
        self.retention: tuple[Retention, int] | None = None  # the store's, and its key's revision
        self.warm = warm is not None
        if warm is not None:
            self.log, self.retention = warm.log, warm.retention
            self.blocks = {at: block.copy() for at, block in warm.blocks.items()}
            self.chunks = set(warm.chunks)
            self.found = dict(warm.found)
            self.lease_hosts = dict(warm.lease_hosts)
            self.cursors = dict(warm.cursors)

    def settled(self, revision: int, earlier: Change | None) -> Change:
        """This change as committed at `revision`: what the next warm change may start from,
        completed with what `earlier` knew and this change did not read (a DEL reads no
        positions or gateways, and the ADD after it should not have to read them again).
        Older facts are compared like any other, so a stale one costs a retry, never an error."""
        for at in self.written_blocks:
            block = self.blocks[at]
            block.revision = revision if stored(block) else 0
        for pair, put in self.written_leases.items():
            self.found[pair] = (self.found[pair][0], revision) if put else (None, 0)
        if self.history and self.log is not None:
            log = self.log
            self.log = HistoryLog(log.next, log.oldest, log.marks, log.written, revision)
        self.history, self.release_event = [], RELEASED
        if earlier is not None and earlier is not self:
            if self.log is None:
                self.log, self.retention = earlier.log, earlier.retention
            unread = earlier.chunks - self.chunks
            self.chunks |= unread
            self.blocks.update({at: block for at, block in earlier.blocks.items() if (at[0], at[1] // CHUNK) in unread})
            for pair, fact in earlier.found.items():
                self.found.setdefault(pair, fact)
            for pair, host in earlier.lease_hosts.items():
                self.lease_hosts.setdefault(pair, host)
            for pool, cursor in earlier.cursors.items():
                self.cursors.setdefault(pool, cursor)
        self.compares, self.ops, self.owners = {}, {}, {}
        self.kept, self.kept_read, self.taken_over, self.repaired = {}, set(), {}, None
        self.written_blocks, self.written_leases = set(), {}
        return self

    # reads

    def prefetch(self, handle: str | None, pools: tuple[PoolSpec, ...], boot: bool = False) -> None:
        """Everything an ADD is going to read, in two round trips instead of one per
        key: the owner's index and the addresses a repair keeps for it, the gateways, the
        positions (and the host's repaired boot, when `boot`), then the blocks they fall in."""
        ops: list[dict[str, object]] = []
        parse: list[tuple[str, str | tuple[int, int]]] = []
        if handle and handle not in self.owners and self.warm:
            self.owners[handle] = []  # assumed none: the new owner key's create compare checks it
            for spec in pools:  # likewise no kept address: compared absent, so one that exists means a cold retry
                key = self.keys.kept(self.keys.host, handle, spec.slot)
                self.compares.setdefault(key, create_revision_is(key, 0))
                self.kept[handle, spec.slot] = None
            self.kept_read.add(handle)
        elif handle and handle not in self.owners:
            start = self.keys.under("owner", escape(handle))
            ops.append(range_op(start, prefix_end(start)))
            parse.append(("owner", handle))
            start = self.keys.under("kept", escape(self.keys.host), escape(handle))
            ops.append(range_op(start, prefix_end(start)))
            parse.append(("kept", handle))
        if boot and self.repaired is None:
            ops.append(range_op(self.keys.repaired_boot(self.keys.host)))
            parse.append(("boot", ""))
        if self.log is None:  # the history this ADD appends to: read with the rest, not at commit
            ops += self._history_reads()
            parse += [("log", ""), ("retention", "")]
        for spec in pools:
            gateway = _likely_gateway(spec, self.cursors.get(spec.key))
            if gateway is not None and (spec.family, gateway) not in self.found:
                ops.append(range_op(self.keys.lease(spec.family, gateway)))
                parse.append(("lease", (spec.family, gateway)))
            if not spec.lowest_free and spec.key not in self.cursors:
                ops.append(range_op(self.keys.cursor(spec.key)))
                parse.append(("cursor", spec.key))
        if ops:
            log: list[KeyValue] = []
            for (kind, what), kvs in zip(parse, self.client.txn([], ops).responses, strict=True):
                if isinstance(what, tuple):
                    self._found(what, kvs)
                elif kind == "owner":
                    self.owners[what] = kvs or []
                elif kind == "kept":
                    self._kept_read(what, kvs or [])
                elif kind == "boot":
                    self._repaired_read(kvs or [])
                elif kind == "log":
                    log = kvs or []
                elif kind == "retention":
                    self._history_read(log, kvs or [])
                else:
                    self.cursors[what] = decode_cursor(kvs[0].value) if kvs else None
        chunks: list[tuple[int, int]] = []
        for spec in pools:
            position = self.cursors.get(spec.key)
            gateway = _likely_gateway(spec, position)
            addresses = (_next_try(spec, position),) if gateway is None else (_next_try(spec, position), gateway)
            chunks.extend((spec.family, address >> BLOCK_BITS) for address in addresses)
        self.load_blocks(chunks)

    def repaired_boot(self) -> str:
        """The boot this host last repaired for ("" if never), compared at commit."""
        if self.repaired is None:
            kvs, _ = self.client.range(self.keys.repaired_boot(self.keys.host))
            self._repaired_read(kvs)
        assert self.repaired is not None
        return self.repaired[0]

    def _repaired_read(self, kvs: list[KeyValue]) -> None:
        self.repaired = (kvs[0].value.decode(errors="replace"), kvs[0].mod_revision) if kvs else ("", 0)
        key = self.keys.repaired_boot(self.keys.host)
        self.compares[key] = mod_revision_is(key, self.repaired[1])

    def kept_address(self, handle: str, slot: str) -> tuple[int, int] | None:
        """The address a repair keeps for this attachment's slot, if any."""
        if handle not in self.kept_read:
            start = self.keys.under("kept", escape(self.keys.host), escape(handle))
            kvs, _ = self.client.range(start, prefix_end(start))
            self._kept_read(handle, kvs)
        return self.kept.get((handle, slot))

    def _kept_read(self, handle: str, kvs: list[KeyValue]) -> None:
        self.kept_read.add(handle)
        start = self.keys.under("kept", escape(self.keys.host), escape(handle))
        for kv in kvs:
            self.kept[handle, unescape(kv.key[len(start) :].decode())] = decode_address(kv.value)
            self.compares[kv.key] = mod_revision_is(kv.key, kv.mod_revision)

    def forget_kept(self, handle: str, slot: str) -> None:
        if self.kept.get((handle, slot)) is not None:
            key = self.keys.kept(self.keys.host, handle, slot)
            self.ops[key] = delete_op(key)
            self.kept[handle, slot] = None

    def held_by(self, handle: str) -> list[Lease]:
        start = self.keys.under("owner", escape(handle))
        if handle in self.owners:
            kvs = self.owners[handle]
        elif self.warm and any(lease is not None and lease.handle == handle for lease, _ in self.found.values()):
            return self._known_held_by(handle)
        else:  # with the history log a DEL appends to, in the one round trip
            history = self._history_reads()
            responses = self.client.txn([], [range_op(start, prefix_end(start)), *history]).responses
            kvs = responses[0] or []
            if history:
                self._history_read(responses[1] or [], responses[2] or [])
        targets = [target for target in (decode_address(kv.value) for kv in kvs) if target is not None]
        for kv in kvs:
            self.compares[kv.key] = mod_revision_is(kv.key, kv.mod_revision)
        return [lease for lease in self.leases_at(targets) if lease.handle == handle]

    def _known_held_by(self, handle: str) -> list[Lease]:
        """The leases of `handle` this process knows from its earlier changes, without a
        read: the commit compares that each is unchanged, that its owner key is the one
        written with it, and that the owner's index holds no other key (one of this host's
        runtimes made the ADD through the same cnipamd, the usual case). Knowledge that no
        longer holds fails the Txn, and the release is computed again from fresh reads."""
        known = sorted(
            (
                (lease, revision)
                for lease, revision in self.found.values()
                if lease is not None and lease.handle == handle
            ),
            key=lambda item: self.keys.owner(handle, item[0].slot),
        )
        for lease, revision in known:
            key = self.keys.lease(lease.family, lease.address)
            self.compares.setdefault(key, mod_revision_is(key, revision))
            owner = self.keys.owner(handle, lease.slot)
            self.compares[owner] = mod_revision_is(owner, revision)  # written in the Txn that wrote the lease
        start = self.keys.under("owner", escape(handle))
        self._nothing_else(start, prefix_end(start), [self.keys.owner(handle, lease.slot) for lease, _ in known])
        return [lease for lease, _ in known]

    def _nothing_else(self, start: bytes, end: bytes, present: list[bytes]) -> None:
        """Compare that [start, end) holds no key but `present` (sorted): each gap is empty."""
        low = start
        for key in [*present, end]:
            if low < key:
                self.compares[b"\x00gap " + low] = nothing_in(low, key)
            low = key + b"\x00"

    def held_by_all(self, handles: list[str]) -> list[Lease]:
        """The leases of several owners: their index ranges in one round trip, then their leases."""
        for start in range(0, len(handles), MAX_TXN_OPS):
            some = [handle for handle in handles[start : start + MAX_TXN_OPS] if handle not in self.owners]
            firsts = [self.keys.under("owner", escape(handle)) for handle in some]
            if some:
                for handle, kvs in zip(
                    some, self.client.txn([], [range_op(f, prefix_end(f)) for f in firsts]).responses, strict=True
                ):
                    self.owners[handle] = kvs or []
        return [lease for handle in handles for lease in self.held_by(handle)]

    def leases_at(self, addresses: Iterable[tuple[int, int]]) -> list[Lease]:
        """The leases of these addresses, read in one round trip for those not yet read."""
        wanted = list(dict.fromkeys(addresses))
        missing = [pair for pair in wanted if pair not in self.found]
        for start in range(0, len(missing), MAX_TXN_OPS):
            some = missing[start : start + MAX_TXN_OPS]
            result = self.client.txn([], [range_op(self.keys.lease(*pair)) for pair in some])
            for pair, kvs in zip(some, result.responses, strict=True):
                self._found(pair, kvs)
        for pair in wanted:  # a fact known from an earlier change is compared all the same
            key = self.keys.lease(*pair)
            self.compares.setdefault(key, mod_revision_is(key, self.found[pair][1]))
        return [lease for lease in (self.found[pair][0] for pair in wanted) if lease is not None]

    def lease_at(self, family: int, address: int) -> Lease | None:
        found = self.leases_at([(family, address)])
        return found[0] if found else None

    def _found(self, pair: tuple[int, int], kvs: list[KeyValue] | None) -> None:
        if kvs:
            lease, revision, host = decode_lease(self.keys, kvs[0])
            self.found[pair] = (lease, revision)
            self.lease_hosts[pair] = host
        else:
            self.found[pair] = (None, 0)
        key = self.keys.lease(*pair)
        self.compares.setdefault(key, mod_revision_is(key, self.found[pair][1]))

    def lease_revision(self, family: int, address: int) -> int:
        return self.found[family, address][1]

    def leases_between(self, family: int, first: int, last: int) -> list[Lease]:
        found = []
        for kv in paged(self.client, self.keys.lease(family, first), self.keys.lease(family, last) + b"\x00"):
            lease, revision, host = decode_lease(self.keys, kv)
            self.found[lease.family, lease.address] = (lease, revision)
            self.lease_hosts[lease.family, lease.address] = host
            found.append(lease)
        return found

    def block(self, family: int, number: int) -> Block:
        if (family, number) not in self.blocks:
            self.load_blocks([(family, number)])
        return self.blocks[family, number]

    def load_blocks(self, numbers: Iterable[tuple[int, int]]) -> None:
        """Read the chunks of CHUNK blocks these blocks fall in, in one round trip."""
        wanted = sorted({(family, number // CHUNK) for family, number in numbers} - self.chunks)
        for start in range(0, len(wanted), MAX_TXN_OPS):
            self._load_chunks(wanted[start : start + MAX_TXN_OPS])

    def _load_chunks(self, chunks: list[tuple[int, int]]) -> None:
        ops = []
        for family, chunk in chunks:
            first, end = chunk * CHUNK, min(chunk * CHUNK + CHUNK, 1 << (BITS[family] - BLOCK_BITS))
            ops.append(range_op(self.keys.block(family, first), self.keys.block(family, end - 1) + b"\x00"))
        for (family, chunk), kvs in zip(chunks, self.client.txn([], ops).responses, strict=True):
            self.chunks.add((family, chunk))
            start = len(self.keys.block(family, 0)) - (HEX[family] - 2)
            for kv in kvs or []:
                block = decode_block(family, int(kv.key[start:], 16), kv)
                self.blocks.setdefault((family, block.number), block)
            first, end = chunk * CHUNK, min(chunk * CHUNK + CHUNK, 1 << (BITS[family] - BLOCK_BITS))
            for missing in range(first, end):
                self.blocks.setdefault((family, missing), Block(family, missing, "", 0, 0))

    def find_free(
        self, family: int, first: int, last: int, borrow: bool, rule: Eligibility | None = None
    ) -> int | None:
        """The lowest free address of [first, last] that `rule` allows (None: any free
        one), in a block this host may use: its own, an unclaimed one, or another host's
        empty block that host left idle (taken over, if that host keeps another block of
        the pool); or any block when `borrow`."""
        me = self.keys.host
        number = first >> BLOCK_BITS
        while number <= last >> BLOCK_BITS:
            block = self.block(family, number)
            if borrow or block.host in ("", me) or self.may_take_over(block):
                low = max(first, block.first) - block.first
                high = min(last, block.last) - block.first
                free = ~block.used & ((1 << (high + 1)) - (1 << low))
                if rule is not None:
                    free &= ~resting(block, rule)
                if free:
                    return block.first + (free & -free).bit_length() - 1
            number += 1
        return None

    def oldest_released(self, family: int, first: int, last: int, kept: bool) -> Freed | None:
        """The free address of [first, last] released longest ago, among those a repair
        keeps (`kept`) or the others; every block of the range is loaded by then."""
        best: Freed | None = None
        for number in range(first >> BLOCK_BITS, (last >> BLOCK_BITS) + 1):
            block = self.block(family, number)
            for offset, at in (block.kept if kept else block.freed).items():
                address = block.first + offset
                if first <= address <= last and not block.used >> offset & 1:
                    best = older(best, Freed(address, at, kept))
        return best

    def may_take_over(self, block: Block) -> bool:
        """Another host's empty block that host has not touched for `idle`, when a block
        loaded here shows that host keeps another block of the same pool (a live host
        always keeps one). The block kept is compared at commit, so two takeovers that
        each counted on the other's block cannot both land."""
        if (
            not self.idle
            or not block.host
            or block.host == self.keys.host
            or block.used
            or block.touched > self.now - self.idle
        ):
            return False
        at = (block.family, block.number)
        if at in self.taken_over:
            return True
        keeper = next(
            (
                other for other in self.blocks.values()
                if other.host == block.host and other.pool == block.pool and other is not block
                and (other.family, other.number) not in self.taken_over
            ),
            None,
        )  # fmt: skip
        if keeper is None:
            return False
        self.taken_over[at] = keeper
        return True

    def cursor(self, pool: str) -> Cursor | None:
        if pool not in self.cursors:
            kvs, _ = self.client.range(self.keys.cursor(pool))
            self.cursors[pool] = decode_cursor(kvs[0].value) if kvs else None
        return self.cursors[pool]

    def docker_pools(self) -> tuple[list[DockerPool], int]:
        """Every Docker pool and the id counter, both compared at commit: a pool claim
        decided on this view fails if any pool appeared or went meanwhile."""
        counter = self.keys.docker_counter
        start = self.keys.under("dpool")
        result = self.client.txn([], [range_op(counter), range_op(start, prefix_end(start))])
        counter_kvs, pool_kvs = result.responses[0] or [], result.responses[1] or []
        self.compares[counter] = mod_revision_is(counter, counter_kvs[0].mod_revision if counter_kvs else 0)
        for kv in pool_kvs:
            self.compares[kv.key] = mod_revision_is(kv.key, kv.mod_revision)
        return [decode_docker_pool(kv.value) for kv in pool_kvs], int(counter_kvs[0].value) if counter_kvs else 0

    def docker_pool(self, pool_id: str) -> DockerPool:
        key = self.keys.docker_pool(pool_id)
        kvs, _ = self.client.range(key)
        if not kvs:
            raise NotFound(f"unknown pool id {pool_id!r}")
        self.compares[key] = mod_revision_is(key, kvs[0].mod_revision)
        return decode_docker_pool(kvs[0].value)

    # writes

    def take(self, family: int, address: int, claim: bool, pool: str = "") -> None:
        """Mark an address taken in its block; `claim` makes an unclaimed block (or one
        `may_take_over` allowed) this host's, for `pool`."""
        block = self.block(family, address >> BLOCK_BITS)
        offset = address - block.first
        if block.used >> offset & 1:
            raise StaleRead(f"{format_ip(family, address)} is taken in its block but not leased; run `cnipamctl check`")
        block.used |= 1 << offset
        block.freed.pop(offset, None)
        block.kept.pop(offset, None)
        keeper = self.taken_over.get((family, block.number))
        if claim and keeper is not None and block.host != self.keys.host:
            key = self.keys.block(keeper.family, keeper.number)
            self.compares.setdefault(key, mod_revision_is(key, keeper.revision))
            block.host = ""
        if claim and not block.host:
            block.host, block.pool = self.keys.host, pool
        if block.host == self.keys.host:
            block.touched = self.now
        self._write_block(block)

    def add_lease(self, lease: Lease, event: str | None = ALLOCATED, at: float | None = None) -> None:
        """A new lease, its key created only if absent; or, where this change removed a
        lease (an attachment back after a reboot takes its address again), written over
        it while that lease's key is unchanged. Its history record says `event` (None: no
        record), at the lease's own time unless `at` says otherwise."""
        if lease.kind == LEASE and event is not None:
            self.history.append(record_of(lease, event, lease.created if at is None else at, self.keys.host))
        key = self.keys.lease(lease.family, lease.address)
        if self.written_leases.get((lease.family, lease.address)) is not False:
            self.compares[key] = create_revision_is(key, 0)
        self.ops[key] = put_op(key, encode_lease(lease, self.keys.host))
        self.found[lease.family, lease.address] = (lease, 0)
        self.lease_hosts[lease.family, lease.address] = self.keys.host
        self.written_leases[lease.family, lease.address] = True
        if lease.boot:
            index = self.keys.boot_lease(self.keys.host, lease.boot, lease.family, lease.address)
            self.ops[index] = put_op(index, b"")
        if lease.handle:
            owner = self.keys.owner(lease.handle, lease.slot)
            if owner not in self.ops:  # else its deletion in this change is overwritten: the lease's compare guards it
                self.compares[owner] = create_revision_is(owner, 0)
            self.ops[owner] = put_op(owner, encode_address(lease.family, lease.address))

    def rewrite_lease(self, lease: Lease) -> None:
        """Put `lease` over the one read at its address (a gateway reservation widened)."""
        key = self.keys.lease(lease.family, lease.address)
        self.compares[key] = mod_revision_is(key, self.found[lease.family, lease.address][1])
        self.ops[key] = put_op(key, encode_lease(lease, self.keys.host))
        self.found[lease.family, lease.address] = (lease, self.found[lease.family, lease.address][1])
        self.written_leases[lease.family, lease.address] = True

    def remove_leases(self, leases: list[Lease], repair: bool = False) -> None:
        """Delete leases, each only if unchanged since read, and remember when their
        addresses were released (core.reuse); then the gateway reservations none of what
        is left depends on. A `repair` (core.reboot) keeps each address for its attachment
        instead, and leaves the positions where they are."""
        self._delete_leases(leases, repair)
        for family, gateway in sorted({(lease.family, lease.gateway) for lease in leases if lease.gateway is not None}):
            self._let_gateway_go(family, gateway)

    def _let_gateway_go(self, family: int, gateway: int) -> None:
        """Delete the reservation of `gateway` when no lease is left in the subnet it protects
        (allocator.gateway_reservation). One bounded read: the subnet's lease keys, at most as
        many as this change deletes there plus two; the commit compares that none of them was
        written since, so a lease another host adds there meanwhile keeps the reservation."""
        found = self.lease_at(family, gateway)
        subnet = reserved_subnet(found) if found is not None and found.kind == GATEWAY else None
        if found is None or subnet is None:
            return
        start, end = self.keys.lease(family, subnet.value), self.keys.lease(family, subnet.last) + b"\x00"
        gone = {self.keys.lease(*pair) for pair, put in self.written_leases.items() if not put and pair[0] == family}
        gone = {key for key in gone if start <= key < end} | {self.keys.lease(family, gateway)}
        if self.warm:  # decided on what this process knows; the commit compares it (see _known_held_by)
            left = [
                (pair, revision) for pair, (lease, revision) in self.found.items()
                if lease is not None and pair[0] == family and subnet.value <= pair[1] <= subnet.last
                and self.keys.lease(*pair) not in gone
            ]  # fmt: skip
            if left:  # a lease known to remain keeps the reservation, if it does remain
                key = self.keys.lease(*left[0][0])
                self.compares.setdefault(key, mod_revision_is(key, left[0][1]))
                return
            self._nothing_else(start, end, sorted(gone))
            self._delete_leases([found])
            return
        kvs, revision = self.client.range(start, end, limit=len(gone) + 1, keys_only=True)
        if any(kv.key not in gone for kv in kvs):
            return
        self.compares[b"\x00range " + start] = unchanged_since(start, end, revision)
        self._delete_leases([found])

    def _delete_leases(self, leases: list[Lease], repair: bool = False) -> None:
        for lease in leases:
            pair = (lease.family, lease.address)
            if lease.kind == LEASE:
                event = REPAIRED if repair else self.release_event
                self.history.append(record_of(lease, event, self.now, self.lease_hosts.get(pair, self.keys.host)))
            key = self.keys.lease(*pair)
            self.compares[key] = mod_revision_is(key, self.found[pair][1])  # still that lease
            self.ops[key] = delete_op(key)
            self.written_leases[pair] = False
            if lease.handle:
                owner = self.keys.owner(lease.handle, lease.slot)
                self.ops[owner] = delete_op(owner)
            if lease.boot:
                index = self.keys.boot_lease(self.lease_hosts.get(pair, self.keys.host), lease.boot, *pair)
                self.ops[index] = delete_op(index)
            block = self.block(lease.family, lease.address >> BLOCK_BITS)
            offset = lease.address - block.first
            block.used &= ~(1 << offset)
            if repair and lease.handle is not None:
                block.kept[offset] = self.now
                kept = self.keys.kept(self.keys.host, lease.handle, lease.slot)
                self.ops[kept] = put_op(kept, encode_address(*pair))
                self.kept[lease.handle, lease.slot] = pair
            elif lease.kind == LEASE:
                block.freed[offset] = self.now
            if block.host == self.keys.host:
                block.touched = self.now
            self._write_block(block)
            position = (
                self.cursor(lease.pool) if lease.kind == LEASE and not repair else None
            )  # a freed gateway leaves it too
            if position is not None and position.moves_on_release:
                self.set_cursor(lease.pool, Cursor(lease.family, lease.address, True))

    def set_cursor(self, pool: str, cursor: Cursor) -> None:
        self.cursors[pool] = cursor
        key = self.keys.cursor(pool)
        self.ops[key] = put_op(key, encode_cursor(cursor))

    def disown(self, block: Block, keeper: Block | None = None) -> None:
        """Give a host's block up: deleted when empty, else left to whoever claims it.
        With `keeper`, only while that block (the host keeps it) is unchanged too."""
        current = self.block(block.family, block.number)
        if current.host != block.host:
            return
        if keeper is not None:
            key = self.keys.block(keeper.family, keeper.number)
            self.compares.setdefault(key, mod_revision_is(key, keeper.revision))
        current.host, current.pool = "", ""
        self._write_block(current)

    def put_docker_pool(self, pool: DockerPool, serial: int) -> None:
        counter = self.keys.docker_counter
        self.ops[counter] = put_op(counter, str(serial).encode())
        key = self.keys.docker_pool(pool.id)
        self.compares[key] = create_revision_is(key, 0)
        self.ops[key] = put_op(key, encode_docker_pool(pool))

    def delete(self, key: bytes) -> None:
        self.ops[key] = delete_op(key)

    def rewrite_block(self, block: Block) -> None:
        """Write a block changed by hand (an operator's repair), compared with its revision as read."""
        self._write_block(block)

    def _write_block(self, block: Block) -> None:
        self.written_blocks.add((block.family, block.number))
        key = self.keys.block(block.family, block.number)
        self.compares[key] = mod_revision_is(key, block.revision) if block.revision else create_revision_is(key, 0)
        horizon = self.now - FORGET_AFTER
        for times in (block.freed, block.kept):
            for offset in [offset for offset, at in times.items() if at < horizon]:
                del times[offset]
        if stored(block):
            self.ops[key] = put_op(key, encode_block(block))
        else:
            self.ops[key] = delete_op(key)

    def commit(self) -> int | None:
        """Send the change as one Txn: its revision (0 when there was nothing to write), or
        None when something it read changed meanwhile. A warm change that found nothing to
        write decided that from what earlier changes knew: its compares alone are sent, so
        "nothing to do" is trusted only once they hold."""
        if not self.ops and not self.history:
            compares = [self.compares[key] for key in sorted(self.compares)]
            if not self.warm or not compares:
                return 0
            if len(compares) > MAX_TXN_OPS:
                return None  # too much to check in one Txn: computed again from fresh reads
            checked = self.client.txn(compares, [])
            return checked.revision if checked.succeeded else None
        if self.history:
            self._append_history()
        if self.liveness:
            host = self.keys.host_seen(self.keys.host)
            self.ops[host] = put_op(host, f"{time.time():.3f}".encode())
        compares = [self.compares[key] for key in sorted(self.compares)]
        if max(len(compares), len(self.ops)) > MAX_TXN_OPS:
            raise StoreBusy(f"etcd store: one change touches {len(self.ops)} keys, more than a Txn may hold")
        result = self.client.txn(compares, list(self.ops.values()))
        return result.revision if result.succeeded else None

    def _history_reads(self) -> list[dict[str, object]]:
        """The reads of the host's history log and the store's retention, for a change that
        does not know them yet: sent with the change's first read, so that appending
        costs no round trip of its own."""
        if self.log is not None:
            return []
        return [range_op(self.keys.history_log(self.keys.host)), range_op(self.keys.history_retention)]

    def _history_read(self, log: list[KeyValue], retention: list[KeyValue]) -> None:
        self.log = decode_log(log)
        self.retention = (decode_retention(retention), retention[0].mod_revision if retention else 0)

    def _append_history(self) -> None:
        """The change's history records at the host's next sequence numbers, its log
        rewritten (compared: one host's processes never take one number twice), and the
        records past the retention deleted with one key range (etcd_history.py)."""
        if self.log is None:  # a change whose reads did not bring it
            responses = self.client.txn([], self._history_reads()).responses
            self._history_read(responses[0] or [], responses[1] or [])
        log, host = self.log, self.keys.host
        assert log is not None and self.retention is not None
        retention, revision = self.retention
        for offset, record in enumerate(self.history):
            key = self.keys.history(host, log.next + offset)
            self.ops[key] = put_op(key, encode_record(record))
        after, end = log.appended(len(self.history), self.now, retention)
        key = self.keys.history_retention  # a retention set meanwhile: computed again with it
        self.compares[key] = mod_revision_is(key, revision)
        key = self.keys.history_log(host)
        self.compares[key] = mod_revision_is(key, log.revision) if log.revision else create_revision_is(key, 0)
        self.ops[key] = put_op(key, encode_log(after))
        if end > log.oldest:
            first = self.keys.history(host, log.oldest)
            self.ops[b"\x00prune " + first] = delete_op(first, self.keys.history(host, end))
        self.log = after


def stored(block: Block) -> bool:
    """Whether a block has anything to keep a key for: an address taken, a host, a release to remember."""
    return bool(block.used or block.host or block.freed or block.kept)


def resting(block: Block, rule: Eligibility) -> int:
    """The bitmap of a block's free addresses `rule` does not allow yet."""
    mask = 0
    for offset, at in block.freed.items():
        if not rule.allows(at, False):
            mask |= 1 << offset
    for offset, at in block.kept.items():
        if not rule.allows(at, True):
            mask |= 1 << offset
    return mask


def paged(client: EtcdClient, start: bytes, end: bytes, keys_only: bool = False) -> Iterator[KeyValue]:
    """Every key of [start, end) in pages of 500, each page one bounded read."""
    while True:
        kvs, _ = client.range(start, end, limit=500, keys_only=keys_only)
        yield from kvs
        if len(kvs) < 500:
            return
        start = kvs[-1].key + b"\x00"


def _next_try(spec: PoolSpec, position: Cursor | None) -> int:
    """Where the search for a free address of `spec` starts, given its position."""
    if position is None or position.family != spec.family:
        return spec.pieces[0][0]
    return position.address + 1


def _likely_gateway(spec: PoolSpec, position: Cursor | None) -> int | None:
    """The gateway of the range the next address most likely comes from (the requested
    one's, or the one the search starts in), to read it in the same round trip as the rest."""
    address = spec.requested if spec.requested is not None else _next_try(spec, position)
    address_range = spec.range_of(address)
    if address_range is None or address_range.gateway is None or address_range.gateway not in address_range.network:
        return None
    return address_range.gateway
