"""host-local's dialect: range sets, canonicalisation, refusals, requested addresses."""

import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnipam.core.addresses import parse_ip
from cnipam.core.cni_args import parse_cni_args
from cnipam.core.errors import InvalidConfig, InvalidEnvironment
from cnipam.core.ipam_config import (
    DIGEST_PREFIX,
    MAX_RANGES,
    MAX_REQUESTED,
    POOL_KEY_LIMIT,
    names_ranges,
    parse_pool_key,
)
from cnipam.core.ipam_dialect import parse_ipam
from cnipam.core.resolv_conf import parse_resolv_conf


def ip(text: str) -> int:
    return parse_ip(text)[1]


def config(ipam: Mapping[str, object], **top: object) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "cnipam", **ipam}, **top}


def test_single_range_defaults_like_host_local() -> None:
    (pool,) = parse_ipam(config({"subnet": "10.22.0.0/24"})).pools
    (r,) = pool.ranges
    assert (r.first, r.last, r.gateway) == (ip("10.22.0.1"), ip("10.22.0.254"), ip("10.22.0.1"))
    assert pool.pieces == ((ip("10.22.0.2"), ip("10.22.0.254")),)  # the gateway is skipped: first lease .2
    assert pool.key == pool.slot == "10.22.0.0/24"


def test_ipv6_range_ends_at_all_ones() -> None:
    (pool,) = parse_ipam(config({"ranges": [[{"subnet": "2001:db8::/64"}]]})).pools
    assert pool.ranges[0].last == ip("2001:db8::ffff:ffff:ffff:ffff")


def test_gateway_at_the_end_makes_the_first_lease_dot_one() -> None:
    (pool,) = parse_ipam(config({"subnet": "10.22.0.0/24", "gateway": "10.22.0.254"})).pools
    assert pool.pieces[0][0] == ip("10.22.0.1")


def test_range_sets_keep_order_and_name_their_position_by_content() -> None:
    ipam = {
        "subnet": "10.9.0.0/24",
        "ranges": [[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.60"},
                    {"subnet": "10.23.0.0/24"}],
                   [{"subnet": "2001:db8:23::/64"}]],
    }  # fmt: skip
    pools = parse_ipam(config(ipam)).pools
    assert [p.family for p in pools] == [4, 4, 6]
    assert pools[1].key == "10.22.0.0/24[10.22.0.10-10.22.0.60],10.23.0.0/24"
    reordered = {
        "ranges": [
            [
                {"subnet": "10.23.0.0/24"},
                {"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.60"},
            ]
        ]
    }
    assert parse_ipam(config(reordered)).pools[0].key == pools[1].key  # reordering ranges does not move the position


def test_runtime_ip_ranges_come_first() -> None:
    pools = parse_ipam(
        config({"subnet": "10.9.0.0/24"}, runtimeConfig={"ipRanges": [[{"subnet": "10.8.0.0/24"}]]})
    ).pools
    assert [p.key for p in pools] == ["10.8.0.0/24", "10.9.0.0/24"]


