"""CNI results in the format of the request's spec version (shared/reference/cni-spec.md §2).

An IPAM plugin returns the abbreviated result: addresses, routes and DNS, never
`interfaces`. 0.1.0/0.2.0 use `ip4`/`ip6` objects, 0.3.0-0.4.0 an `ips` list with a
`version` per entry, 1.x the same list without `version`.
"""

from __future__ import annotations

from .addresses import format_ip, parse_cidr, parse_ip
from .cni_version import parse
from .errors import InvalidConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ipam_config import PoolSpec
    from .leases import Lease


def encode_result(
    version: str,
    pools: tuple[PoolSpec, ...],
    leases: list[Lease],
    routes: tuple[dict[str, object], ...],
    dns: dict[str, object],
) -> dict[str, object]:
    ips = []
    for spec, lease in zip(pools, leases, strict=True):
        address_range = spec.range_of(lease.address)
        assert address_range is not None  # the allocator only hands out addresses of the pool
        entry: dict[str, object] = {"address": f"{lease.ip}/{address_range.network.prefix}"}
        if address_range.gateway is not None:
            entry["gateway"] = format_ip(spec.family, address_range.gateway)
        ips.append((lease.family, entry))
    numbers = parse(version)
    if numbers < (0, 3, 0):
        return _legacy(version, ips, routes, dns)
    listed = [{"version": str(family), **entry} if numbers < (1, 0, 0) else entry for family, entry in ips]
    result: dict[str, object] = {"cniVersion": version, "ips": listed}
    if routes:
        result["routes"] = [dict(route) for route in routes]
    result["dns"] = dict(dns)
    return result


def _legacy(
    version: str,
    ips: list[tuple[int, dict[str, object]]],
    routes: tuple[dict[str, object], ...],
    dns: dict[str, object],
) -> dict[str, object]:
    """0.1.0/0.2.0: at most one address per family; routes go with the family of their dst."""
    result: dict[str, object] = {"cniVersion": version}
    for family in (4, 6):
        entries = [entry for fam, entry in ips if fam == family]
        if not entries:
            continue
        block: dict[str, object] = {"ip": entries[0]["address"]}
        if "gateway" in entries[0]:
            block["gateway"] = entries[0]["gateway"]
        mine = [_dst_gw(route) for route in routes if parse_cidr(route["dst"], "route.dst")[1].family == family]
        if mine:
            block["routes"] = mine
        result[f"ip{family}"] = block
    result["dns"] = dict(dns)
    return result


def _dst_gw(route: dict[str, object]) -> dict[str, object]:
    return {key: route[key] for key in ("dst", "gw") if route.get(key) is not None}


def result_addresses(result: object) -> list[tuple[int, int]]:
    """(family, address) of every IP in a result of any spec version (CHECK's prevResult)."""
    if not isinstance(result, dict):
        raise InvalidConfig("prevResult: expected an object")
    texts = []
    if isinstance(result.get("ips"), list):
        texts = [entry.get("address") if isinstance(entry, dict) else None for entry in result["ips"]]
    for key in ("ip4", "ip6"):
        if isinstance(result.get(key), dict):
            texts.append(result[key].get("ip"))
    found = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidConfig(f"prevResult: address #{index} is missing or not a string")
        found.append(parse_ip(text.partition("/")[0], "prevResult address"))
    return found
