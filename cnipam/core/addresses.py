"""IP address arithmetic on plain integers.

Addresses are `(family, int)` pairs and networks are `Network` values. The standard
`ipaddress` module pulls in `functools` and builds many classes as it is imported, which
every plugin call would pay for (docs/benchmarks.md lists what an ADD imports); integers make the allocator's
arithmetic (next address, ranges, wrapping) trivial for both families alike.

Text forms follow Go's `net` package, which wrote every store we migrate from:
IPv4 dotted quads without leading zeros, IPv6 in RFC 5952 compressed form.
"""

from __future__ import annotations

from .errors import InvalidConfig
from .record import Record

BITS = {4: 32, 6: 128}
WIDTH = {4: 4, 6: 16}


def parse_ip(text: object, what: str = "address") -> tuple[int, int]:
    """Parse an IPv4 or IPv6 address into (family, value); raise InvalidConfig naming `what`."""
    if not isinstance(text, str):
        raise InvalidConfig(f"{what}: expected an IP address string, got {_kind(text)}")
    if ":" in text:
        value = _parse_ipv6(text)
        if value is not None:
            return 6, value
    else:
        value = _parse_ipv4(text)
        if value is not None:
            return 4, value
    raise InvalidConfig(f"{what}: {text!r} is not an IP address")


def _parse_ipv4(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4 or not all(_is_octet(p) for p in parts):
        return None
    value = 0
    for part in parts:
        value = (value << 8) | int(part)
    return value


def _parse_ipv6(text: str) -> int | None:
    """RFC 4291 text forms, with `::` and a trailing dotted quad (inet_pton's grammar;
    `_socket` is not imported for it because it costs more than this function)."""
    head, gap, tail = text.partition("::")
    if "::" in tail:
        return None
    groups = _hex_groups(head, trailing_ipv4=not gap)
    rest = _hex_groups(tail, trailing_ipv4=True) if gap else []
    if groups is None or rest is None:
        return None
    if gap:
        if len(groups) + len(rest) > 7:
            return None
        groups = groups + [0] * (8 - len(groups) - len(rest)) + rest
    elif len(groups) != 8:
        return None
    value = 0
    for group in groups:
        value = (value << 16) | group
    return value


def _hex_groups(part: str, trailing_ipv4: bool) -> list[int] | None:
    if not part:
        return []
    pieces = part.split(":")
    groups = []
    for index, piece in enumerate(pieces):
        if trailing_ipv4 and index == len(pieces) - 1 and "." in piece:
            quad = _parse_ipv4(piece)
            if quad is None:
                return None
            groups += [quad >> 16, quad & 0xFFFF]
        elif 1 <= len(piece) <= 4 and all(c in _HEX for c in piece):
            groups.append(int(piece, 16))
        else:
            return None
    return groups


_HEX = frozenset("0123456789abcdefABCDEF")


def _is_octet(part: str) -> bool:
    return part.isdigit() and part.isascii() and len(part) <= 3 and (part == "0" or part[0] != "0") and int(part) <= 255


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def format_ip(family: int, value: int) -> str:
    """Text form of an address, as Go's net.IP.String() prints it."""
    if family == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    groups = [(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_start, best_len, start = -1, 1, -1
    for i, group in enumerate([*groups, 1]):
        if group == 0 and start < 0:
            start = i
        elif group != 0 and start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


def to_bytes(family: int, value: int) -> bytes:
    """Fixed-width big-endian bytes: they sort like the numbers, which the store's indexes rely on."""
    return value.to_bytes(WIDTH[family], "big")


def from_bytes(raw: bytes) -> tuple[int, int]:
    return (4 if len(raw) == 4 else 6), int.from_bytes(raw, "big")


class Network(Record):
    """A prefix: family, the network address (host bits clear) and the prefix length."""

    __slots__ = ("family", "value", "prefix")

    def __init__(self, family: int, value: int, prefix: int) -> None:
        self.family = family
        self.value = value
        self.prefix = prefix

    @property
    def last(self) -> int:
        """The highest address of the prefix (the IPv4 broadcast address)."""
        return self.value | ((1 << (BITS[self.family] - self.prefix)) - 1)

    @property
    def size(self) -> int:
        return 1 << (BITS[self.family] - self.prefix)

    def overlaps(self, other: Network) -> bool:
        return self.family == other.family and self.value <= other.last and other.value <= self.last

    def __contains__(self, value: int) -> bool:
        return self.value <= value <= self.last

    def __str__(self) -> str:
        return f"{format_ip(self.family, self.value)}/{self.prefix}"


def parse_cidr(text: object, what: str) -> tuple[int, Network]:
    """Parse `address/prefix`; return the address as written and its network."""
    if not isinstance(text, str):
        raise InvalidConfig(f"{what}: expected a CIDR string such as 10.0.0.0/24, got {_kind(text)}")
    address, slash, prefix_text = text.partition("/")
    if not slash:
        raise InvalidConfig(f"{what}: {text!r} has no prefix length (expected CIDR such as 10.0.0.0/24)")
    family, value = parse_ip(address, what)
    if not (prefix_text.isdigit() and prefix_text.isascii() and len(prefix_text) <= 3):
        raise InvalidConfig(f"{what}: {text!r} has an invalid prefix length")
    prefix = int(prefix_text)
    if prefix > BITS[family]:
        raise InvalidConfig(f"{what}: prefix length /{prefix} is too long for IPv{family}")
    host_bits = BITS[family] - prefix
    return value, Network(family, (value >> host_bits) << host_bits, prefix)
