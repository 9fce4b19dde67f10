"""Converting a plugin result between spec versions (shared/reference/cni-spec.md §2).

A plugin answers in its config's version, but a cached result may be older than the
config that reads it (a node upgraded between ADD and DEL) and a runtime wants one version
back, so results move between the three shapes:

* 0.1.0/0.2.0: `ip4`/`ip6` (one address per family, routes inside them);
* 0.3.0/0.3.1/0.4.0: `interfaces`, `ips` with a mandatory `version`, top-level `routes`;
* 1.0.0/1.1.0: as 0.4.0 without `ips[].version`, plus 1.1.0's new optional fields.

The rules are libcni's converters (02x <-> 04x <-> 1.x). Where Go keeps fields that the
target spec does not define (1.1.0 route fields in a 0.4.0 result), we keep only what the
target spec defines; within a family only `cniVersion` changes.

`as_go_types` is a different step: what a result becomes when Go libcni reads it into its
typed structs and writes it out again, which is what its result cache holds.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..core.cni_version import SUPPORTED
from .errors import ResultError

_FAMILIES = {
    "0.1.0": "02x",
    "0.2.0": "02x",
    "0.3.0": "04x",
    "0.3.1": "04x",
    "0.4.0": "04x",
    "1.0.0": "1x",
    "1.1.0": "1x",
}
_INTERFACE_04X = ("name", "mac", "sandbox")
_INTERFACE_1X = (
    "name",
    "mac",
    "mtu",
    "sandbox",
    "socketPath",
    "pciID",
)  # libcni 1.2+: mtu, socketPath, pciID (CNI 1.1.0)
_DNS = ("nameservers", "domain", "search", "options")


def family(version: str) -> str:
    """Which result shape a spec version uses; unknown versions are refused, as libcni does."""
    try:
        return _FAMILIES[version]
    except KeyError:
        raise ResultError(
            f'unsupported CNI result version "{version}"', f"known versions: {list(SUPPORTED)}", code=1
        ) from None


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


def as_go_types(result: dict[str, Any]) -> dict[str, Any]:
    """`result` as Go libcni 1.2 and later keeps it: read into the typed result of its
    version (types020/040/100) and marshalled again, as its cacheAdd does.

    That drops every key the structs do not have and every empty `omitempty` field (empty
    lists, "" strings, a 0 `mtu`), prints addresses as Go's net.IP prints them, always
    writes an interface's `name` and a 0.x `version`, and keeps `dns` in 0.x results even
    when empty (`"dns":{}`), while a 1.x result leaves an empty `dns` out (types100's
    MarshalJSON since libcni 1.2). Values of the wrong type, which Go would refuse at ADD,
    are kept as they are: the result has already been accepted.
    """
    shape = family(result_version(result))
    out: dict[str, Any] = {"cniVersion": result["cniVersion"]} if result.get("cniVersion") else {}
    if shape == "02x":
        for key in ("ip4", "ip6"):
            config = result.get(key)
            if isinstance(config, dict):
                out[key] = _go_fields(
                    {
                        "ip": _go_cidr(config.get("ip")),
                        "gateway": _go_ip(config.get("gateway")),
                        "routes": _go_routes(config.get("routes")),
                    }
                )
    else:
        keys = _INTERFACE_04X if shape == "04x" else _INTERFACE_1X
        interfaces = [
            _go_fields({**{k: i.get(k) for k in keys}, "name": i.get("name") or ""}, keep=("name",))
            for i in _dicts(result.get("interfaces"))
        ]
        ips = []
        for ip in _dicts(result.get("ips")):
            fields = {"version": ip.get("version") or ""} if shape == "04x" else {}
            fields.update(
                interface=ip.get("interface"), address=_go_cidr(ip.get("address")), gateway=_go_ip(ip.get("gateway"))
            )
            ips.append(_go_fields(fields, keep=("version", "interface")))
        out.update(_go_fields({"interfaces": interfaces, "ips": ips, "routes": _go_routes(result.get("routes"))}))
    dns = result.get("dns")
    dns = _go_fields({k: dns.get(k) for k in _DNS}) if isinstance(dns, dict) else {}
    if dns or shape != "1x":
        out["dns"] = dns
    return out


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _go_fields(fields: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields Go's `omitempty` writes: none that is absent (None), "", 0 or an empty
    list, except those in `keep` (no omitempty, or a pointer), which go out unless absent."""
    return {k: v for k, v in fields.items() if v is not None and (k in keep or v not in ("", [], 0))}


def _go_routes(routes: Any) -> list[dict[str, Any]]:
    """types.Route: `table` and `scope` are pointers (0 is written), the other numbers are not."""
    return [
        _go_fields(
            {
                "dst": _go_cidr(route.get("dst")),
                "gw": _go_ip(route.get("gw")),
                **{k: route.get(k) for k in ("mtu", "advmss", "priority", "table", "scope")},
            },
            keep=("dst", "table", "scope"),
        )
        for route in _dicts(routes)
    ]


def _go_ip(text: Any) -> Any:
    """net.IP's String(): canonical, and an IPv4-mapped IPv6 address printed as IPv4."""
    if not isinstance(text, str) or not text:
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _go_cidr(text: Any) -> Any:
    """types.IPNet's String(): the address as given (host bits kept) and the prefix length;
    an IPv4-mapped address is IPv4, its prefix counted in the last 32 bits."""
    if not isinstance(text, str) or "/" not in text:
        return text
    try:
        net = ipaddress.ip_interface(text)
    except ValueError:
        return text
    mapped = net.ip.ipv4_mapped if isinstance(net, ipaddress.IPv6Interface) else None
    return f"{mapped}/{max(net.network.prefixlen - 96, 0)}" if mapped else f"{net.ip}/{net.network.prefixlen}"
