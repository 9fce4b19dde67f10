"""Request validation, result formats per spec version, versions, and Go durations."""

import pytest

from cnipam.core.cni_request import is_valid_ifname, is_valid_name, parse_request
from cnipam.core.cni_result import encode_result, result_addresses
from cnipam.core.cni_version import SUPPORTED, require_supported
from cnipam.core.durations import parse_go_duration
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import DecodeFailure, IncompatibleVersion, InvalidConfig, InvalidEnvironment
from cnipam.core.leases import LEASE, Lease
from cnipam.store.settings import DEFAULT_PATH, StoreSettings

CONFIG = parse_ecs(
    {"ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "2001:db8::/64",
     "ipv4-routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400}], "ipv6-routes": [{"dst": "::/0"}]}
)  # fmt: skip
LEASES = [
    Lease(4, 0x0A000002, LEASE, "10.0.0.0/24", "4", None, "", "", "", 0.0),
    Lease(6, 0x20010DB8 << 96 | 2, LEASE, "2001:db8::/64", "6", None, "", "", "", 0.0),
]


def test_1x_results_have_no_version_field() -> None:
    result = encode_result("1.0.0", CONFIG.pools, LEASES, CONFIG.routes, CONFIG.dns)
    assert result == {
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
            {"address": "2001:db8::2/64", "gateway": "2001:db8::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400}, {"dst": "::/0"}],
        "dns": {},
    }


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_03x_results_carry_the_family(version: str) -> None:
    result = encode_result(version, CONFIG.pools, LEASES, CONFIG.routes, CONFIG.dns)
    assert [entry["version"] for entry in result["ips"]] == ["4", "6"]  # type: ignore[attr-defined]
    assert result["cniVersion"] == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_02x_results_split_by_family_with_their_routes(version: str) -> None:
    result = encode_result(version, CONFIG.pools, LEASES, CONFIG.routes, CONFIG.dns)
    assert result["ip4"] == {
        "ip": "10.0.0.2/24",
        "gateway": "10.0.0.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
    }
    assert result["ip6"] == {"ip": "2001:db8::2/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0"}]}
    assert "ips" not in result


@pytest.mark.parametrize("version", SUPPORTED)
def test_prev_results_of_every_version_are_read_back(version: str) -> None:
    result = encode_result(version, CONFIG.pools, LEASES, CONFIG.routes, CONFIG.dns)
    assert result_addresses(result) == [(4, 0x0A000002), (6, 0x20010DB8 << 96 | 2)]


def test_malformed_prev_result_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="prevResult"):
        result_addresses({"ips": [{"address": 5}]})


def test_versions() -> None:
    assert require_supported(None) == "0.1.0"
    with pytest.raises(IncompatibleVersion) as refused:
        require_supported("0.5.0")
    assert 'config is "0.5.0"' in refused.value.details


ENV = {"CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x"}


def test_request_is_parsed() -> None:
    request = parse_request("ADD", ENV, b'{"cniVersion": "1.0.0", "name": "net1", "ipam": {}}')
    seen = (request.command, request.container_id, request.ifname, request.network, request.version)
    assert seen == ("ADD", "abc", "eth0", "net1", "1.0.0")


@pytest.mark.parametrize(
    ("command", "env", "body", "error", "message"),
    [
        ("FOO", ENV, b"{}", InvalidEnvironment, "unknown CNI_COMMAND: FOO"),
        ("ADD", {**ENV, "CNI_IFNAME": ""}, b"{}", InvalidEnvironment, "CNI_IFNAME"),
        ("ADD", {**ENV, "CNI_IFNAME": "a" * 16}, b"{}", InvalidEnvironment, "CNI_IFNAME"),
        ("ADD", {**ENV, "CNI_CONTAINERID": "../etc"}, b"{}", InvalidEnvironment, "CNI_CONTAINERID"),
        ("ADD", ENV, b"[1]", DecodeFailure, "expected a JSON object"),
        ("ADD", ENV, b'{"cniVersion": "9.9.9"}', IncompatibleVersion, "incompatible"),
        ("ADD", ENV, b'{"cniVersion": "1.0.0", "name": "../x"}', InvalidConfig, "name"),
    ],
)
def test_bad_requests(command: str, env: dict[str, str], body: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_request(command, env, body)


def test_name_rules() -> None:
    assert is_valid_name("a-b_c.1") and not is_valid_name("-a") and not is_valid_name("a/b") and not is_valid_name("")
    assert (
        is_valid_ifname("eth0")
        and not is_valid_ifname("..")
        and not is_valid_ifname("a b")
        and not is_valid_ifname("a:b")
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("1500ms", 1.5), ("1m30s", 90), ("0", 0), ("2h", 7200), ("1.5us", 1.5e-6)]
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "s", "1.2.3s", "5x", "--5s", ""])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_store_settings_from_env() -> None:
    assert StoreSettings.from_env({}).path == DEFAULT_PATH
    chosen = StoreSettings.from_env({"IPAM_DB_PATH": "x.db", "IPAM_DB_CONNECTION_TIMEOUT": "250ms"})
    assert (chosen.path, chosen.timeout, chosen.origin) == ("x.db", 0.25, "IPAM_DB_PATH=x.db")
    per_network = StoreSettings.from_env({"IPAM_DB_PATH": "x.db"}, "/var/lib/cni/networks/")
    assert (per_network.path, per_network.origin) == (
        "/var/lib/cni/networks/cnipam.db",
        "ipam.dataDir=/var/lib/cni/networks/",
    )
    for bad in ("soon", "-1s", "48h"):
        with pytest.raises(InvalidEnvironment, match="IPAM_DB_CONNECTION_TIMEOUT"):
            StoreSettings.from_env({"IPAM_DB_CONNECTION_TIMEOUT": bad})
    with pytest.raises(InvalidEnvironment, match="IPAM_DB_PATH"):
        StoreSettings.from_env({"IPAM_DB_PATH": "/tmp/dir/"})
