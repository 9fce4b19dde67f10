"""The etcd engine's key layout and its records: which key holds what (`Keys`), and each
record's bytes (the `encode_`/`decode_` pairs). The layout itself is described in etcd.py.

A value that does not decode is StoreCorrupt naming the key: the engine never guesses.
"""

from __future__ import annotations

from ..core.addresses import BITS, parse_cidr
from ..core.errors import DecodeFailure, InvalidConfig, StoreCorrupt
from ..core.json_codec import dumps, loads
from ..core.leases import Cursor, Lease
from ..core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..core.addresses import Network
    from ..core.docker_pools import DockerPool
    from .etcdv3 import KeyValue

BLOCK_BITS = 8
BLOCK_SIZE = 1 << BLOCK_BITS
HEX = {4: 8, 6: 32}  # hex digits of an address


class Keys(Record):
    """The key layout (etcd.py describes it) under one prefix, as one host sees it:
    its own positions live under its name."""

    __slots__ = ("prefix", "host")

    def __init__(self, prefix: bytes, host: str) -> None:
        self.prefix = prefix
        self.host = host

    def key(self, *parts: str) -> bytes:
        return self.prefix + "/".join(parts).encode()

    def under(self, *parts: str) -> bytes:
        """The first key of everything below `parts` (the range ends at etcdv3.prefix_end)."""
        return self.key(*parts, "")

    def lease(self, family: int, address: int) -> bytes:
        return self.key("lease", str(family), f"{address:0{HEX[family]}x}")

    def block(self, family: int, number: int) -> bytes:
        return self.key("block", str(family), f"{number:0{HEX[family] - 2}x}")

    def owner(self, handle: str, slot: str) -> bytes:
        return self.key("owner", escape(handle), escape(slot))

    def cursor(self, pool: str) -> bytes:
        return self.key("cursor", escape(self.host), escape(pool))

    def host_seen(self, host: str) -> bytes:
        return self.key("host", escape(host))

    def repaired_boot(self, host: str) -> bytes:
        """The boot whose earlier boots' leases `host` last released (core.reboot)."""
        return self.key("boot", escape(host))

    def boot_lease(self, host: str, boot: str, family: int, address: int) -> bytes:
        """The index of a host's leases by boot, so a repair reads only earlier boots' leases."""
        return self.key("bootlease", escape(host), escape(boot), str(family), f"{address:0{HEX[family]}x}")

    def kept(self, host: str, handle: str, slot: str) -> bytes:
        """The address a repair of `host` keeps for an attachment that may come back."""
        return self.key("kept", escape(host), escape(handle), escape(slot))

    def sighting(self, host: str, network: str, handle: str) -> bytes:
        """When `host`'s collector first saw an owner of `network` leaked (core.collector):
        each host judges only its own leases, against its own runtime's list."""
        return self.key("sighting", escape(host), escape(network), escape(handle))

    def history(self, host: str, sequence: int) -> bytes:
        """A record of `host`'s history (etcd_history.py)."""
        return self.key("history", escape(host), f"{sequence:016x}")

    def history_log(self, host: str) -> bytes:
        return self.key("historylog", escape(host))

    @property
    def history_retention(self) -> bytes:
        return self.key("historyretention")

    def docker_pool(self, pool_id: str) -> bytes:
        return self.key("dpool", escape(pool_id))

    @property
    def docker_counter(self) -> bytes:
        return self.key("counter", "docker_pool")


class Block(Record):
    """A block as read: who claimed it, which addresses are taken, the revision seen.

    `pool` is the pool the host claimed it for and `touched` when that host last took or
    released one of its addresses (an empty block its host has not touched for a while
    goes back to the shared pool, but never a host's last block of a pool). `freed` and
    `kept` map an address's offset in the block to when it was released: the reuse delay
    (core.reuse), and the addresses a reboot repair keeps for their attachments.
    """

    __slots__ = ("family", "number", "host", "used", "revision", "pool", "touched", "freed", "kept")

    def __init__(
        self,
        family: int,
        number: int,
        host: str,
        used: int,
        revision: int,
        pool: str = "",
        touched: float = 0.0,
        freed: dict[int, float] | None = None,
        kept: dict[int, float] | None = None,
    ) -> None:
        self.family = family
        self.number = number
        self.host = host  # "" when nobody holds it (never claimed, or its host was released)
        self.used = used
        self.revision = revision  # 0: the key does not exist
        self.pool = pool
        self.touched = touched
        self.freed = freed if freed is not None else {}
        self.kept = kept if kept is not None else {}

    def copy(self) -> Block:
        return Block(
            self.family,
            self.number,
            self.host,
            self.used,
            self.revision,
            self.pool,
            self.touched,
            dict(self.freed),
            dict(self.kept),
        )

    @property
    def first(self) -> int:
        return self.number << BLOCK_BITS

    @property
    def last(self) -> int:
        return self.first + BLOCK_SIZE - 1

    @property
    def taken(self) -> int:
        return self.used.bit_count()

    @property
    def size(self) -> int:
        return BLOCK_SIZE

    @property
    def prefix(self) -> int:
        """The prefix length of the block as a network."""
        return BITS[self.family] - BLOCK_BITS


