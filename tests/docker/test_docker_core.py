"""The driver's methods without HTTP: validation, pools, addresses (cnipam.docker.driver)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cnipam.core.addresses import Network
from cnipam.core.docker_pools import lowest_free_block
from cnipam.core.errors import (
    AddressConflict,
    DecodeFailure,
    InvalidConfig,
    InvalidEnvironment,
    NotFound,
    PoolExhausted,
)
from cnipam.core.reuse import NO_DELAY, REUSE, WAIT, ReuseDelay
from cnipam.docker.driver import Driver, UnknownMethod
from cnipam.docker.requests import MAX_BODY, BodyTooLarge
from cnipam.docker.settings import load
from cnipam.store.sqlite import SQLiteStore
from tests.support.store_engines import ENGINES


@pytest.fixture(params=sorted(ENGINES))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    """The driver on every store engine (tests/support/store_engines.py)."""
    store = ENGINES[request.param](request, tmp_path)
    yield Driver(store, load(["-v4", "198.18.0.0/22", "-v6", "2001:db8::/62"], {}))
    assert store.problems() == []
    store.close()


def call(driver: Driver, method: str, body: str = "") -> dict[str, object]:
    return driver.handle("/IpamDriver." + method, body.encode())


def pool(driver: Driver, body: str) -> tuple[str, str]:
    reply = call(driver, "RequestPool", body)
    return str(reply["PoolID"]), str(reply["Pool"])


@pytest.mark.parametrize("body", ["", "null", "{}", "\n"])
def test_no_argument_calls_accept_empty_null_and_empty_object(driver: Driver, body: str) -> None:
    assert driver.handle("/Plugin.Activate", body.encode()) == {"Implements": ["IpamDriver"]}
    assert call(driver, "GetCapabilities", body) == {"RequiresMACAddress": True, "RequiresRequestReplay": False}
    spaces = call(driver, "GetDefaultAddressSpaces", body)
    assert (
        spaces["LocalDefaultAddressSpace"] and spaces["LocalDefaultAddressSpace"] != spaces["GlobalDefaultAddressSpace"]
    )


def test_dynamic_pools_are_lowest_free_blocks_skipping_explicit_ones(driver: Driver) -> None:
    assert pool(driver, '{"Pool":"198.18.1.0/24"}')[1] == "198.18.1.0/24"
    assert pool(driver, "{}")[1] == "198.18.0.0/24"
    assert pool(driver, '{"V6":false}')[1] == "198.18.2.0/24"
    first, _ = pool(driver, '{"Pool":""}')
    call(driver, "ReleasePool", f'{{"PoolID":"{first}"}}')
    assert pool(driver, "{}")[1] == "198.18.3.0/24"  # lowest free again
    with pytest.raises(PoolExhausted, match="198.18.0.0/22"):
        pool(driver, "{}")


def test_serial_option_hands_addresses_out_round_robin(driver: Driver) -> None:
    """Swarm sets com.docker.network.ipam.serial on RequestAddress: a freed address is not
    reused at once, as with Docker's own IPAM; without it, lowest free first."""
    pool_id, _ = pool(driver, '{"Pool":"10.20.0.0/24"}')
    serial = '"Options":{"com.docker.network.ipam.serial":"true"}'

    def address(options: str) -> str:
        return str(call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}","Address":"",{options}}}')["Address"])

    assert [address(serial) for _ in range(2)] == ["10.20.0.1/24", "10.20.0.2/24"]
    call(driver, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"10.20.0.1"}}')
    assert address(serial) == "10.20.0.3/24"
    assert address('"Options":{}') == "10.20.0.1/24"  # first free
    assert address('"Options":{"com.docker.network.ipam.serial":"false"}') == "10.20.0.4/24"


def test_size_request_and_v6(driver: Driver) -> None:
    assert pool(driver, '{"Pool":"0.0.0.0/28"}')[1] == "198.18.0.0/28"
    assert pool(driver, '{"Pool":"0.0.0.0/28"}')[1] == "198.18.0.16/28"
    assert pool(driver, '{"V6":true}')[1] == "2001:db8::/64"
    assert pool(driver, '{"Pool":"::/80","V6":true}')[1] == "2001:db8:0:1::/80"


