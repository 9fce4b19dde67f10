"""Decoding and validating the bodies dockerd sends (shared/reference/docker-ipam.md §1).

dockerd encodes with Go's JSON encoder and sends no body at all for the calls without
arguments, so an empty body, `null` and `{}` all mean "no fields". Unknown fields are
ignored (Go's decoder does the same on the other side); a known field of the wrong type
is refused with its name, because a silently ignored `Pool` is exactly gipam's bug.
"""

from __future__ import annotations

import json

from ..core.addresses import BITS, Network, format_ip, parse_cidr, parse_ip
from ..core.errors import DecodeFailure, InvalidConfig
from ..core.json_codec import json_kind

MAX_BODY = 1 << 20  # dockerd's bodies are a few hundred bytes; anything this large is not dockerd


class BodyTimedOut(DecodeFailure):
    """The client stopped sending its body for longer than the read timeout."""


class BodyTooLarge(DecodeFailure):
    """The request body exceeds MAX_BODY; it is not read."""


def decode_body(body: bytes) -> dict[str, object]:
    """The request's fields: an empty body or `null` is no fields; anything else must be
    one JSON object."""
    if len(body) > MAX_BODY:
        raise BodyTooLarge(f"request body of {len(body)} bytes exceeds the limit of {MAX_BODY}")
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise DecodeFailure("request body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise DecodeFailure(f"request body is not JSON: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeFailure(f"request body must be a JSON object, got {json_kind(value)}")
    return value


def text(fields: dict[str, object], name: str, required: bool = False) -> str:
    """A string field; absent or null is "" unless required."""
    value = fields.get(name)
    if value is None:
        if required:
            raise InvalidConfig(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidConfig(f"{name}: expected a string, got {json_kind(value)}")
    if required and not value:
        raise InvalidConfig(f"{name} must not be empty")
    if not value.isascii():  # JSON's "\udcff" is a lone surrogate, which no store holds (dockerd never sends one)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidConfig(f"{name}: not valid Unicode (a lone surrogate escape)") from None
    return value


def flag(fields: dict[str, object], name: str) -> bool:
    value = fields.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidConfig(f"{name}: expected true or false, got {json_kind(value)}")
    return value


def options(fields: dict[str, object], name: str = "Options") -> dict[str, str]:
    """A map of string options; null (aux addresses) is an empty map."""
    value = fields.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidConfig(f"{name}: expected an object of string values, got {json_kind(value)}")
    return value


def subnet(value: str, name: str) -> Network:
    """A CIDR with its host bits clear (Docker itself refuses `10.0.0.1/24` as a subnet)."""
    address, network = parse_cidr(value, name)
    if address != network.value:
        raise InvalidConfig(f"{name}: {value!r} has host bits set; did you mean {network}?")
    return network


def address(value: str, name: str) -> tuple[int, int]:
    """A plain address, as dockerd sends it (`10.0.0.5`, no prefix length)."""
    return parse_ip(value, name)


def usable(network: Network, name: str) -> Network:
    """Refuse pools without an address to hand out once network, broadcast (IPv4) and
    the subnet-router anycast (IPv6) are reserved."""
    longest = BITS[network.family] - (2 if network.family == 4 else 1)
    if network.prefix > longest:
        raise InvalidConfig(f"{name}: {network} is too small; the longest IPv{network.family} prefix is /{longest}")
    return network


def with_prefix(family: int, value: int, prefix: int) -> str:
    return f"{format_ip(family, value)}/{prefix}"