@pytest.mark.parametrize(
    ("ipam", "message"),
    [
        ({"subnet": "10.22.0.5/24"}, r"ipam.subnet: 10.22.0.5/24 has host bits set \(the network is 10.22.0.0/24\)"),
        ({"subnet": "10.22.0.0/31"}, "too small"),
        ({"subnet": "2001:db8::/127"}, "too small"),
        (
            {"subnet": "10.22.0.0/24", "rangeStart": "10.23.0.1"},
            "ipam.rangeStart: 10.23.0.1 is not within 10.22.0.0/24",
        ),
        ({"subnet": "10.22.0.0/24", "rangeEnd": "10.21.0.1"}, "rangeEnd"),
        ({"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.9", "rangeEnd": "10.22.0.8"}, "is after rangeEnd"),
        ({"subnet": "10.22.0.0/24", "gateway": "2001:db8::1"}, "not in the family"),
        (
            {"ranges": [[{"subnet": "10.22.0.0/24"}, {"subnet": "10.22.0.0/25"}]]},
            r"ipam.ranges\[0\]: ranges 0 and 1 overlap",
        ),
        (
            {"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "10.22.0.128/25"}]]},
            "range set 0 overlaps with range set 1",
        ),
        ({"subnet": "10.22.0.0/24", "ranges": [[{"subnet": "10.22.0.0/24"}]]}, "range set 0 overlaps with range set 1"),
        ({"ranges": [[{"subnet": "10.22.0.0/24"}, {"subnet": "2001:db8::/64"}]]}, "mixed address families"),
        ({"ranges": [[]]}, "non-empty list"),
        ({"ranges": {"subnet": "10.22.0.0/24"}}, "expected a list of range sets"),
        ({"ranges": [[{"rangeStart": "10.22.0.1"}]]}, r"ipam.ranges\[0\]\[0\].subnet: missing"),
        ({"subnet": "10.22.0.0/24", "dataDir": ""}, "ipam.dataDir"),
        ({"subnet": "10.22.0.0/24", "routes": [{"gw": "10.22.0.1"}]}, "route has no dst"),
        ({"subnet": "10.22.0.0/24", "ipv4-subnet": "10.9.0.0/24"}, "mixes the ecs keys"),
        ({"type": "cnipam"}, "no subnet configured"),
    ],
)
def test_host_local_refusals(ipam: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_ipam(config(ipam))


def test_legacy_versions_allow_one_range_set_per_family() -> None:
    two = {"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "10.23.0.0/24"}]]}
    with pytest.raises(InvalidConfig, match="allows one IPv4 range set"):
        parse_ipam({**config(two), "cniVersion": "0.2.0"})
    assert len(parse_ipam({**config(two), "cniVersion": "0.3.1"}).pools) == 2


DUAL = {"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "2001:db8::/64"}]]}


def test_requested_addresses_go_to_their_range_set() -> None:
    pools = parse_ipam(config(DUAL, args={"cni": {"ips": ["2001:db8::5", "10.22.0.42/24"]}})).pools
    assert [p.requested for p in pools] == [ip("10.22.0.42"), ip("2001:db8::5")]


def test_args_win_over_cni_args_but_cni_args_is_still_checked() -> None:
    pools = parse_ipam(config(DUAL, args={"cni": {"ips": ["10.22.0.42"]}}), "IP=10.22.0.99").pools
    assert pools[0].requested == ip("10.22.0.42")
    assert parse_ipam(config(DUAL), "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.22.0.99").pools[0].requested == ip(
        "10.22.0.99"
    )
    assert parse_ipam(config(DUAL, runtimeConfig={"ips": ["10.22.0.7"]})).pools[0].requested == ip("10.22.0.7")
    with pytest.raises(InvalidEnvironment, match="unknown keys K8S_POD_NAME"):
        parse_ipam(config(DUAL, args={"cni": {"ips": ["10.22.0.42"]}}), "K8S_POD_NAME=x")


@pytest.mark.parametrize(
    ("ips", "message"),
    [
        (["10.22.1.1"], "requested address 10.22.1.1 is outside every range"),
        (["10.22.0.1"], "is the gateway of 10.22.0.0/24"),
        (["10.22.0.5", "10.22.0.6"], "10.22.0.6 is outside every range"),  # one address per range set
        (["bogus"], r"args.cni.ips\[0\]"),
    ],
)
def test_requested_address_refusals(ips: list[str], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_ipam(config(DUAL, args={"cni": {"ips": ips}}))


def test_requested_outside_range_bounds_but_inside_subnet_is_refused() -> None:
    ipam = {"ranges": [[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.60"}]]}
    with pytest.raises(InvalidConfig, match="outside every range"):
        parse_ipam(config(ipam, args={"cni": {"ips": ["10.22.0.70"]}}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("IP", "not a KEY=VALUE"),
        ("IP=", "not a KEY=VALUE"),
        ("ip=1.2.3.4", "unknown keys ip"),
        ("IgnoreUnknown=maybe", "not a boolean"),
    ],
)
def test_cni_args_refusals(text: str, message: str) -> None:
    with pytest.raises(InvalidEnvironment, match=message):
        parse_cni_args(text, ("IP",))


def test_cni_args() -> None:
    assert parse_cni_args("", ("IP",)) == {}
    assert parse_cni_args("IgnoreUnknown=true;FOO=1;IP=10.0.0.1", ("IP",)) == {"IP": "10.0.0.1"}


def test_resolv_conf() -> None:
    text = (
        "# comment\n; also\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n"
        "domain example.com\nsearch a.example b.example\noptions ndots:2 edns0\nbogus\n"
    )
    assert parse_resolv_conf(text) == {
        "nameservers": ["10.0.0.53", "10.0.0.54"],
        "domain": "example.com",
        "search": ["a.example", "b.example"],
        "options": ["ndots:2", "edns0"],
    }
    assert parse_resolv_conf("") == {}


@pytest.mark.parametrize(
    "ipam",
    [
        {"ipv4-subnet": "10.0.0.0/24"},
        {"ipv6-subnet": "2001:db8::/64"},
        {
            "ranges": [
                [
                    {"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.60"},
                    {"subnet": "10.23.0.0/24"},
                ]
            ]
        },
    ],
)
def test_pool_keys_parse_back_to_their_ranges(ipam: dict[str, object]) -> None:
    from cnipam.core.ipam_config import parse_pool_key, pool_key

    (pool,) = parse_ipam(config(ipam)).pools
    parsed = parse_pool_key(pool.key)
    assert pool_key(parsed) == pool.key
    assert sorted((r.first, r.last) for r in parsed) == sorted((r.first, r.last) for r in pool.ranges)


# -- bounded work (docs/security.md, fix 13) -------------------------------------------

small_ranges = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 8)).map(lambda pair: (pair[0], pair[0] + pair[1])),
    min_size=1,
    max_size=12,
)


@given(small_ranges)
def test_overlaps_are_found_by_sorting_exactly_when_some_pair_overlaps(bounds: list[tuple[int, int]]) -> None:
    """The n log n sweep against the pairwise check it replaced: same verdict, and the
    pair it names really overlaps."""
    ranges = [
        {"subnet": "10.0.0.0/24", "rangeStart": f"10.0.0.{first + 1}", "rangeEnd": f"10.0.0.{last + 1}"}
        for first, last in bounds
    ]
    pairs = [
        (a, b) for b in range(len(bounds)) for a in range(b)
        if bounds[a][0] <= bounds[b][1] and bounds[b][0] <= bounds[a][1]
    ]  # fmt: skip
    if not pairs:
        parse_ipam(config({"ranges": [ranges]}))
        return
    with pytest.raises(InvalidConfig, match=r"ranges (\d+) and (\d+) overlap") as refused:
        parse_ipam(config({"ranges": [ranges]}))
    named = tuple(int(n) for n in re.findall(r"ranges (\d+) and (\d+)", refused.value.message)[0])
    assert named in pairs
    sets = [[one] for one in ranges]  # the same ranges as range sets of their own
    with pytest.raises(InvalidConfig, match=r"range set (\d+) overlaps with range set (\d+)") as refused:
        parse_ipam(config({"ranges": sets}))
    named = tuple(
        int(n) for n in re.findall(r"range set (\d+) overlaps with range set (\d+)", refused.value.message)[0]
    )
    assert named in pairs


def test_a_config_names_at_most_max_ranges() -> None:
    many = [{"subnet": f"10.{i // 256}.{i % 256}.0/24"} for i in range(MAX_RANGES)]
    (pool,) = parse_ipam(config({"ranges": [many]})).pools
    assert len(pool.ranges) == MAX_RANGES
    with pytest.raises(InvalidConfig, match=f"{MAX_RANGES + 1} ranges in all; a config may name at most {MAX_RANGES}"):
        parse_ipam(config({"subnet": "192.168.0.0/24", "ranges": [many]}))
    with pytest.raises(InvalidConfig, match=f"at most {MAX_RANGES}"):
        parse_ipam(config({"ranges": [[one] for one in many] + [[{"subnet": "192.168.0.0/24"}]]}))


def test_a_call_requests_at_most_max_requested_addresses() -> None:
    sets = [[{"subnet": f"10.{i // 256}.{i % 256}.0/24"}] for i in range(MAX_REQUESTED + 1)]
    wanted = [f"10.{i // 256}.{i % 256}.9" for i in range(MAX_REQUESTED + 1)]
    pools = parse_ipam(config({"ranges": sets}, args={"cni": {"ips": wanted[:MAX_REQUESTED]}})).pools
    assert [pool.requested for pool in pools[:2]] == [ip("10.0.0.9"), ip("10.0.1.9")] and pools[-1].requested is None
    with pytest.raises(InvalidConfig, match=f"{MAX_REQUESTED + 1} requested addresses; a call may request at most"):
        parse_ipam(config({"ranges": sets}, args={"cni": {"ips": wanted}}))


def test_requested_addresses_find_their_range_set_by_bisection() -> None:
    """Out of order, repeated, in sets given in any order, between and beyond ranges."""
    sets = [
        [{"subnet": "10.2.0.0/24"}],
        [{"subnet": "10.0.0.0/24"}, {"subnet": "10.1.0.0/24"}],
        [{"subnet": "fd00::/64"}],
    ]
    ask = ["fd00::5", "10.1.0.7", "10.1.0.7", "10.2.0.3"]
    pools = parse_ipam(config({"ranges": sets}, args={"cni": {"ips": ask}})).pools
    assert [pool.requested for pool in pools] == [ip("10.2.0.3"), ip("10.1.0.7"), ip("fd00::5")]
    for stray in ("9.255.255.255", "10.0.255.255", "10.3.0.1", "fd00:0:0:1::1"):
        with pytest.raises(InvalidConfig, match=f"requested address {stray} is outside every range"):
            parse_ipam(config({"ranges": sets}, args={"cni": {"ips": [stray]}}))


def test_a_pool_of_many_ranges_is_named_by_a_digest_of_them() -> None:
    """Its name is what every lease row and position of the pool stores: it must not
    grow with the config (8,000 ranges are a 200 KB text)."""
    many = [{"subnet": f"10.{i // 256}.{i % 256}.0/24"} for i in range(8000)]
    (pool,) = parse_ipam(config({"ranges": [many]})).pools
    assert pool.key == pool.slot and pool.key.startswith(DIGEST_PREFIX) and len(pool.key) == 39
    assert not names_ranges(pool.key)
    (again,) = parse_ipam(config({"ranges": [many[::-1]]})).pools
    assert again.key == pool.key  # order-independent, as the ranges' own text is
    (fewer,) = parse_ipam(config({"ranges": [many[1:]]})).pools
    assert fewer.key != pool.key
    with pytest.raises(InvalidConfig, match="named by a digest"):
        parse_pool_key(pool.key)
    few = [{"subnet": f"10.0.{i}.0/24"} for i in range(POOL_KEY_LIMIT // 14)]  # "10.0.N.0/24," each
    (readable,) = parse_ipam(config({"ranges": [few]})).pools
    assert names_ranges(readable.key) and len(parse_pool_key(readable.key)) == len(few)
