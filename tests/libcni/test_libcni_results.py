"""cnipam.libcni's result conversion between spec versions (shared/reference/cni-spec.md §2), a result
as Go's typed structs keep it (what Go libcni caches), and its Go-identical JSON writer.
Pure functions: no plugins run here."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnipam.libcni import ResultError, convert_result
from cnipam.libcni.gojson import marshal
from cnipam.libcni.results import as_go_types

V020 = {
    "cniVersion": "0.2.0",
    "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
    "ip6": {"ip": "2001:db8::5/64", "routes": [{"dst": "::/0"}]},
    "dns": {"nameservers": ["10.1.0.1"]},
}
V040 = {
    "cniVersion": "0.4.0",
    "ips": [
        {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
        {"version": "6", "address": "2001:db8::5/64"},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}
V100 = {
    "cniVersion": "1.0.0",
    "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}, {"address": "2001:db8::5/64"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}


@pytest.mark.parametrize(
    ("source", "target"),
    [(V020, V040), (V040, V020), (V040, V100), (V100, V040), (V020, V100), (V100, V020)],
    ids=["02-04", "04-02", "04-10", "10-04", "02-10", "10-02"],
)
def test_each_direction(source: dict[str, Any], target: dict[str, Any]) -> None:
    assert convert_result(source, target["cniVersion"]) == target
    assert source["cniVersion"] in ("0.2.0", "0.4.0", "1.0.0")  # the input is left alone


def test_within_a_family_only_the_version_changes() -> None:
    assert convert_result(V040, "0.3.1") == {**V040, "cniVersion": "0.3.1"}
    assert convert_result(V020, "0.1.0") == {**V020, "cniVersion": "0.1.0"}
    rich = {**V100, "cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "mtu": 1400, "table": 5, "scope": 0}]}
    assert convert_result(rich, "1.0.0") == {**rich, "cniVersion": "1.0.0"}
    assert convert_result({"ip4": {"ip": "10.0.0.1/8"}}, "0.2.0")["ip4"] == {"ip": "10.0.0.1/8"}  # absent = 0.1.0


def test_down_to_0_2_0_keeps_the_first_address_of_each_family() -> None:
    many = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500, "socketPath": "/s"}],
        "ips": [
            {"address": "10.0.0.2/24", "interface": 0},
            {"address": "10.0.0.3/24"},
            {"address": "::ffff:10.9.9.9/120"},
        ],
        "routes": [{"dst": "10.2.0.0/16", "mtu": 1400, "advmss": 2}, {"dst": "fd00::/8", "gw": "fd00::1"}],
    }
    assert convert_result(many, "0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "10.2.0.0/16"}]},
    }
    assert convert_result(many, "0.4.0") == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff"}],  # 1.1.0-only fields dropped
        "ips": [
            {"version": "4", "address": "10.0.0.2/24", "interface": 0},
            {"version": "4", "address": "10.0.0.3/24"},
            {"version": "4", "address": "::ffff:10.9.9.9/120"},  # IPv4-mapped counts as 4, as Go's To4()
        ],
        "routes": [{"dst": "10.2.0.0/16"}, {"dst": "fd00::/8", "gw": "fd00::1"}],
    }


def test_refusals() -> None:
    with pytest.raises(ResultError, match="no valid IP addresses"):
        convert_result({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}, "0.2.0")
    with pytest.raises(ResultError, match='unsupported CNI result version "2.0.0"'):
        convert_result(V100, "2.0.0")
    with pytest.raises(ResultError, match='unsupported CNI result version "0.5.0"'):
        convert_result({"cniVersion": "0.5.0"}, "1.0.0")


# -- properties -------------------------------------------------------------------------

v4 = st.builds(lambda n, p: f"{ipaddress.IPv4Address(n)}/{p}", st.integers(0, 2**32 - 1), st.integers(0, 32))
v6 = st.builds(
    lambda n, p: f"{ipaddress.IPv6Address((0x2001 << 112) + n)}/{p}", st.integers(0, 2**64 - 1), st.integers(0, 128)
)
gw4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
interface = st.fixed_dictionaries(
    {"name": st.text("abc0", min_size=1, max_size=5)},
    optional={"mac": st.just("aa:bb:cc:dd:ee:ff"), "sandbox": st.just("/x")},
)
ip4_1x = st.fixed_dictionaries({"address": v4}, optional={"gateway": gw4, "interface": st.integers(0, 2)})
ip6_1x = st.fixed_dictionaries({"address": v6}, optional={"interface": st.integers(0, 2)})
routes = st.lists(st.fixed_dictionaries({"dst": st.one_of(v4, v6)}, optional={"gw": gw4}), max_size=4)
optional_1x = {
    "interfaces": st.lists(interface, max_size=3),
    "ips": st.lists(ip4_1x | ip6_1x, max_size=4),
    "routes": routes,
    "dns": st.just({"nameservers": ["1.1.1.1"]}),
}
results_1x = st.fixed_dictionaries({"cniVersion": st.sampled_from(["1.0.0", "1.1.0"])}, optional=optional_1x)


@settings(max_examples=200, deadline=None)
@given(results_1x, st.sampled_from(["0.3.0", "0.3.1", "0.4.0"]))
def test_1x_through_04x_and_back_is_lossless(result: dict[str, Any], middle: str) -> None:
    down = convert_result(result, middle)
    assert all(ip["version"] == ("6" if ":" in ip["address"] else "4") for ip in down.get("ips", []))
    assert convert_result(down, result["cniVersion"]) == result
    assert convert_result(convert_result(down, "1.0.0"), middle) == down


@settings(max_examples=200, deadline=None)
@given(results_1x)
def test_a_result_in_gos_typed_shape_stays_as_it_is(result: dict[str, Any]) -> None:
    typed = as_go_types(result)
    assert as_go_types(typed) == typed
    assert {k for k, v in result.items() if v} - {"dns"} == set(typed) - {"dns"}  # only empty lists go
    assert convert_result(as_go_types(convert_result(result, "0.4.0")), result["cniVersion"]) == {
        **typed,
        "dns": typed.get("dns", {}),
    }


@pytest.mark.parametrize(
    ("result", "typed"),
    [
        (V020, V020),
        (
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "routes": [], "extra": 1}, "ip6": None, "other": 2},
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"}, "dns": {}},
        ),
        (V040, V040),
        (
            {
                "cniVersion": "0.3.1",
                "interfaces": [{"name": "eth0", "mtu": 1500}],
                "ips": [{"address": "10.1.0.5/16", "interface": 0}],
            },
            {
                "cniVersion": "0.3.1",
                "interfaces": [{"name": "eth0"}],
                "ips": [{"version": "", "address": "10.1.0.5/16", "interface": 0}],
                "dns": {},
            },
        ),
        (V100, V100),
        (
            {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5"}], "dns": {"domain": ""}},
            {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5"}]},
        ),
    ],
    ids=["020", "020-extra", "040", "031-no-version", "100", "110-no-prefix"],
)
def test_gos_typed_result_of_each_version(result: dict[str, Any], typed: dict[str, Any]) -> None:
    """An address Go could not parse (no prefix length) is kept as given: cnipam accepted the result already."""
    assert as_go_types(result) == typed


@settings(max_examples=200, deadline=None)
@given(results_1x, st.sampled_from(["0.1.0", "0.2.0"]))
def test_down_to_02x_keeps_first_per_family_and_routes_by_family(result: dict[str, Any], target: str) -> None:
    ips = result.get("ips", [])
    if not ips:
        with pytest.raises(ResultError):
            convert_result(result, target)
        return
    old = convert_result(result, target)
    first4 = next((ip for ip in ips if ":" not in ip["address"]), None)
    first6 = next((ip for ip in ips if ":" in ip["address"]), None)
    assert old.get("ip4", {}).get("ip") == (first4 or {}).get("address")
    assert old.get("ip6", {}).get("ip") == (first6 or {}).get("address")
    for key, is6 in (("ip4", False), ("ip6", True)):
        if key in old:
            wanted = [
                {k: r[k] for k in ("dst", "gw") if k in r} for r in result.get("routes", []) if (":" in r["dst"]) == is6
            ]
            assert old[key].get("routes", []) == wanted
    # and back up: the addresses survive, one per family, with their routes
    up = convert_result(old, result["cniVersion"])
    assert [ip["address"] for ip in up.get("ips", [])] == [ip["address"] for ip in (first4, first6) if ip]


def _numbers_as_floats(value: Any) -> Any:
    """Go decodes every JSON number as a float64; compare values the way it sees them."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    return {k: _numbers_as_floats(v) for k, v in value.items()}


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_go_json_is_json_with_the_same_value(value: Any) -> None:
    text = marshal(value)
    assert _numbers_as_floats(json.loads(text)) == _numbers_as_floats(value)
    assert not any(c in text for c in "<>&\u2028\u2029")  # escaped, as Go's HTML-safe encoder does


@pytest.mark.parametrize(
    ("value", "go"),
    [
        (1.0, "1"),
        (-0.0, "-0"),
        (0.1, "0.1"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (2.5e-10, "2.5e-10"),
        (10**22, "1e+22"),
        ("a<b>&c\u2028", '"a\\u003cb\\u003e\\u0026c\\u2028"'),
        ("tab\t\x01é", '"tab\\t\\u0001é"'),
        ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
    ],
)
def test_go_json_matches_encoding_json(value: Any, go: str) -> None:
    assert marshal(value) == go