def test_pool_ids_are_never_reused(driver: Driver) -> None:
    seen = set()
    for _ in range(5):
        pool_id, _ = pool(driver, '{"Pool":"198.19.0.0/24"}')
        assert pool_id not in seen
        seen.add(pool_id)
        call(driver, "ReleasePool", f'{{"PoolID":"{pool_id}"}}')


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ('{"Pool":"198.18.0.0/23"}', AddressConflict, "overlaps"),
        ('{"Pool":"198.18.0.0/25"}', AddressConflict, "overlaps"),
        ('{"Pool":"10.0.0.1/24"}', InvalidConfig, "host bits"),
        ('{"Pool":"10.0.0.0/31"}', InvalidConfig, "too small"),
        ('{"Pool":"nonsense"}', InvalidConfig, "Pool"),
        ('{"Pool":"2001:db8:1::/64","V6":false}', InvalidConfig, "V6"),
        ('{"Pool":10}', InvalidConfig, "Pool: expected a string"),
        ('{"V6":"yes"}', InvalidConfig, "V6"),
        ('{"Options":[]}', InvalidConfig, "Options"),
        ('{"Options":{"a":1}}', InvalidConfig, "Options"),
        ('{"SubPool":"198.18.0.0/25"}', InvalidConfig, "SubPool needs"),
        ('{"Pool":"10.1.0.0/24","SubPool":"10.2.0.0/25"}', InvalidConfig, "not inside"),
        ('{"Pool":"0.0.0.0/8"}', InvalidConfig, "does not fit"),
        ("[1]", DecodeFailure, "object"),
        ("{", DecodeFailure, "not JSON"),
        (b"\xff".decode("latin-1"), DecodeFailure, "not"),
    ],
)
def test_bad_pool_requests_are_refused(driver: Driver, body: str, error: type[Exception], message: str) -> None:
    pool(driver, '{"Pool":"198.18.0.0/24"}')
    with pytest.raises(error, match=message):
        call(driver, "RequestPool", body)


def test_addresses_gateway_aux_requested_and_exhaustion(driver: Driver) -> None:
    pool_id, _ = pool(driver, '{"Pool":"10.9.0.0/29"}')  # .1-.6 usable

    def ask(body: str) -> object:
        return call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}",{body}}}')["Address"]

    assert ask('"Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}') == "10.9.0.1/29"
    assert ask('"Address":"10.9.0.5","Options":null') == "10.9.0.5/29"  # aux address
    assert ask('"Address":"","Options":{}') == "10.9.0.2/29"
    with pytest.raises(AddressConflict):
        ask('"Address":"10.9.0.5"')
    for bad in ("10.9.0.0", "10.9.0.7", "10.9.1.1", "2001:db8::1"):
        with pytest.raises(InvalidConfig):
            ask(f'"Address":"{bad}"')
    assert [ask('"Address":""') for _ in range(3)] == ["10.9.0.3/29", "10.9.0.4/29", "10.9.0.6/29"]
    with pytest.raises(PoolExhausted):
        ask('"Address":""')
    call(driver, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"10.9.0.3"}}')
    call(driver, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"10.9.0.3"}}')  # idempotent
    assert ask('"Address":""') == "10.9.0.3/29"  # first free, not round-robin
    with pytest.raises(InvalidConfig):
        call(driver, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"10.8.0.3"}}')
    with pytest.raises(NotFound):
        call(driver, "RequestAddress", '{"PoolID":"nope"}')
    with pytest.raises(InvalidConfig, match="PoolID"):
        call(driver, "RequestAddress", "{}")


