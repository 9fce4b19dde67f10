"""Address arithmetic against the C library's parser and printer as the oracle."""

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnipam.core.addresses import format_ip, parse_cidr, parse_ip
from cnipam.core.errors import InvalidConfig


@given(st.integers(0, 2**32 - 1))
def test_ipv4_round_trips_like_inet(value: int) -> None:
    text = socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    assert format_ip(4, value) == text
    assert parse_ip(text) == (4, value)


@given(st.one_of(st.integers(0, 2**128 - 1), st.integers(0, 2**16 - 1).map(lambda g: g << 64)))
def test_ipv6_parses_every_inet_form(value: int) -> None:
    packed = value.to_bytes(16, "big")
    assert parse_ip(socket.inet_ntop(socket.AF_INET6, packed)) == (6, value)
    assert parse_ip(format_ip(6, value)) == (6, value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "::"),
        (1, "::1"),
        (0x20010DB8 << 96 | 1, "2001:db8::1"),
        (0x20010DB8000000000001000000000001, "2001:db8::1:0:0:1"),  # equal runs: the first is compressed
        (0x20010DB8000100000000000000000001, "2001:db8:1::1"),
        (0x00010000000000010000000000000001, "1:0:0:1::1"),  # the longest run is compressed
        (0x20010DB8000100010001000100010001, "2001:db8:1:1:1:1:1:1"),  # a single zero group is never compressed
    ],
)
def test_ipv6_text_follows_rfc5952(value: int, text: str) -> None:
    assert format_ip(6, value) == text


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.-4", "\u0661.2.3.4", ":::", "1::2::3", "12345::",
     "1:2:3:4:5:6:7:8:9", "1.2.3.4::", "::1.2.3", "g::", "1:2:3:4:5:6:7:8::", ":1::", "1::2:", "fe80::1%eth0",
     " 10.0.0.1"],
)  # fmt: skip
def test_malformed_addresses_are_refused_with_the_key(text: str) -> None:
    with pytest.raises(InvalidConfig, match="ipam.x"):
        parse_ip(text, "ipam.x")


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="got int"):
        parse_ip(7, "ipam.x")


def test_cidr_keeps_the_written_address_and_its_network() -> None:
    written, network = parse_cidr("10.0.0.5/24", "k")
    assert written == parse_ip("10.0.0.5")[1]
    assert str(network) == "10.0.0.0/24" and network.size == 256
    assert network.last == parse_ip("10.0.0.255")[1]
    _, v6 = parse_cidr("2001:db8::/64", "k")
    assert v6.size == 2**64 and str(v6) == "2001:db8::/64"


@pytest.mark.parametrize("text", ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/2x", "::/129", "10.0.0.0/0024"])
def test_bad_cidrs_name_the_key(text: str) -> None:
    with pytest.raises(InvalidConfig, match="ipam.subnet"):
        parse_cidr(text, "ipam.subnet")
