"""Interpret an ecs-ipam bbolt store (bucket `IPAM`) as leases, gateway markers and cursors.

ecs-ipam stores through libkv's boltdb backend, which prefixes every value with an
8-byte little-endian "modification index" (a per-process counter with no meaning, so
it is dropped here). The payloads, as upstream writes them:

| key | payload |
|---|---|
| IPv4 text, e.g. `10.0.0.2` | the owner id, or `""` for an ADD without one |
| `6` + IPv6 text, e.g. `62001:db8::2` | the owner id, or `""` |
| the gateway's key | `GateWay` (IPv4) / `GateWayV6` (IPv6): a marker, not a lease |
| `lastKnownIP` / `lastKnownIPv6` | the last address allocated or released in that family |

Upstream declares `lastKnownIPv4` but never uses it; files written before IPv6 support
have no `6` keys and no `lastKnownIPv6`. Anything else (a key that is not an address
in Go's canonical text form, a value shorter than the libkv prefix, a nested bucket,
another top-level bucket) is kept in `unrecognised` with the reason, so the migration
can report it rather than drop it silently: upstream never writes such entries, so
they mean the file was edited or damaged, and the operator should know.

Dataclasses are fine here: migration runs once from the CLI, never on the plugin's
start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.addresses import format_ip, parse_ip
from ..core.errors import InvalidConfig
from .bbolt_file import BoltFile, BoltFormatError, open_file

__all__ = [
    "BUCKET",
    "BoltFormatError",
    "EcsIpamStore",
    "EcsLease",
    "Gateway",
    "interpret_bucket",
    "interpret_file",
    "read_ecs_boltdb",
]

BUCKET = b"IPAM"
LIBKV_INDEX_SIZE = 8
GATEWAY_MARKERS = {4: "GateWay", 6: "GateWayV6"}
LAST_KNOWN_KEYS = {b"lastKnownIP": 4, b"lastKnownIPv6": 6}
UNUSED_KEYS = frozenset({b"lastKnownIPv4"})
IPV6_KEY_PREFIX = "6"


@dataclass(frozen=True, order=True)
class EcsLease:
    """An address held by `id` (`""`: the ADD had no id, so only a DEL by address frees it)."""

    family: int
    address: int
    id: str

    @property
    def text(self) -> str:
        return format_ip(self.family, self.address)


@dataclass(frozen=True, order=True)
class Gateway:
    """A gateway marker: upstream's reservation that keeps the gateway out of allocation."""

    family: int
    address: int

    @property
    def text(self) -> str:
        return format_ip(self.family, self.address)


@dataclass
class EcsIpamStore:
    """Everything found in the `IPAM` bucket, classified.

    `leases` and `gateways` are sorted by family, then address. `key_count` counts
    every key of the bucket (nested buckets included), so a migration can check that
    leases + gateways + cursors + unrecognised account for all of them. `warnings`
    comes from the bbolt reader (e.g. the file was read at its previous transaction).
    """

    leases: list[EcsLease] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    last_known_ip: int | None = None
    last_known_ipv6: int | None = None
    unrecognised: list[tuple[bytes, str]] = field(default_factory=list)
    key_count: int = 0
    warnings: list[str] = field(default_factory=list)


def read_ecs_boltdb(path: str) -> EcsIpamStore:
    """Read and classify the ecs-ipam store at `path`; BoltFormatError if it is damaged or
    has no `IPAM` bucket, OSError if it cannot be read at all."""
    return interpret_file(open_file(path))


def interpret_file(db: BoltFile) -> EcsIpamStore:
    """Classify an opened file: the `IPAM` bucket, plus anything upstream would not have written."""
    root = db.root()
    bucket = root.bucket(BUCKET)
    store = interpret_bucket(bucket.values)
    for name in bucket.bucket_names():
        store.unrecognised.append((name, "a nested bucket (ecs-ipam stores only plain values)"))
        store.key_count += 1
    for name in root.bucket_names():
        if name != BUCKET:
            store.unrecognised.append((name, "a top-level bucket other than IPAM, not read (ecs-ipam uses only IPAM)"))
    for name in root.values:
        store.unrecognised.append((name, "a plain value at the top level (bbolt allows only buckets there)"))
    store.warnings.extend(db.warnings)
    return store


def interpret_bucket(values: dict[bytes, bytes]) -> EcsIpamStore:
    """Classify the plain key/value pairs of an `IPAM` bucket (values still carry the libkv index)."""
    store = EcsIpamStore(key_count=len(values))
    for key, raw in sorted(values.items()):
        reason = _classify(store, key, raw)
        if reason is not None:
            store.unrecognised.append((key, reason))
    store.leases.sort()
    store.gateways.sort()
    return store


def _classify(store: EcsIpamStore, key: bytes, raw: bytes) -> str | None:
    """Record one entry in `store`; return why it is unrecognised, or None."""
    if len(raw) < LIBKV_INDEX_SIZE:
        return f"a {len(raw)}-byte value, shorter than libkv's {LIBKV_INDEX_SIZE}-byte index"
    try:
        payload = raw[LIBKV_INDEX_SIZE:].decode("utf-8")
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return "the key is not ASCII or the payload is not UTF-8"
    if key in UNUSED_KEYS:
        return "declared by ecs-ipam but never used"
    family = LAST_KNOWN_KEYS.get(key)
    if family is not None:
        address = _canonical_address(payload, family)
        if address is None:
            return f"the payload {payload!r} is not an IPv{family} address"
        if family == 4:
            store.last_known_ip = address
        else:
            store.last_known_ipv6 = address
        return None
    # IPv6 keys are "6" + IPv6 text; IPv4 text has no colon, so the colon decides.
    if ":" in text:
        if not text.startswith(IPV6_KEY_PREFIX):
            return "an IPv6-like key without ecs-ipam's '6' prefix"
        family, text = 6, text[len(IPV6_KEY_PREFIX) :]
    else:
        family = 4
    address = _canonical_address(text, family)
    if address is None:
        return f"not an address key (not IPv{family} text in canonical form)"
    marker_family = next((f for f, marker in GATEWAY_MARKERS.items() if marker == payload), None)
    if marker_family == family:
        store.gateways.append(Gateway(family, address))
    elif marker_family is not None:
        return f"the gateway marker {payload!r} on an IPv{family} key"
    else:
        store.leases.append(EcsLease(family, address, payload))
    return None


def _canonical_address(text: str, family: int) -> int | None:
    """The address if `text` is exactly how Go prints an address of `family`, else None.

    Upstream finds keys by formatting addresses (Go's net.IP.String()), so a key in any
    other spelling could never be matched or freed by it: it is reported, not imported.
    """
    try:
        parsed_family, value = parse_ip(text)
    except InvalidConfig:
        return None
    if parsed_family != family or format_ip(family, value) != text:
        return None
    return value