def test_each_address_records_what_dockerd_asked_it_for(driver: Driver) -> None:
    """The gateway, an aux address (Options null), an endpoint (its MAC, since the driver
    asks for it, and its name from moby 25 on) and a request that says nothing: each lease
    says so, and a refusal names the holder as a Docker pool's address, not "anonymous"."""
    pool_id, _ = pool(driver, '{"Pool":"10.9.0.0/24"}')

    def ask(body: str) -> str:
        return str(call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}",{body}}}')["Address"])

    ask('"Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}')
    ask('"Address":"10.9.0.9","Options":null')
    ask('"Address":"","Options":{"com.docker.network.endpoint.macaddress":"02:42:0a:09:00:03"}')
    mac_and_name = (
        '{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:01","com.docker.network.endpoint.name":"web-1"}'
    )
    ask(f'"Address":"10.9.0.77","Options":{mac_and_name}')
    ask('"Address":""')
    held = {lease.ip: (lease.slot, lease.container_id, lease.describe_holder()) for lease in driver.store.leases()}
    assert held == {
        "10.9.0.1": ("docker-gateway", "", f"the gateway of Docker pool {pool_id}"),
        "10.9.0.2": ("docker-endpoint", "", f"an endpoint of Docker pool {pool_id}"),
        "10.9.0.3": ("docker", "", f"an address of Docker pool {pool_id}"),
        "10.9.0.9": ("docker-aux", "", f"an aux address of Docker pool {pool_id}"),
        "10.9.0.77": ("docker-endpoint", "web-1", f"endpoint 'web-1' of Docker pool {pool_id}"),
    }
    with pytest.raises(AddressConflict, match=f"already leased to endpoint 'web-1' of Docker pool {pool_id}"):
        ask('"Address":"10.9.0.77"')
    call(driver, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"10.9.0.1"}}')  # Docker frees its gateway
    assert "10.9.0.1" not in {lease.ip for lease in driver.store.leases()}


def test_sub_pool_is_used_for_dynamic_addresses_only(driver: Driver) -> None:
    pool_id, _ = pool(driver, '{"Pool":"10.9.0.0/24","SubPool":"10.9.0.128/25"}')
    body = f'{{"PoolID":"{pool_id}","Address":""}}'
    assert call(driver, "RequestAddress", body)["Address"] == "10.9.0.128/24"
    assert call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}","Address":"10.9.0.1"}}')["Address"] == "10.9.0.1/24"


def test_sibling_networks_share_a_subnet_with_their_own_ranges(driver: Driver) -> None:
    """`docker network create --subnet S --ip-range R1` then the same S with R2: accepted as
    Docker's own IPAM accepts them, each gateway from its own range; an overlapping range
    or the whole subnet is refused while a sibling lives, the subnet is free after the last."""
    a, parent = pool(driver, '{"Pool":"10.9.0.0/24","SubPool":"10.9.0.0/25"}')
    b, same = pool(driver, '{"Pool":"10.9.0.0/24","SubPool":"10.9.0.128/25"}')
    assert parent == same == "10.9.0.0/24" and a != b
    gateway = '"Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}'
    assert call(driver, "RequestAddress", f'{{"PoolID":"{a}",{gateway}}}')["Address"] == "10.9.0.1/24"
    assert call(driver, "RequestAddress", f'{{"PoolID":"{b}",{gateway}}}')["Address"] == "10.9.0.128/24"
    with pytest.raises(AddressConflict, match="overlaps ip-range 10.9.0.128/25"):
        call(driver, "RequestPool", '{"Pool":"10.9.0.0/24","SubPool":"10.9.0.192/26"}')
    with pytest.raises(AddressConflict, match="needs its own --ip-range"):
        call(driver, "RequestPool", '{"Pool":"10.9.0.0/24"}')
    call(driver, "ReleasePool", f'{{"PoolID":"{a}"}}')
    with pytest.raises(AddressConflict):
        call(driver, "RequestPool", '{"Pool":"10.9.0.0/24"}')
    call(driver, "ReleasePool", f'{{"PoolID":"{b}"}}')
    assert pool(driver, '{"Pool":"10.9.0.0/24"}')[1] == "10.9.0.0/24"


