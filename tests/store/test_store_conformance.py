"""What every store engine must do, run once per engine (tests/support/store_engines.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cnipam.core.addresses import Network, format_ip, parse_cidr, parse_ip
from cnipam.core.docker_pools import DockerPool, PoolClaim
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import AddressConflict, PoolExhausted
from cnipam.core.ipam_config import DIGEST_PREFIX, AddressRange, PoolSpec, default_bounds, pool_key
from cnipam.core.leases import GATEWAY, LEASE, Cursor, Lease, Owner
from cnipam.core.pool_usage import PoolUsage
from cnipam.store.base import Store, StoreEvents
from tests.support.store_engines import ENGINES


@pytest.fixture(params=sorted(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    engine = ENGINES[request.param](request, tmp_path)
    yield engine
    assert engine.problems() == []  # every test leaves a consistent store
    engine.close()


def pools(**ipam: object) -> tuple[PoolSpec, ...]:
    return parse_ecs({key.replace("_", "-"): value for key, value in ipam.items()}).pools


def ips(leases: list[Lease]) -> list[str]:
    return [lease.ip for lease in leases]


def attachment(container: str, network: str = "net") -> Owner:
    return Owner.for_request(None, network, container, "eth0")


def held(store: Store) -> list[str]:
    return [lease.ip for lease in store.leases() if lease.kind == LEASE]


V4 = pools(ipv4_subnet="10.0.0.0/29")  # .1 gateway, .2-.6 usable


def test_allocation_is_round_robin_after_the_last_address_touched(store: Store) -> None:
    assert [ips(store.allocate(attachment(c), V4)) for c in "abc"] == [["10.0.0.2"], ["10.0.0.3"], ["10.0.0.4"]]
    store.release(attachment("b").handle)
    assert ips(store.allocate(attachment("d"), V4)) == ["10.0.0.5"]  # not the freed .3: upstream's order
    assert ips(store.allocate(attachment("e"), V4)) == ["10.0.0.6"]
    assert ips(store.allocate(attachment("f"), V4)) == ["10.0.0.3"]  # wraps round to the freed address
    with pytest.raises(PoolExhausted, match="10.0.0.0/29"):
        store.allocate(attachment("g"), V4)


def test_a_lease_keeps_the_gateway_recorded_with_it(store: Store) -> None:
    """The field a lease's last release uses to let its range's gateway go: written and
    read back as given, or None."""
    with_gateway = Lease(4, parse_ip("10.7.0.5")[1], LEASE, "10.7.0.0/24", "4", "id:a", "n", "", "", 1.0)
    with_gateway.gateway = parse_ip("10.7.0.1")[1]
    without = Lease(6, parse_ip("fd07::5")[1], LEASE, "fd07::/64", "6", "id:a", "n", "", "", 1.0)
    store.import_leases([with_gateway, without], {})
    assert [(lease.ip, lease.gateway) for lease in store.leases()] == [
        ("10.7.0.5", parse_ip("10.7.0.1")[1]),
        ("fd07::5", None),
    ]


def test_gateway_is_reserved_once_and_shared(store: Store) -> None:
    store.allocate(attachment("a"), V4)
    store.allocate(attachment("b", network="other"), V4)
    gateways = [lease for lease in store.leases() if lease.kind == GATEWAY]
    assert [(lease.ip, lease.handle) for lease in gateways] == [("10.0.0.1", None)]


def test_a_second_pool_with_another_gateway_cannot_take_the_first_gateway(store: Store) -> None:
    store.allocate(attachment("a"), V4)
    other = pools(ipv4_subnet="10.0.0.0/29", ipv4_gateway="10.0.0.6")  # usable .1-.5, but .1 is V4's gateway
    assert [ips(store.allocate(attachment(c), other)) for c in "bcd"] == [["10.0.0.3"], ["10.0.0.4"], ["10.0.0.5"]]
    with pytest.raises(PoolExhausted):
        store.allocate(attachment("e"), other)
    with pytest.raises(PoolExhausted):  # and V4 cannot take .6, the other pool's gateway
        store.allocate(attachment("e"), V4)


def test_an_attachment_gets_the_same_lease_on_retry(store: Store) -> None:
    first = store.allocate(attachment("a"), V4)
    assert store.allocate(attachment("a"), V4) == first
    assert held(store) == ["10.0.0.2"]


def test_an_id_holding_an_address_is_refused_and_nothing_changes(store: Store) -> None:
    owner = Owner.for_request("task", "net", "", "eth0")
    store.allocate(owner, V4)
    before = store.leases()
    with pytest.raises(AddressConflict, match="already holds 10.0.0.2"):
        store.allocate(owner, V4)
    assert store.leases() == before


def test_dual_stack_is_all_or_nothing(store: Store) -> None:
    store.allocate(attachment("a"), pools(ipv6_subnet="2001:db8::/64", ipv6_address="2001:db8::9/64"))
    both = pools(ipv4_subnet="10.0.0.0/29", ipv6_subnet="2001:db8::/64", ipv6_address="2001:db8::9/64")
    with pytest.raises(AddressConflict, match="2001:db8::9 is already leased"):
        store.allocate(attachment("b"), both)
    assert held(store) == ["2001:db8::9"]  # the IPv4 half was rolled back too
    assert ips(store.allocate(attachment("c"), pools(ipv4_subnet="10.0.0.0/29"))) == ["10.0.0.2"]  # position not moved


def test_requested_addresses(store: Store) -> None:
    assert ips(store.allocate(attachment("a"), pools(ipv4_subnet="10.0.0.0/29", ipv4_address="10.0.0.5/29"))) == [
        "10.0.0.5"
    ]
    with pytest.raises(AddressConflict, match="10.0.0.5 is already leased to container 'a'"):
        store.allocate(attachment("b"), pools(ipv4_subnet="10.0.0.0/29", ipv4_address="10.0.0.5/29"))
    other_gateway = pools(ipv4_subnet="10.0.0.0/29", ipv4_gateway="10.0.0.6", ipv4_address="10.0.0.1/29")
    with pytest.raises(AddressConflict, match="reserved as a gateway"):
        store.allocate(attachment("c"), other_gateway)
    assert ips(store.allocate(attachment("d"), V4)) == ["10.0.0.6"]  # after the last address touched (.5)


def test_release_by_owner_and_by_address(store: Store) -> None:
    dual = pools(ipv4_subnet="10.0.0.0/29", ipv6_subnet="2001:db8::/64")
    store.allocate(Owner.for_request("x", "net", "", "eth0"), dual)
    store.allocate(attachment("y"), dual)
    assert sorted(ips(store.release("id:x"))) == ["10.0.0.2", "2001:db8::2"]
    assert ips(store.release(None, [parse_ip("10.0.0.3")])) == ["10.0.0.3"]
    assert held(store) == ["2001:db8::3"]
    assert store.release("id:x") == [] and store.release(None, [parse_ip("10.0.0.1")]) == []  # gateways stay
    assert store.held_by("cni:net/y/eth0")[0].ip == "2001:db8::3"


def test_lookup_and_leases_by_network(store: Store) -> None:
    store.allocate(attachment("a", "n1"), V4)
    store.allocate(attachment("b", "n2"), V4)
    found = store.lookup(*parse_ip("10.0.0.3"))
    assert found is not None and (found.container_id, found.network, found.ifname, found.slot) == (
        "b",
        "n2",
        "eth0",
        "4",
    )
    assert store.lookup(*parse_ip("10.0.0.6")) is None
    assert ips(store.leases("n1")) == ["10.0.0.1", "10.0.0.2"]


def test_garbage_collection_is_per_network_and_spares_unknown_owners(store: Store) -> None:
    for container in "abc":
        store.allocate(attachment(container, "n1"), V4)
    store.allocate(attachment("z", "n2"), V4)
    store.allocate(Owner.for_request(None, "n1", "", "eth0"), V4)  # anonymous: no attachment recorded
    released = store.collect_garbage("n1", {("b", "eth0")}).released
    assert sorted(lease.container_id for lease in released) == ["a", "c"]
    assert held(store) == ["10.0.0.3", "10.0.0.5", "10.0.0.6"]


def test_exhaustion_is_reported_per_pool(store: Store) -> None:
    tiny = pools(ipv4_subnet="10.0.0.0/30")  # .1 gateway, .2 the only address
    assert store.exhausted(tiny) == []
    store.allocate(attachment("a"), tiny)
    assert store.exhausted(tiny) == list(tiny)
    assert store.exhausted(V4) == []


def test_large_subnets_allocate_from_the_start(store: Store) -> None:
    assert ips(store.allocate(attachment("a"), pools(ipv4_subnet="10.0.0.0/8"))) == ["10.0.0.2"]
    assert ips(store.allocate(attachment("a"), pools(ipv6_subnet="2001:db8::/48"))) == ["2001:db8::2"]
    last = pools(ipv6_subnet="2001:db8:1::/64", ipv6_address="2001:db8:1:0:ffff:ffff:ffff:ffff/64")
    assert ips(store.allocate(attachment("b"), last)) == ["2001:db8:1:0:ffff:ffff:ffff:ffff"]


def test_import_keeps_positions_and_refuses_conflicts_whole(store: Store) -> None:
    spec = V4[0]
    imported = [
        Lease(4, parse_ip(f"10.0.0.{n}")[1], LEASE, spec.key, "4", f"id:t{n}", "net", "", "", 1.0) for n in (2, 3)
    ]
    assert store.import_leases(imported, {spec.key: Cursor(*parse_ip("10.0.0.3"), True)}) == 2
    assert store.cursors() == {spec.key: Cursor(*parse_ip("10.0.0.3"), True)}
    assert ips(store.allocate(attachment("a"), V4)) == ["10.0.0.4"]
    clash = [Lease(4, parse_ip("10.0.0.6")[1], LEASE, spec.key, "4", None, "", "", "", 1.0), imported[0]]
    with pytest.raises(AddressConflict, match="10.0.0.2 is already held by id:t2"):
        store.import_leases(clash, {})
    assert held(store) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]  # 10.0.0.6 was not half-imported


def test_text_forms_match_go(store: Store) -> None:
    store.allocate(attachment("a"), pools(ipv6_subnet="2001:db8:0:1::/64", ipv6_address="2001:db8:0:1::ffff/64"))
    assert held(store) == [format_ip(*parse_ip("2001:db8:0:1::ffff"))] == ["2001:db8:0:1::ffff"]


def test_host_local_positions_move_only_on_allocation(store: Store) -> None:
    from cnipam.core.ipam_dialect import parse_ipam

    (spec,) = parse_ipam({"cniVersion": "1.0.0", "ipam": {"subnet": "10.0.0.0/29"}}).pools
    for container in "abcde":
        store.allocate(attachment(container), (spec,))  # .2-.6
    store.release(attachment("d").handle)
    store.release(attachment("b").handle)
    with pytest.raises(PoolExhausted):  # host-local goes on after .6, wraps, and finds .3 and .5 ...
        for container in "fgh":
            store.allocate(attachment(container), (spec,))
    assert held(store) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert store.cursors()[spec.key].address == parse_ip("10.0.0.5")[1]  # ... in that order, .5 last


def test_a_range_set_walks_its_ranges_in_config_order(store: Store) -> None:
    from cnipam.core.ipam_dialect import parse_ipam

    ipam = {"ranges": [[{"subnet": "10.1.0.0/30"}, {"subnet": "10.0.0.0/30"}]]}
    (spec,) = parse_ipam({"cniVersion": "1.0.0", "ipam": ipam}).pools
    assert [ips(store.allocate(attachment(c), (spec,))) for c in "ab"] == [["10.1.0.2"], ["10.0.0.2"]]
    assert sorted(lease.ip for lease in store.leases() if lease.kind == GATEWAY) == ["10.0.0.1", "10.1.0.1"]


def test_a_gateway_reservation_goes_with_the_last_lease_of_its_subnet(store: Store) -> None:
    """Rows that only served leases nobody holds any more are not left behind: a pool
    taken and given back leaves its position, nothing else (issue 18)."""
    gateway = parse_ip("10.0.0.1")
    store.allocate(attachment("a"), V4)
    store.allocate(attachment("b", network="other"), V4)
    with pytest.raises(AddressConflict, match="still serves 2 lease.* of 10.0.0.0/29"):
        store.release_gateway(*gateway)
    store.release(attachment("a").handle)
    assert store.lookup(*gateway) is not None  # b still depends on it
    store.release(attachment("b", network="other").handle)
    assert store.lookup(*gateway) is None and store.leases() == []
    assert list(store.cursors()) == ["10.0.0.0/29"]  # the round-robin position stays: upstream's lastKnownIP
    assert ips(store.allocate(attachment("c"), V4)) == ["10.0.0.4"]  # past .3, the last one released
    assert [lease.ip for lease in store.leases() if lease.kind == GATEWAY] == ["10.0.0.1"]


def host_local(*ranges: dict[str, str]) -> PoolSpec:
    from cnipam.core.ipam_dialect import parse_ipam

    (spec,) = parse_ipam({"cniVersion": "1.0.0", "ipam": {"type": "cnipam", "ranges": [list(ranges)]}}).pools
    return spec


def test_a_pool_of_8000_ranges_writes_two_rows_and_leaves_none(store: Store) -> None:
    """The issue's config: one range set of 8,000 /24s wrote every range's gateway, each
    row with the whole 200 KB pool key. Now an ADD writes its lease and its own range's
    gateway, each naming the pool by a digest, and the DEL takes both away."""
    spec = host_local(*({"subnet": f"10.{i // 256}.{i % 256}.0/24"} for i in range(8000)))
    [lease] = store.allocate(attachment("a"), (spec,))
    rows = store.leases()
    assert [(row.ip, row.kind) for row in rows] == [("10.0.0.1", GATEWAY), ("10.0.0.2", LEASE)]
    assert {len(row.pool) for row in rows} == {39} and len(lease.slot) == 39
    assert lease.gateway == parse_ip("10.0.0.1")[1]
    assert len(store.cursors()) == 1
    store.release(lease.handle)
    assert store.leases() == []


def test_a_pool_never_hands_out_the_gateway_of_another_of_its_ranges(store: Store) -> None:
    """Gateways are reserved when a lease of their own range needs them; until then only the
    pool's search keeps them out. Here the first range holds the second range's gateway."""
    spec = host_local(
        {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.3", "gateway": "10.0.0.254"},
        {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"},  # gateway .1
    )
    assert [ips(store.allocate(attachment(c), (spec,))) for c in "abc"] == [["10.0.0.2"], ["10.0.0.3"], ["10.0.0.10"]]
    assert sorted(lease.ip for lease in store.leases() if lease.kind == GATEWAY) == ["10.0.0.1", "10.0.0.254"]


def test_a_reservation_shared_with_a_wider_subnet_covers_it(store: Store) -> None:
    """Two pools share gateway 10.0.0.1, one in 10.0.0.0/24 and one in 10.0.0.0/16: the
    reservation widens to the /16, so a lease in 10.0.5.0 keeps it after the /24 is empty."""
    narrow = host_local({"subnet": "10.0.0.0/24"})
    wide = host_local(
        {"subnet": "10.0.0.0/16", "rangeStart": "10.0.5.1", "rangeEnd": "10.0.5.9", "gateway": "10.0.0.1"}
    )
    store.allocate(attachment("a"), (narrow,))
    store.allocate(attachment("b"), (wide,))
    [reservation] = [lease for lease in store.leases() if lease.kind == GATEWAY]
    assert (reservation.ip, reservation.slot, reservation.pool) == ("10.0.0.1", "10.0.0.0/16", "10.0.0.0/24")
    store.release(attachment("a").handle)
    assert store.lookup(*parse_ip("10.0.0.1")) is not None
    store.release(attachment("b").handle)
    assert store.leases() == []


def test_a_reservation_older_than_its_subnet_is_freed_only_by_name(store: Store) -> None:
    """Reservations written before they named their subnet (slot "gateway") are kept until
    cnipamctl releases them, and only once no lease of their pool is left."""
    gateway = parse_ip("10.0.0.1")
    old = Lease(4, gateway[1], GATEWAY, "10.0.0.0/29", GATEWAY, None, "net", "", "", 1.0)
    lease = Lease(4, parse_ip("10.0.0.2")[1], LEASE, "10.0.0.0/29", "4", "cni:net/a/eth0", "net", "a", "eth0", 1.0)
    store.import_leases([old, lease], {})
    with pytest.raises(AddressConflict, match="still serves 1 lease.* of pool 10.0.0.0/29"):
        store.release_gateway(*gateway)
    store.release(lease.handle)
    assert store.lookup(*gateway) == old  # not let go by the release: it names no subnet
    freed = store.release_gateway(*gateway)
    assert freed == old
    assert store.lookup(*gateway) is None and store.release_gateway(*gateway) is None
    assert store.release_gateway(*parse_ip("10.0.0.3")) is None  # not a reservation


# -- Docker pools (schema version 2) ----------------------------------------------------


def _claim(
    network: str | None = None, prefix: int = 24, main: str | None = "198.18.0.0/23", sub: str | None = None
) -> PoolClaim:
    def cidr(text: str | None) -> Network | None:
        return None if text is None else parse_cidr(text, "test")[1]

    return PoolClaim("space", 4, cidr(network), cidr(sub), prefix, cidr(main), "{}")


def test_docker_pools_explicit_dynamic_overlap_and_ids(store: Store) -> None:
    explicit = store.claim_docker_pool(_claim("198.18.0.0/24"))
    dynamic = store.claim_docker_pool(_claim())
    assert (str(explicit.network), str(dynamic.network)) == ("198.18.0.0/24", "198.18.1.0/24")
    with pytest.raises(AddressConflict):
        store.claim_docker_pool(_claim("198.18.1.128/25"))
    with pytest.raises(PoolExhausted):
        store.claim_docker_pool(_claim())
    assert [pool.id for pool in store.docker_pools()] == [explicit.id, dynamic.id]
    store.release_docker_pool(explicit.id)
    again = store.claim_docker_pool(_claim())
    assert str(again.network) == "198.18.0.0/24" and again.id not in (explicit.id, dynamic.id)


def test_sibling_docker_pools_share_their_subnet_each_with_its_own_range(store: Store) -> None:
    """Docker's own IPAM lets networks share one --subnet when each has its own --ip-range:
    the parent is shared, each range is its own, overlapping ranges and a network wanting
    the whole subnet are refused, and the subnet is free again once its last network is
    gone. Addresses stay unique across the siblings."""
    from cnipam.core.errors import InvalidConfig

    first = store.claim_docker_pool(_claim("198.18.0.0/24", sub="198.18.0.0/25"))
    second = store.claim_docker_pool(_claim("198.18.0.0/24", sub="198.18.0.128/26"))
    assert first.id != second.id and str(first.network) == str(second.network) == "198.18.0.0/24"
    for network, sub, says in (
        ("198.18.0.0/24", "198.18.0.128/25", "overlaps ip-range 198.18.0.128/26"),
        ("198.18.0.0/24", None, "needs its own --ip-range"),
        ("198.18.0.0/25", "198.18.0.0/26", "overlaps pool 198.18.0.0/24"),
        ("198.18.0.0/23", "198.18.1.0/24", "overlaps pool 198.18.0.0/24"),
    ):
        with pytest.raises(AddressConflict, match=says.replace(".", r"\.")):
            store.claim_docker_pool(_claim(network, sub=sub))
    dynamic = store.claim_docker_pool(_claim())  # the parent block is taken for dynamic pools too
    assert str(dynamic.network) == "198.18.1.0/24"
    assert store.request_docker_address(first.id, None).ip == "198.18.0.1"
    assert store.request_docker_address(second.id, None).ip == "198.18.0.128"
    named = parse_ip("198.18.0.130")[1]
    assert store.request_docker_address(first.id, named).ip == "198.18.0.130"  # --ip anywhere in the subnet
    with pytest.raises(AddressConflict):
        store.request_docker_address(second.id, named)  # held by the sibling
    assert store.release_docker_address(second.id, 4, named) is None  # not the second pool's to release
    assert store.request_docker_address(second.id, None).ip == "198.18.0.129"
    store.release_docker_pool(first.id)
    assert held(store) == ["198.18.0.128", "198.18.0.129"]  # the sibling's addresses stay
    with pytest.raises(AddressConflict, match="needs its own --ip-range"):
        store.claim_docker_pool(_claim("198.18.0.0/24"))  # the parent lives on with its last child
    third = store.claim_docker_pool(_claim("198.18.0.0/24", sub="198.18.0.0/25"))  # the freed range again
    store.release_docker_pool(second.id)
    store.release_docker_pool(third.id)
    assert held(store) == []
    whole = store.claim_docker_pool(_claim("198.18.0.0/24"))  # the parent went with its last child
    with pytest.raises(AddressConflict, match="uses it whole"):
        store.claim_docker_pool(_claim("198.18.0.0/24", sub="198.18.0.0/25"))
    with pytest.raises(InvalidConfig):
        store.request_docker_address(whole.id, parse_ip("198.18.1.1")[1])
    assert store.problems() == []


def test_sibling_docker_pools_import_and_refuse_like_claims(store: Store) -> None:
    """An import (gipam's migration, `recover`) takes siblings as a claim does."""
    net = parse_cidr("198.18.3.0/24", "test")[1]

    def sibling(pool_id: str, sub: str) -> DockerPool:
        return DockerPool(pool_id, "space", net, parse_cidr(sub, "test")[1], "{}", 1.0)

    low, high = sibling("low", "198.18.3.0/25"), sibling("high", "198.18.3.128/25")
    assert store.import_docker_pools([low, high], [low.lease(parse_ip("198.18.3.200")[1], 1.0)]) == 2
    with pytest.raises(AddressConflict, match="overlaps ip-range 198.18.3.0/25"):
        store.import_docker_pools([sibling("again", "198.18.3.64/26")], [])
    assert sorted(pool.id for pool in store.docker_pools()) == ["high", "low"]
    assert store.request_docker_address("high", None).ip == "198.18.3.128"


def test_docker_addresses_are_lowest_free_leases_released_with_their_pool(store: Store) -> None:
    from cnipam.core.errors import InvalidConfig, NotFound

    pool = store.claim_docker_pool(_claim("10.5.0.0/29"))
    assert store.request_docker_address(pool.id, None).ip == "10.5.0.1"
    assert store.request_docker_address(pool.id, parse_ip("10.5.0.4")[1]).ip == "10.5.0.4"
    assert store.request_docker_address(pool.id, None).ip == "10.5.0.2"
    with pytest.raises(AddressConflict):
        store.request_docker_address(pool.id, parse_ip("10.5.0.4")[1])
    with pytest.raises(InvalidConfig):
        store.request_docker_address(pool.id, parse_ip("10.5.0.7")[1])  # broadcast
    assert store.release_docker_address(pool.id, 4, parse_ip("10.5.0.1")[1]) is not None
    assert store.release_docker_address(pool.id, 4, parse_ip("10.5.0.1")[1]) is None
    assert store.request_docker_address(pool.id, None).ip == "10.5.0.1"  # lowest free, not round-robin
    cni = store.allocate(
        attachment("a"), pools(ipv4_subnet="10.5.0.0/29", ipv4_gateway="10.5.0.6")
    )  # shares the subnet only
    assert ips(cni) == ["10.5.0.3"]
    assert store.release_docker_address(pool.id, 4, parse_ip("10.5.0.3")[1]) is None  # not the pool's lease
    leases = [lease for lease in store.leases() if lease.network == pool.lease_network]
    assert {lease.pool for lease in leases} == {"10.5.0.0/29"}
    store.release_docker_pool(pool.id)
    assert held(store) == ["10.5.0.3"]  # the CNI lease; its gateway reservation stays too
    with pytest.raises(NotFound):
        store.release_docker_pool(pool.id)
    with pytest.raises(NotFound):
        store.request_docker_address(pool.id, None)


def test_serial_docker_addresses_go_round_robin_and_skip_what_is_held(store: Store) -> None:
    """Docker's `com.docker.network.ipam.serial`: the next free address after the last one
    handed out, wrapping; a freed address is not handed out again at once. A named address
    and a first-free request in between do not move the position."""
    pool = store.claim_docker_pool(_claim("10.6.0.0/29"))  # .1 to .6
    serial = [store.request_docker_address(pool.id, None, serial=True).ip for _ in range(3)]
    assert serial == ["10.6.0.1", "10.6.0.2", "10.6.0.3"]
    assert store.release_docker_address(pool.id, 4, parse_ip("10.6.0.2")[1]) is not None
    assert store.request_docker_address(pool.id, parse_ip("10.6.0.5")[1], serial=True).ip == "10.6.0.5"
    assert store.request_docker_address(pool.id, None, serial=True).ip == "10.6.0.4"  # not .2: it was freed just now
    assert store.request_docker_address(pool.id, None, serial=True).ip == "10.6.0.6"  # .5 is held
    assert store.request_docker_address(pool.id, None, serial=True).ip == "10.6.0.2"  # wrapped
    with pytest.raises(PoolExhausted):
        store.request_docker_address(pool.id, None, serial=True)
    assert store.problems() == []


def _imported(pool_id: str, network: str, *addresses: str) -> tuple[DockerPool, list[Lease]]:
    pool = DockerPool(pool_id, "space", parse_cidr(network, "test")[1], None, "{}", 1.0)
    return pool, [pool.lease(parse_ip(text)[1], 1.0) for text in addresses]


def test_imported_docker_pools_keep_their_ids_and_serve_like_claimed_ones(store: Store) -> None:
    from cnipam.core.errors import NotFound

    v4, v4_leases = _imported("R0KGSOeJ4n3thSpz", "198.18.0.0/24", "198.18.0.1", "198.18.0.3")
    v6, v6_leases = _imported("a8Fz0qLmN3xY7bWc", "2001:db8::/64", "2001:db8::1")
    assert store.import_docker_pools([v4, v6], v4_leases + v6_leases) == 2
    assert [pool.id for pool in store.docker_pools()] == ["R0KGSOeJ4n3thSpz", "a8Fz0qLmN3xY7bWc"]
    assert (
        store.request_docker_address("R0KGSOeJ4n3thSpz", None).ip == "198.18.0.2"
    )  # lowest free, around the imported ones
    with pytest.raises(AddressConflict):
        store.request_docker_address("R0KGSOeJ4n3thSpz", parse_ip("198.18.0.3")[1])
    assert store.release_docker_address("R0KGSOeJ4n3thSpz", 4, parse_ip("198.18.0.3")[1]) is not None
    assert store.request_docker_address("a8Fz0qLmN3xY7bWc", None).ip == "2001:db8::2"
    store.release_docker_pool("R0KGSOeJ4n3thSpz")
    assert held(store) == ["2001:db8::1", "2001:db8::2"]
    with pytest.raises(NotFound):
        store.request_docker_address("R0KGSOeJ4n3thSpz", None)
    # A dynamic claim now skips the imported IPv6 block only, and mints a fresh id.
    claimed = store.claim_docker_pool(_claim(main="198.18.0.0/23"))
    assert str(claimed.network) == "198.18.0.0/24" and claimed.id != "R0KGSOeJ4n3thSpz"


def test_docker_import_refuses_whole_and_names_the_clash(store: Store) -> None:
    from cnipam.core.errors import InvalidConfig

    existing = store.claim_docker_pool(_claim("198.18.0.0/24"))
    cni = store.allocate(attachment("a"), pools(ipv4_subnet="10.9.0.0/24"))
    fine, fine_leases = _imported("fine", "198.18.5.0/24", "198.18.5.1")
    taken = cni[0].ip
    cases: list[tuple[list[DockerPool], list[Lease], type[Exception], str]] = [
        ([_imported(existing.id, "198.18.9.0/24")[0]], [], AddressConflict, existing.id),  # the id exists
        ([_imported("x", "198.18.0.128/25")[0]], [], AddressConflict, "198.18.0.0/24"),  # overlaps a pool
        (
            [_imported("x", "198.18.6.0/24")[0], _imported("y", "198.18.6.0/23")[0]],
            [],
            AddressConflict,
            "198.18.6.0/24",
        ),
        (
            [_imported("x", "198.18.7.0/24")[0], _imported("x", "198.18.8.0/24")[0]],
            [],
            AddressConflict,
            "'x'",
        ),  # id twice
        ([_imported("x", "10.9.0.0/24")[0]], _imported("x", "10.9.0.0/24", taken)[1], AddressConflict, taken),  # taken
        (
            [],
            _imported("nowhere", "198.18.3.0/24", "198.18.3.1")[1],
            InvalidConfig,
            "198.18.3.1",
        ),  # lease of no imported pool
        (
            [_imported("x", "198.18.4.0/24")[0]],
            _imported("x", "198.18.4.0/24", "198.18.4.255")[1],
            InvalidConfig,
            "198.18.4.255",
        ),
    ]
    before = (store.docker_pools(), store.leases())
    for pools_in, leases_in, error, named in cases:
        with pytest.raises(error, match=named.replace(".", r"\.")):
            store.import_docker_pools([fine, *pools_in], [*fine_leases, *leases_in])
        assert (store.docker_pools(), store.leases()) == before  # nothing of it, not even `fine`


def test_docker_import_moves_the_id_counter_past_an_imported_serial(store: Store) -> None:
    pool, _ = _imported("space/198.18.9.0/24/41", "198.18.9.0/24")
    store.import_docker_pools([pool], [])
    claimed = store.claim_docker_pool(_claim("198.18.0.0/24"))
    assert claimed.id == "space/198.18.0.0/24/42"


# -- usage and events (the metrics read them) ----------------------------------------------


def test_usage_counts_by_address_and_names_the_network(store: Store) -> None:
    for container in "abc":
        store.allocate(attachment(container, network="blue"), V4)
    store.release(attachment("b", network="blue").handle)
    docker = store.claim_docker_pool(_claim("198.18.0.0/30"))
    store.request_docker_address(docker.id, None)
    empty_docker = store.claim_docker_pool(_claim("198.18.1.0/30"))
    configured = pools(ipv4_subnet="10.9.0.0/29")  # nothing allocated yet: its gateway counts as reserved
    found = {
        usage.pool: (usage.network, usage.size, usage.reserved, usage.used, usage.free)
        for usage in store.usage(configured)
    }
    assert found == {
        "10.0.0.0/29": ("blue", 6, 1, 2, 3),
        "10.9.0.0/29": ("", 6, 1, 0, 5),
        "198.18.0.0/30": (docker.lease_network, 2, 0, 1, 1),
        "198.18.1.0/30": (empty_docker.lease_network, 2, 0, 0, 2),
    }


def test_usage_counts_cooling_addresses_by_the_pools_reuse_delay(store: Store) -> None:
    """An address released inside its pool's reuse delay is cooling, not free; the delay
    is the one the configured pool gives, else the one this store object allocated with,
    else none. A release older than the delay is free again."""
    now = 1_800_000_000.0
    store.clock = lambda: now
    delayed = pools(ipv4_subnet="10.0.0.0/29", reuse_delay="60s")
    for container in "abcd":
        store.allocate(attachment(container), delayed)
    store.release(attachment("a").handle)
    now += 30
    store.release(attachment("b").handle)
    now += 40  # a released 70 s ago (free again), b 40 s ago (cooling)

    def states(found: list[PoolUsage]) -> tuple[int | None, ...]:
        (usage,) = [usage for usage in found if usage.pool == "10.0.0.0/29"]
        return usage.reserved, usage.used, usage.cooling, usage.free

    assert states(store.usage()) == (1, 2, 1, 2)  # the delay this store object allocated with
    assert states(store.usage(pools(ipv4_subnet="10.0.0.0/29", reuse_delay="2m"))) == (1, 2, 2, 1)
    assert states(store.usage(pools(ipv4_subnet="10.0.0.0/29"))) == (1, 2, 0, 3)  # a config without a delay
    store.reuse_delays.clear()  # another process (cnipamctl) that has not seen the config
    assert states(store.usage()) == (1, 2, 0, 3)


def test_a_pool_named_by_a_digest_has_no_size_without_its_config(store: Store) -> None:
    """A pool of many ranges is named in the store by a digest of them (ipam_config.pool_key):
    without its config only its rows can be counted; with it, everything."""
    many = pools(ipv4_subnet="10.0.0.0/29")[0]
    subnets = [parse_cidr(f"10.1.{n}.0/30", "subnet")[1] for n in range(40)]
    ranges = tuple(AddressRange(subnet, *default_bounds(subnet), None) for subnet in subnets)
    spec = PoolSpec(many.slot, pool_key(ranges), ranges, None)
    assert spec.key.startswith(DIGEST_PREFIX)
    for container in "ab":
        store.allocate(attachment(container), (spec,))
    (alone,) = [usage for usage in store.usage() if usage.pool == spec.key]
    assert (alone.family, alone.network, alone.size, alone.reserved, alone.used, alone.free) == (
        4,
        "net",
        None,
        0,
        2,
        None,
    )
    (configured,) = [usage for usage in store.usage([spec]) if usage.pool == spec.key]
    assert (configured.size, configured.used, configured.free) == (80, 2, 78)


class Recorded(StoreEvents):
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.retries = 0

    def lock_waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def retried(self) -> None:
        self.retries += 1


def test_events_report_each_write_lock_wait(store: Store) -> None:
    recorded = Recorded()
    store.events = recorded
    store.allocate(attachment("a"), V4)
    store.release(attachment("a").handle)
    store.leases()  # a read takes no writer lock
    assert len(recorded.waits) == 2 and all(0 <= wait < 5 for wait in recorded.waits)
    assert recorded.retries == 0  # nobody else wrote meanwhile


# -- listings: scan_leases ---------------------------------------------------------------


def test_scan_leases_reads_what_a_query_names_in_pages(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filter alone and together, resuming after an address, across page boundaries
    (a page of 7 rows): the same rows, in the same order, as filtering every lease."""
    from cnipam.store import lease_query
    from cnipam.store.lease_query import LeaseQuery

    monkeypatch.setattr(lease_query, "PAGE", 7)
    for n in range(12):
        store.allocate(attachment(f"a{n}"), pools(ipv4_subnet="10.1.0.0/24", ipv6_subnet="fd01::/64"))
        store.allocate(attachment(f"b{n}", "other"), pools(ipv4_subnet="10.2.0.0/24"))
    everything = store.leases()
    assert len(everything) == 12 * 3 + 3  # and three gateways
    subnet = parse_cidr("10.1.0.8/29", "test")[1]
    queries = [
        LeaseQuery(),
        LeaseQuery(within=subnet),
        LeaseQuery(within=parse_cidr("fd01::/64", "test")[1]),
        LeaseQuery(network="other"),
        LeaseQuery(network="nowhere"),
        LeaseQuery(handle="cni:net/a3/eth0"),
        LeaseQuery(container="b5"),
        LeaseQuery(network="net", after=(4, parse_ip("10.1.0.5")[1])),
        LeaseQuery(after=(4, parse_ip("10.2.0.13")[1])),
        LeaseQuery(after=(6, parse_ip("fd01::4")[1]), within=parse_cidr("fd01::/64", "test")[1]),
        LeaseQuery(handle="cni:net/a3/eth0", after=(4, 0xFFFFFFFF)),
    ]
    for query in queries:
        assert list(store.scan_leases(query)) == [lease for lease in everything if query.matches(lease)], query


# -- repair ---------------------------------------------------------------------------------


def _damage(store: Store, held: Lease) -> None:
    """What `problems` finds in derived data, made by hand: the free index or bitmap, the
    owner and boot indexes, a release time of a held address."""
    from cnipam.core.addresses import to_bytes
    from cnipam.store.etcd import EtcdStore
    from cnipam.store.etcd_keys import decode_block, encode_block
    from cnipam.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        raw = to_bytes(4, held.address + 1)
        store._db.execute("DELETE FROM free WHERE family = 4 AND first = ?", (raw,))  # lose the interval after it
        store._db.execute("INSERT INTO released VALUES (4, ?, 1.0, NULL, NULL)", (to_bytes(4, held.address),))
    else:
        assert isinstance(store, EtcdStore)
        key = store.keys.block(4, held.address >> 8)
        kvs, _ = store.client.range(key)
        block = decode_block(4, held.address >> 8, kvs[0])
        block.used = (block.used & ~(1 << (held.address & 255))) | 1 << 200  # the lease's bit lost, a stray bit
        block.freed[held.address & 255] = 1.0
        store.client.put(key, encode_block(block))
        assert held.handle is not None
        store.client.delete(store.keys.owner(held.handle, held.slot))
        store.client.put(store.keys.boot_lease("ghost", "b", 4, held.address + 7), b"")


def test_repair_rebuilds_derived_data_from_the_leases(store: Store) -> None:
    """A dry run lists and changes nothing; the repair leaves `problems` empty, every lease
    as it was, the damaged address still taken, and the store allocating as before."""
    taken = [lease for lease in store.allocate(Owner.for_request(None, "net", "a", "eth0", "", "boot-1"), pools(
        ipv4_subnet="10.3.0.0/24"))]  # fmt: skip
    store.import_leases([], {"10.8.0.0/24": Cursor(4, parse_ip("10.9.9.9")[1], True)})  # a position outside its pool
    _damage(store, taken[0])
    before = store.leases()
    assert store.problems()
    planned = store.repair(apply=False)
    assert planned and store.leases() == before and store.problems()
    assert any("10.8.0.0/24" in change for change in planned)
    assert store.repair(apply=True) == planned
    assert store.problems() == [] and store.leases() == before
    assert store.repair(apply=False) == []
    assert ips(store.allocate(attachment("b"), pools(ipv4_subnet="10.3.0.0/24"))) == ["10.3.0.3"]  # .2 still taken
