"""The ecs dialect: upstream's keys and defaults, with its bugs (shared/reference/ecs-ipam.md §11) fixed."""

import pytest

from cnipam.core.addresses import parse_ip
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import InvalidConfig


def ip(text: str) -> int:
    return parse_ip(text)[1]


def test_readme_dual_stack_example_parses() -> None:
    config = parse_ecs(
        {
            "type": "ecs-ipam", "id": "container-12345",
            "ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.2/24", "ipv4-gateway": "10.0.0.1",
            "ipv4-routes": [{"dst": "169.254.170.2/32"}],
            "ipv6-subnet": "2001:db8::/64", "ipv6-address": "2001:db8::2/64", "ipv6-gateway": "2001:db8::1",
            "ipv6-routes": [{"dst": "fd00:ec2::254/128"}],
        }
    )  # fmt: skip
    v4, v6 = config.pools
    assert config.owner_id == "container-12345"
    assert (v4.slot, v4.key, v4.requested, v4.ranges[0].gateway) == ("4", "10.0.0.0/24", ip("10.0.0.2"), ip("10.0.0.1"))
    assert (v6.slot, v6.key, v6.requested, v6.ranges[0].gateway) == (
        "6",
        "2001:db8::/64",
        ip("2001:db8::2"),
        ip("2001:db8::1"),
    )
    assert [r["dst"] for r in config.routes] == ["169.254.170.2/32", "fd00:ec2::254/128"]


def test_defaults_gateway_is_network_plus_one_and_ranges_skip_it() -> None:
    (pool,) = parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools
    assert pool.ranges[0].gateway == ip("10.0.0.1")
    assert pool.pieces == ((ip("10.0.0.2"), ip("10.0.0.254")),)


def test_explicit_gateway_splits_the_range() -> None:
    (pool,) = parse_ecs({"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.8"}).pools
    assert pool.pieces == ((ip("10.0.0.1"), ip("10.0.0.7")), (ip("10.0.0.9"), ip("10.0.0.254")))


def test_ipv6_all_ones_address_is_usable() -> None:
    (pool,) = parse_ecs({"ipv6-subnet": "2001:db8::4/126"}).pools
    assert pool.pieces == ((ip("2001:db8::6"), ip("2001:db8::7")),)
    (pool,) = parse_ecs({"ipv6-subnet": "2001:db8::/64", "ipv6-address": "2001:db8::ffff:ffff:ffff:ffff/64"}).pools
    assert pool.requested == ip("2001:db8::ffff:ffff:ffff:ffff")


def test_no_id_and_empty_id_mean_no_owner_id() -> None:
    assert parse_ecs({"ipv4-subnet": "10.0.0.0/24", "id": ""}).owner_id is None


@pytest.mark.parametrize(
    ("ipam", "message"),
    [
        ({}, "at least one subnet"),
        ({"ipv4-subnet": "10.0.0.5/24"}, "ipam.ipv4-subnet: 10.0.0.5/24 has host bits set"),
        ({"ipv4-subnet": "10.0.0.255/24"}, "host bits"),
        ({"ipv6-subnet": "2001:db8::5/64"}, "ipam.ipv6-subnet: .* host bits"),
        ({"ipv4-subnet": "10.0.0.0/31"}, "too small"),
        ({"ipv6-subnet": "2001:db8::/127"}, "too small"),
        ({"ipv4-subnet": ""}, "ipam.ipv4-subnet"),
        ({"ipv4-subnet": None}, "ipam.ipv4-subnet"),
        ({"ipv4-subnet": "2001:db8::/64"}, "not an IPv4 subnet"),
        ({"ipv6-subnet": "10.0.0.0/24"}, "not an IPv6 subnet"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.2"}, "ipam.ipv4-address: .* no prefix length"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.1.2/24"}, "not within the subnet"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.0/24"}, "network address"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.255/24"}, "broadcast address"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.1/24"}, "is the gateway"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.9/16"}, "prefix length /16 differs"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.1/24"}, "plain address"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.1.1"}, "not within the subnet"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.0"}, "network address"),
        ({"ipv6-subnet": "2001:db8::/64", "ipv6-gateway": "10.0.0.1"}, "not an IPv6 address"),
        ({"ipv6-subnet": "2001:db8::/64", "ipv6-gateway": "gggg"}, "ipam.ipv6-gateway"),
        ({"ipv6-subnet": "2001:db8::/64", "ipv6-address": "2001:db8::/64"}, "network address"),
        (
            {"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"gw": "10.0.0.1"}]},
            r"ipam.ipv4-routes\[0\]: route has no dst",
        ),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"dst": "2001:db8::/64"}]}, "not an IPv4 prefix"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"dst": "1.0.0.0/8", "gw": "::1"}]}, "same family"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": {"dst": "1.0.0.0/8"}}, "expected a list"),
        ({"ipv4-subnet": "10.0.0.0/24", "id": 5}, "ipam.id: expected a string"),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv6-address": "2001:db8::2/64"}, "ipv6-subnet is not"),
    ],
)
def test_refusals_name_the_key(ipam: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_ecs(ipam)