def test_v6_pool_reserves_the_subnet_router_anycast(driver: Driver) -> None:
    pool_id, _ = pool(driver, '{"Pool":"2001:db8:9::/126","V6":true}')
    with pytest.raises(InvalidConfig):
        call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}","Address":"2001:db8:9::"}}')
    got = [call(driver, "RequestAddress", f'{{"PoolID":"{pool_id}"}}')["Address"] for _ in range(3)]
    assert got == ["2001:db8:9::1/126", "2001:db8:9::2/126", "2001:db8:9::3/126"]


def test_release_pool_releases_its_addresses_only(driver: Driver, tmp_path: Path) -> None:
    a, _ = pool(driver, '{"Pool":"10.9.0.0/24"}')
    b, _ = pool(driver, '{"Pool":"10.9.1.0/24"}')
    call(driver, "RequestAddress", f'{{"PoolID":"{a}"}}')
    call(driver, "RequestAddress", f'{{"PoolID":"{b}"}}')
    call(driver, "ReleasePool", f'{{"PoolID":"{a}"}}')
    assert [lease.ip for lease in driver.store.leases()] == ["10.9.1.1"]
    with pytest.raises(NotFound):
        call(driver, "ReleasePool", f'{{"PoolID":"{a}"}}')


def test_ipv4_only_and_ipv6_only(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "ipam.db"))
    v4 = Driver(store, load(["-v4", "198.18.0.0/16"], {}))
    assert pool(v4, "{}")[1] == "198.18.0.0/24"
    with pytest.raises(InvalidConfig, match="no IPv6 main pool"):
        pool(v4, '{"V6":true}')
    v6 = Driver(store, load([], {"GIPAM_V6": "2001:db8::/56", "GIPAM_V6AB": "60"}))
    assert pool(v6, '{"V6":true}')[1] == "2001:db8::/60"
    assert pool(v6, '{"Pool":"10.1.0.0/24"}')[1] == "10.1.0.0/24"  # explicit pools need no main pool
    store.close()


def test_unknown_method_and_oversized_body(driver: Driver) -> None:
    with pytest.raises(UnknownMethod):
        driver.handle("/IpamDriver.Nope", b"")
    with pytest.raises(BodyTooLarge):
        driver.handle("/Plugin.Activate", b" " * (MAX_BODY + 1))


def test_settings_flags_win_over_environment() -> None:
    env = {"GIPAM_V4": "10.0.0.0/8", "GIPAM_V4AB": "16", "GIPAM_ADDRESS": "127.0.0.1:9999"}
    settings = load(["-v4=172.16.0.0/12", "--name", "x", "--db", "/tmp/x.db"], env)
    assert settings.main_pool(4) == (Network(4, 0xAC100000, 12), 16)
    assert settings.main_pool(6) == (None, 64)
    assert (settings.name, settings.socket, settings.address, settings.store.path, settings.store.etcd) == (
        "x",
        "/run/docker/plugins/x.sock",
        "127.0.0.1:9999",
        "/tmp/x.db",
        None,
    )
    assert settings.spec_file == "/etc/docker/plugins/x.spec"


def test_store_is_chosen_as_the_plugin_chooses_it_unless_named() -> None:
    etcd = '{"type": "etcd", "endpoints": ["http://127.0.0.1:1"], "host": "h1"}'
    assert load([], {"CNIPAM_STORE": etcd}).store.etcd is not None
    assert load(["--store", etcd], {"IPAM_DB_PATH": "/tmp/y.db"}).store.etcd is not None
    named = load(["--db", "/tmp/x.db"], {"CNIPAM_STORE": etcd, "IPAM_DB_CONNECTION_TIMEOUT": "2s"}).store
    assert (named.path, named.etcd, named.timeout, named.origin) == ("/tmp/x.db", None, 2.0, "--db /tmp/x.db")
    assert load([], {"IPAM_DB_PATH": "/tmp/y.db"}).store.path == "/tmp/y.db"
    with pytest.raises(InvalidConfig, match="--store: invalid JSON"):
        load(["--store", "{nope"], {})
    with pytest.raises(InvalidEnvironment, match="CNIPAM_STORE: invalid JSON"):
        load([], {"CNIPAM_STORE": "{nope"})