class HostSeen(Record):
    """A host and when it last changed the store (`cnipamctl hosts`): its blocks, its
    leases and, apart, the gateway reservations it made (they hold no container)."""

    __slots__ = ("host", "seen", "blocks", "leases", "gateways")

    def __init__(self, host: str, seen: float, blocks: int, leases: int, gateways: int = 0) -> None:
        self.host = host
        self.seen = seen
        self.blocks = blocks
        self.leases = leases
        self.gateways = gateways


def escape(text: str) -> str:
    """Keys are split on '/': a handle or pool name must not contain one."""
    return text.replace("%", "%25").replace("/", "%2F")


def unescape(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def encode_address(family: int, address: int) -> bytes:
    """The value of an owner index key: the address its lease is at."""
    return f"{family}/{address:x}".encode()


def decode_address(value: bytes) -> tuple[int, int] | None:
    family, _, address = value.decode(errors="replace").partition("/")
    try:
        return int(family), int(address, 16)
    except ValueError:
        return None


def encode_lease(lease: Lease, host: str) -> bytes:
    record: dict[str, object] = {
        "kind": lease.kind, "pool": lease.pool, "slot": lease.slot, "handle": lease.handle, "network": lease.network,
        "container": lease.container_id, "ifname": lease.ifname, "created": lease.created, "host": host,
    }  # fmt: skip
    if lease.boot:
        record["boot"] = lease.boot
    if lease.netns:
        record["netns"] = lease.netns
    if lease.gateway is not None:
        record["gateway"] = f"{lease.gateway:x}"
    return dumps(record).encode()


def decode_lease(keys: Keys, kv: KeyValue) -> tuple[Lease, int, str]:
    """A lease key read back: the lease, its revision, and the host that wrote it."""
    family_text, _, address_text = kv.key[len(keys.under("lease")) :].decode().partition("/")
    try:
        record = _record(kv.value)
        family, address = int(family_text), int(address_text, 16)
        gateway = record.get("gateway")
        lease = Lease(
            family, address, record["kind"], record["pool"], record["slot"], record["handle"],
            record["network"], record["container"], record["ifname"], float(record["created"]),
            str(record.get("boot", "")), str(record.get("netns", "")),
            None if gateway is None else int(gateway, 16),
        )  # fmt: skip
        return lease, kv.mod_revision, str(record.get("host", ""))
    except (ValueError, KeyError, TypeError, DecodeFailure) as exc:
        raise StoreCorrupt(f"etcd key {kv.key.decode(errors='replace')} is not a lease record ({exc})") from None


def encode_block(block: Block) -> bytes:
    record: dict[str, object] = {"host": block.host, "used": f"{block.used:x}"}
    if block.pool:
        record["pool"] = block.pool
    if block.touched:
        record["touched"] = round(block.touched, 3)
    if block.freed:
        record["freed"] = {f"{offset:x}": at for offset, at in sorted(block.freed.items())}
    if block.kept:
        record["kept"] = {f"{offset:x}": at for offset, at in sorted(block.kept.items())}
    return dumps(record).encode()


def decode_block(family: int, number: int, kv: KeyValue) -> Block:
    try:
        record = _record(kv.value)
        times = [
            {int(offset, 16): float(at) for offset, at in record.get(name, {}).items()} for name in ("freed", "kept")
        ]
        return Block(
            family, number, str(record["host"]), int(record["used"], 16), kv.mod_revision,
            str(record.get("pool", "")), float(record.get("touched", 0.0)), *times,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError, DecodeFailure) as exc:
        raise StoreCorrupt(f"etcd key {kv.key.decode(errors='replace')} is not a block record ({exc})") from None


def encode_cursor(cursor: Cursor) -> bytes:
    return dumps({"family": cursor.family, "address": f"{cursor.address:x}", "moves": cursor.moves_on_release}).encode()


def decode_cursor(value: bytes) -> Cursor:
    try:
        record = _record(value)
        return Cursor(int(record["family"]), int(record["address"], 16), bool(record["moves"]))
    except (ValueError, KeyError, TypeError, DecodeFailure) as exc:
        raise StoreCorrupt(f"an etcd cursor record is damaged ({exc})") from None


def _record(value: bytes) -> dict[str, Any]:
    record = loads(value, "etcd value")
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    return record


def encode_docker_pool(pool: DockerPool) -> bytes:
    record = {
        "id": pool.id, "space": pool.address_space, "pool": str(pool.network),
        "sub_pool": None if pool.sub_pool is None else str(pool.sub_pool),
        "options": pool.options, "created": pool.created,
    }  # fmt: skip
    return dumps(record).encode()


def decode_docker_pool(value: bytes) -> DockerPool:
    from ..core.docker_pools import DockerPool

    try:
        record = _record(value)
        sub = None if record["sub_pool"] is None else parse_cidr(record["sub_pool"], "sub_pool")[1]
        network: Network = parse_cidr(record["pool"], "pool")[1]
        return DockerPool(record["id"], record["space"], network, sub, record["options"], float(record["created"]))
    except (ValueError, KeyError, TypeError, InvalidConfig, DecodeFailure) as exc:
        raise StoreCorrupt(f"an etcd Docker pool record is damaged ({exc})") from None
