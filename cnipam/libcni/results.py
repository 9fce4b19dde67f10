"""Converting a plugin result between spec versions (reference cni-spec.md section 2).

A plugin answers in its config's version, but a cached result may be older than the
config that reads it (a node upgraded between ADD and DEL) and a runtime wants one version
back, so results move between the three shapes:

* 0.1.0/0.2.0: `ip4`/`ip6` (one address per family, routes inside them);
* 0.3.0/0.3.1/0.4.0: `interfaces`, `ips` with a mandatory `version`, top-level `routes`;
* 1.0.0/1.1.0: as 0.4.0 without `ips[].version`, plus 1.1.0's new optional fields.

The rules are libcni's converters (02x <-> 04x <-> 1.x). Where Go keeps fields that the
target spec does not define (1.1.0 route fields in a 0.4.0 result), we keep only what the
target spec defines; within a family only `cniVersion` changes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..core.cni_version import SUPPORTED
from .errors import ResultError

_FAMILIES = {"0.1.0": "02x", "0.2.0": "02x", "0.3.0": "04x", "0.3.1": "04x", "0.4.0": "04x", "1.0.0": "1x", "1.1.0": "1x"}
_INTERFACE_04X = ("name", "mac", "sandbox")


def family(version: str) -> str:
    """Which result shape a spec version uses; unknown versions are refused, as libcni does."""
    try:
        return _FAMILIES[version]
    except KeyError:
        raise ResultError(f'unsupported CNI result version "{version}"', f"known versions: {list(SUPPORTED)}", code=1) from None


def result_version(result: dict[str, Any]) -> str:
    """An absent cniVersion means 0.1.0 (the spec's rule for configs and results)."""
    version = result.get("cniVersion")
    return version if isinstance(version, str) and version else "0.1.0"


def convert(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """`result` as a result of `to_version`; the input is not modified."""
    source, target = family(result_version(result)), family(to_version)
    if source == target:
        return {**result, "cniVersion": to_version}
    middle = result if source == "04x" else (_from_02x(result) if source == "02x" else _from_1x(result))
    if target == "04x":
        return {**middle, "cniVersion": to_version}
    return _to_02x(middle, to_version) if target == "02x" else _to_1x(middle, to_version)


def _is_v4(cidr: str) -> bool:
    """The family of an address or network as Go's To4() decides it (IPv4-mapped IPv6 is 4)."""
    try:
        net = ipaddress.ip_interface(cidr)
    except ValueError as err:
        raise ResultError(f"cannot convert: invalid address {cidr!r}") from err
    return net.version == 4 or net.ip.ipv4_mapped is not None


def _route(route: dict[str, Any]) -> dict[str, Any]:
    return {k: route[k] for k in ("dst", "gw") if k in route}


def _dns(result: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    if "dns" in result:
        out["dns"] = result["dns"]
    return out


def _from_02x(result: dict[str, Any]) -> dict[str, Any]:
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key, version in (("ip4", "4"), ("ip6", "6")):
        config = result.get(key)
        if not isinstance(config, dict):
            continue
        entry = {"version": version, "address": config.get("ip", "")}
        if config.get("gateway"):
            entry["gateway"] = config["gateway"]
        ips.append(entry)
        routes.extend(_route(r) for r in config.get("routes") or [])
    out: dict[str, Any] = {"cniVersion": "0.4.0"}
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    return _dns(result, out)


def _to_02x(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """First IPv4 and first IPv6 address only; routes go to the family of their `dst`."""
    out: dict[str, Any] = {"cniVersion": to_version}
    for ip in result.get("ips") or []:
        key = "ip4" if ip.get("version") == "4" else "ip6" if ip.get("version") == "6" else None
        if key and key not in out:
            out[key] = {"ip": ip.get("address", "")}
            if ip.get("gateway"):
                out[key]["gateway"] = ip["gateway"]
    if "ip4" not in out and "ip6" not in out:
        raise ResultError("cannot convert: no valid IP addresses", code=1)
    for route in result.get("routes") or []:
        key = "ip4" if _is_v4(route.get("dst", "")) else "ip6"
        if key in out:
            out[key].setdefault("routes", []).append(_route(route))
    return _dns(result, out)


def _from_1x(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "0.4.0"}
    if "interfaces" in result:
        out["interfaces"] = [{k: i[k] for k in _INTERFACE_04X if k in i} for i in result["interfaces"] or []]
    if "ips" in result:
        out["ips"] = []
        for ip in result["ips"] or []:
            entry = {"version": "4" if _is_v4(ip.get("address", "")) else "6"}
            entry.update({k: ip[k] for k in ("interface", "address", "gateway") if k in ip})
            out["ips"].append(entry)
    if "routes" in result:
        out["routes"] = [_route(r) for r in result["routes"] or []]
    return _dns(result, out)


def _to_1x(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": to_version}
    if "interfaces" in result:
        out["interfaces"] = [{k: i[k] for k in _INTERFACE_04X if k in i} for i in result["interfaces"] or []]
    if "ips" in result:
        out["ips"] = [{k: ip[k] for k in ("interface", "address", "gateway") if k in ip} for ip in result["ips"] or []]
    if "routes" in result:
        out["routes"] = [_route(r) for r in result["routes"] or []]
    return _dns(result, out)
