"""The ecs-ipam config dialect: `ipam.id` and `ipv4-*` / `ipv6-*` keys.

Same keys and meaning as Amazon's ecs-ipam, with its bugs fixed (shared/reference/ecs-ipam.md
§11): a subnet with host bits is refused instead of yielding a gateway outside it (B10), a
route needs a `dst` and must match its family (B11), an explicit address must carry the
subnet's own prefix length (B11), and IPv4 and IPv6 are validated by the same code (B1).
Validation is complete before any store is touched, so a refused config changes nothing.
"""

from __future__ import annotations

from .addresses import BITS, Network, format_ip, parse_cidr, parse_ip
from .errors import InvalidConfig
from .ipam_config import ECS, AddressRange, IPAMConfig, PoolSpec, default_bounds, parse_routes
from .reuse import NO_DELAY, ReuseDelay, parse_reuse


def parse_ecs(ipam: dict[str, object]) -> IPAMConfig:
    owner_id = ipam.get("id")
    if owner_id is not None and not isinstance(owner_id, str):
        raise InvalidConfig(f"ipam.id: expected a string, got {type(owner_id).__name__}")
    reuse = NO_DELAY  # upstream's order exactly, unless the config asks for a delay
    if ipam.get("reuse-delay") is not None or ipam.get("when-only-cooling") is not None:
        reuse = parse_reuse(
            ipam.get("reuse-delay"), ipam.get("when-only-cooling"), "ipam.reuse-delay", "ipam.when-only-cooling"
        )
    pools = []
    routes: list[dict[str, object]] = []
    for family in (4, 6):
        prefix = f"ipv{family}-"
        if prefix + "subnet" not in ipam:
            for key in ("address", "gateway", "routes"):
                if ipam.get(prefix + key) is not None:
                    raise InvalidConfig(f"ipam.{prefix}{key} is set but ipam.{prefix}subnet is not")
            continue
        pools.append(_parse_family(ipam, family, reuse))
        routes.extend(parse_routes(ipam.get(prefix + "routes"), family, f"ipam.{prefix}routes"))
    if not pools:
        raise InvalidConfig("ipam: at least one subnet (ipv4-subnet or ipv6-subnet) is required")
    return IPAMConfig(ECS, tuple(pools), tuple(routes), {}, owner_id or None)


def _parse_family(ipam: dict[str, object], family: int, reuse: ReuseDelay) -> PoolSpec:
    prefix = f"ipv{family}-"
    key = f"ipam.{prefix}subnet"
    written, network = parse_cidr(ipam[prefix + "subnet"], key)
    if network.family != family:
        raise InvalidConfig(f"{key}: {ipam[prefix + 'subnet']} is not an IPv{family} subnet")
    if written != network.value:
        raise InvalidConfig(f"{key}: {ipam[prefix + 'subnet']} has host bits set (the subnet is {network})")
    if network.prefix > BITS[family] - 2:
        raise InvalidConfig(f"{key}: /{network.prefix} is too small to allocate from (at most /{BITS[family] - 2})")
    # IPv4 loses the network and broadcast addresses; IPv6 only the subnet-router anycast (network) address.
    first, last = default_bounds(network)

    gateway = first
    if ipam.get(prefix + "gateway") is not None:
        gateway = _address_in(network, first, last, ipam[prefix + "gateway"], f"ipam.{prefix}gateway")
    requested = None
    if ipam.get(prefix + "address") is not None:
        what = f"ipam.{prefix}address"
        address, address_net = parse_cidr(ipam[prefix + "address"], what)
        _address_in(network, first, last, format_ip(address_net.family, address), what, address_net.family)
        if address_net.prefix != network.prefix:
            raise InvalidConfig(
                f"{what}: prefix length /{address_net.prefix} differs from the subnet's /{network.prefix}"
            )
        if address == gateway:
            raise InvalidConfig(f"{what}: {format_ip(family, address)} is the gateway")
        requested = address
    return PoolSpec(str(family), str(network), (AddressRange(network, first, last, gateway),), requested, reuse=reuse)


def _address_in(network: Network, first: int, last: int, text: object, what: str, family: int | None = None) -> int:
    """Parse an address that must be a usable host address of `network`."""
    if family is None:
        if isinstance(text, str) and "/" in text:
            raise InvalidConfig(f"{what}: {text!r} must be a plain address, not a CIDR")
        family, address = parse_ip(text, what)
    else:
        address = parse_ip(text, what)[1]
    if family != network.family:
        raise InvalidConfig(f"{what}: {text} is not an IPv{network.family} address")
    if address not in network:
        raise InvalidConfig(f"{what}: {text} is not within the subnet {network}")
    if not first <= address <= last:
        kind = "network" if address == network.value else "broadcast"
        raise InvalidConfig(f"{what}: {text} is the {kind} address of {network}")
    return address
