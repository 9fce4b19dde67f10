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
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
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
)
from .etcdv3 import create_revision_is, delete_op, mod_revision_is, prefix_end, put_op, range_op, unchanged_since

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ..core.docker_pools import DockerPool
    from ..core.ipam_config import PoolSpec
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

    def __init__(self, client: EtcdClient, keys: Keys, warm: Change | None = None) -> None:
        self.client = client
        self.keys = keys
        self.compares: dict[bytes, dict[str, object]] = {}
        self.ops: dict[bytes, dict[str, object]] = {}
        self.blocks: dict[tuple[int, int], Block] = {}
        self.chunks: set[tuple[int, int]] = set()
        self.found: dict[tuple[int, int], tuple[Lease | None, int]] = {}  # lease reads: (lease, mod revision)
        self.cursors: dict[str, Cursor | None] = {}
        self.owners: dict[str, list[KeyValue]] = {}
        self.written_blocks: set[tuple[int, int]] = set()
        self.written_leases: dict[tuple[int, int], bool] = {}  # True: put, False: deleted
        self.warm = warm is not None
        if warm is not None:
            self.blocks = {at: Block(b.family, b.number, b.host, b.used, b.revision) for at, b in warm.blocks.items()}
            self.chunks = set(warm.chunks)
            self.found = dict(warm.found)
            self.cursors = dict(warm.cursors)

    def settled(self, revision: int, earlier: Change | None) -> Change:
        """This change as committed at `revision`: what the next warm change may start from,
        completed with what `earlier` knew and this change did not read (a DEL reads no
        positions or gateways, and the ADD after it should not have to read them again).
        Older facts are compared like any other, so a stale one costs a retry, never an error."""
        for at in self.written_blocks:
            block = self.blocks[at]
            block.revision = revision if block.used or block.host else 0
        for pair, put in self.written_leases.items():
            self.found[pair] = (self.found[pair][0], revision) if put else (None, 0)
        if earlier is not None and earlier is not self:
            unread = earlier.chunks - self.chunks
            self.chunks |= unread
            self.blocks.update({at: block for at, block in earlier.blocks.items() if (at[0], at[1] // CHUNK) in unread})
            for pair, fact in earlier.found.items():
                self.found.setdefault(pair, fact)
            for pool, cursor in earlier.cursors.items():
                self.cursors.setdefault(pool, cursor)
        self.compares, self.ops, self.owners = {}, {}, {}
        self.written_blocks, self.written_leases = set(), {}
        return self

    # reads

    def prefetch(self, handle: str | None, pools: tuple[PoolSpec, ...]) -> None:
        """Everything an ADD is going to read, in two round trips instead of one per
        key: the owner's index, the gateways, the positions, then the blocks they fall in."""
        ops: list[dict[str, object]] = []
        parse: list[tuple[str, str | tuple[int, int]]] = []
        if handle and handle not in self.owners and self.warm:
            self.owners[handle] = []  # assumed none: the new owner key's create compare checks it
        elif handle and handle not in self.owners:
            start = self.keys.under("owner", escape(handle))
            ops.append(range_op(start, prefix_end(start)))
            parse.append(("owner", handle))
        for spec in pools:
            gateway = _likely_gateway(spec, self.cursors.get(spec.key))
            if gateway is not None and (spec.family, gateway) not in self.found:
                ops.append(range_op(self.keys.lease(spec.family, gateway)))
                parse.append(("lease", (spec.family, gateway)))
            if not spec.lowest_free and spec.key not in self.cursors:
                ops.append(range_op(self.keys.cursor(spec.key)))
                parse.append(("cursor", spec.key))
        if ops:
            for (kind, what), kvs in zip(parse, self.client.txn([], ops).responses, strict=True):
                if isinstance(what, tuple):
                    self._found(what, kvs)
                elif kind == "owner":
                    self.owners[what] = kvs or []
                else:
                    self.cursors[what] = decode_cursor(kvs[0].value) if kvs else None
        chunks: list[tuple[int, int]] = []
        for spec in pools:
            position = self.cursors.get(spec.key)
            gateway = _likely_gateway(spec, position)
            addresses = (_next_try(spec, position),) if gateway is None else (_next_try(spec, position), gateway)
            chunks.extend((spec.family, address >> BLOCK_BITS) for address in addresses)
        self.load_blocks(chunks)

    def held_by(self, handle: str) -> list[Lease]:
        start = self.keys.under("owner", escape(handle))
        if handle in self.owners:
            kvs = self.owners[handle]
        else:
            kvs, _ = self.client.range(start, prefix_end(start))
        targets = [target for target in (decode_address(kv.value) for kv in kvs) if target is not None]
        for kv in kvs:
            self.compares[kv.key] = mod_revision_is(kv.key, kv.mod_revision)
        return [lease for lease in self.leases_at(targets) if lease.handle == handle]

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
            lease, revision, _ = decode_lease(self.keys, kvs[0])
            self.found[pair] = (lease, revision)
        else:
            self.found[pair] = (None, 0)
        key = self.keys.lease(*pair)
        self.compares.setdefault(key, mod_revision_is(key, self.found[pair][1]))

    def lease_revision(self, family: int, address: int) -> int:
        return self.found[family, address][1]

    def leases_between(self, family: int, first: int, last: int) -> list[Lease]:
        found = []
        for kv in paged(self.client, self.keys.lease(family, first), self.keys.lease(family, last) + b"\x00"):
            lease, revision, _ = decode_lease(self.keys, kv)
            self.found[lease.family, lease.address] = (lease, revision)
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

    def find_free(self, family: int, first: int, last: int, borrow: bool) -> int | None:
        """The lowest free address of [first, last] in a block this host may use: its
        own or an unclaimed one, or any block when `borrow`."""
        me = self.keys.host
        number = first >> BLOCK_BITS
        while number <= last >> BLOCK_BITS:
            block = self.block(family, number)
            if borrow or block.host in ("", me):
                low = max(first, block.first) - block.first
                high = min(last, block.last) - block.first
                free = ~block.used & ((1 << (high + 1)) - (1 << low))
                if free:
                    return block.first + (free & -free).bit_length() - 1
            number += 1
        return None

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

    def take(self, family: int, address: int, claim: bool) -> None:
        """Mark an address taken in its block; `claim` makes an unclaimed block this host's."""
        block = self.block(family, address >> BLOCK_BITS)
        bit = 1 << (address - block.first)
        if block.used & bit:
            raise StaleRead(f"{format_ip(family, address)} is taken in its block but not leased; run `cnipamctl check`")
        block.used |= bit
        if claim and not block.host:
            block.host = self.keys.host
        self._write_block(block)

    def add_lease(self, lease: Lease) -> None:
        key = self.keys.lease(lease.family, lease.address)
        self.compares[key] = create_revision_is(key, 0)
        self.ops[key] = put_op(key, encode_lease(lease, self.keys.host))
        self.found[lease.family, lease.address] = (lease, 0)
        self.written_leases[lease.family, lease.address] = True
        if lease.handle:
            owner = self.keys.owner(lease.handle, lease.slot)
            self.compares[owner] = create_revision_is(owner, 0)
            self.ops[owner] = put_op(owner, encode_address(lease.family, lease.address))

    def rewrite_lease(self, lease: Lease) -> None:
        """Put `lease` over the one read at its address (a gateway reservation widened)."""
        key = self.keys.lease(lease.family, lease.address)
        self.compares[key] = mod_revision_is(key, self.found[lease.family, lease.address][1])
        self.ops[key] = put_op(key, encode_lease(lease, self.keys.host))
        self.found[lease.family, lease.address] = (lease, self.found[lease.family, lease.address][1])
        self.written_leases[lease.family, lease.address] = True

    def remove_leases(self, leases: list[Lease]) -> None:
        """Delete these leases, then the gateway reservations none of what is left depends on."""
        self._delete_leases(leases)
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
        kvs, revision = self.client.range(start, end, limit=len(gone) + 1, keys_only=True)
        if any(kv.key not in gone for kv in kvs):
            return
        self.compares[b"\x00range " + start] = unchanged_since(start, end, revision)
        self._delete_leases([found])

    def _delete_leases(self, leases: list[Lease]) -> None:
        for lease in leases:
            key = self.keys.lease(lease.family, lease.address)
            self.compares[key] = mod_revision_is(key, self.found[lease.family, lease.address][1])  # still that lease
            self.ops[key] = delete_op(key)
            self.written_leases[lease.family, lease.address] = False
            if lease.handle:
                owner = self.keys.owner(lease.handle, lease.slot)
                self.ops[owner] = delete_op(owner)
            block = self.block(lease.family, lease.address >> BLOCK_BITS)
            block.used &= ~(1 << (lease.address - block.first))
            self._write_block(block)
            position = self.cursor(lease.pool) if lease.kind == LEASE else None  # a freed gateway leaves the position
            if position is not None and position.moves_on_release:
                self.set_cursor(lease.pool, Cursor(lease.family, lease.address, True))

    def set_cursor(self, pool: str, cursor: Cursor) -> None:
        self.cursors[pool] = cursor
        key = self.keys.cursor(pool)
        self.ops[key] = put_op(key, encode_cursor(cursor))

    def disown(self, block: Block) -> None:
        """Give a dead host's block up: deleted when empty, else left to whoever claims it."""
        current = self.block(block.family, block.number)
        if current.host != block.host:
            return
        current.host = ""
        self._write_block(current)

    def put_docker_pool(self, pool: DockerPool, serial: int) -> None:
        counter = self.keys.docker_counter
        self.ops[counter] = put_op(counter, str(serial).encode())
        key = self.keys.docker_pool(pool.id)
        self.compares[key] = create_revision_is(key, 0)
        self.ops[key] = put_op(key, encode_docker_pool(pool))

    def delete(self, key: bytes) -> None:
        self.ops[key] = delete_op(key)

    def _write_block(self, block: Block) -> None:
        self.written_blocks.add((block.family, block.number))
        key = self.keys.block(block.family, block.number)
        self.compares[key] = mod_revision_is(key, block.revision) if block.revision else create_revision_is(key, 0)
        if block.used or block.host:
            self.ops[key] = put_op(key, encode_block(block))
        else:
            self.ops[key] = delete_op(key)

    def commit(self) -> int | None:
        """Send the change as one Txn: its revision (0 when there was nothing to write), or
        None when something it read changed meanwhile."""
        if not self.ops:
            return 0
        host = self.keys.host_seen(self.keys.host)
        self.ops[host] = put_op(host, f"{time.time():.3f}".encode())
        compares = [self.compares[key] for key in sorted(self.compares)]
        if max(len(compares), len(self.ops)) > MAX_TXN_OPS:
            raise StoreBusy(f"etcd store: one change touches {len(self.ops)} keys, more than a Txn may hold")
        result = self.client.txn(compares, list(self.ops.values()))
        return result.revision if result.succeeded else None


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