@pytest.mark.parametrize(
    ("argv", "env", "error"),
    [
        (["-v4", "2001:db8::/32"], {}, InvalidConfig),
        ([], {"GIPAM_V4AB": "abc"}, InvalidEnvironment),
        (["-v4", "10.0.0.0/24", "-v4ab", "16"], {}, InvalidConfig),
        (["-address", "0.0.0.0:80"], {}, InvalidConfig),
        (["-address", "nope"], {}, InvalidConfig),
        (["--name", "a/b"], {}, InvalidConfig),
        (["--read-timeout", "soon"], {}, InvalidConfig),
        (["--read-timeout", "0s"], {}, InvalidConfig),
        (["--read-timeout", "48h"], {}, InvalidConfig),
    ],
)
def test_bad_settings_are_refused(argv: list[str], env: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        load(argv, env)


def test_lowest_free_block() -> None:
    main = Network(4, 0, 22)
    assert lowest_free_block(main, 24, []) == Network(4, 0, 24)
    assert lowest_free_block(main, 24, [(0, 255), (512, 767)]) == Network(4, 256, 24)
    assert lowest_free_block(main, 24, [(10, 20)]) == Network(4, 256, 24)
    assert lowest_free_block(main, 24, [(0, 1023)]) is None
    assert lowest_free_block(main, 20, []) is None


# -- the reuse delay (core.reuse) ------------------------------------------------------------------


def test_the_driver_reads_its_reuse_delay_from_flags_or_the_environment() -> None:
    assert load([], {}).reuse == NO_DELAY  # Docker's own IPAM reuses at once: so does the driver unless told
    assert load([], {"CNIPAM_REUSE_DELAY": "30s"}).reuse == ReuseDelay(30.0, REUSE)
    assert load(
        ["--reuse-delay", "1m", "--when-only-cooling", "wait"], {"CNIPAM_REUSE_DELAY": "5s"}
    ).reuse == ReuseDelay(60.0, WAIT)
    with pytest.raises(InvalidConfig, match="--reuse-delay"):
        load(["--reuse-delay", "soon"], {})
    with pytest.raises(InvalidConfig, match="CNIPAM_WHEN_ONLY_COOLING"):
        load([], {"CNIPAM_WHEN_ONLY_COOLING": "never"})


def test_the_driver_keeps_a_released_address_inside_its_delay(driver: Driver) -> None:
    """On each engine, its clock replaced: a released address rests 30 s unless asked for."""
    now = [1_800_000_000.0]
    driver.store.clock = lambda: now[0]
    delayed = Driver(driver.store, load(["--reuse-delay", "30s"], {}))
    pool_id, _ = pool(delayed, '{"Pool":"10.20.0.0/29"}')

    def ask(address: str = "") -> str:
        return str(call(delayed, "RequestAddress", f'{{"PoolID":"{pool_id}","Address":"{address}"}}')["Address"])

    def release(address: str) -> None:
        call(delayed, "ReleaseAddress", f'{{"PoolID":"{pool_id}","Address":"{address}"}}')

    assert [ask() for _ in range(2)] == ["10.20.0.1/29", "10.20.0.2/29"]
    release("10.20.0.1")
    assert ask() == "10.20.0.3/29"  # lowest free, less the one resting
    assert ask("10.20.0.1") == "10.20.0.1/29"  # --ip: never delayed
    release("10.20.0.1")
    now[0] += 30
    assert ask() == "10.20.0.1/29"


@pytest.mark.parametrize("method", ["ReleasePool", "RequestAddress", "ReleaseAddress"])
def test_a_lone_surrogate_in_a_pool_id_is_refused_by_name(driver: Driver, method: str) -> None:
    """JSON can escape half a UTF-16 pair, which no store can hold (found by the fuzzer)."""
    with pytest.raises(InvalidConfig, match="PoolID: not valid Unicode"):
        call(driver, method, '{"PoolID": "\\udcff", "Address": "198.18.0.1"}')
