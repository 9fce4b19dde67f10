"""Property tests of allocation through a real store: whatever the sequence of ADDs and
DELs, addresses are unique, inside the subnet, never reserved, and exhaustion comes
exactly at capacity."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import PoolExhausted
from cnipam.core.leases import LEASE, Owner
from cnipam.store.sqlite import SQLiteStore

subnets = st.one_of(
    st.tuples(st.just(4), st.integers(0, 255), st.integers(26, 30)).map(lambda t: (f"10.{t[1]}.0.0/{t[2]}", t[0])),
    st.tuples(st.just(6), st.integers(0, 0xFFFF), st.integers(122, 126)).map(
        lambda t: (f"2001:db8:{t[1]:x}::/{t[2]}", t[0])
    ),
)
operations = st.lists(st.tuples(st.sampled_from(["add", "del"]), st.integers(0, 80)), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subnet=subnets, ops=operations, gateway_offset=st.one_of(st.none(), st.integers(1, 2)))
def test_any_sequence_keeps_addresses_unique_and_legal(
    subnet: tuple[str, int], ops: list[tuple[str, int]], gateway_offset: int | None
) -> None:
    text, family = subnet
    key = f"ipv{family}-"
    ipam: dict[str, object] = {key + "subnet": text}
    (spec,) = parse_ecs(ipam).pools
    if gateway_offset is not None:
        from cnipam.core.addresses import format_ip

        ipam[key + "gateway"] = format_ip(family, spec.ranges[0].network.value + gateway_offset)
        (spec,) = parse_ecs(ipam).pools
    capacity = sum(last - first + 1 for first, last in spec.pieces)
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(str(Path(folder) / "ipam.db"))
        owners: dict[int, int] = {}
        for op, who in ops:
            owner = Owner.for_request(None, "net", f"c{who}", "eth0")
            if op == "del":
                store.release(owner.handle)
                owners.pop(who, None)
                continue
            if who not in owners and len(owners) == capacity:
                try:
                    store.allocate(owner, (spec,))
                except PoolExhausted:
                    continue
                raise AssertionError("allocated beyond capacity")
            (lease,) = store.allocate(owner, (spec,))
            assert owners.setdefault(who, lease.address) == lease.address  # a retry returns the same address
            assert spec.allows(lease.address)  # inside the subnet, never network/broadcast/gateway
        leased = [lease.address for lease in store.leases() if lease.kind == LEASE]
        assert sorted(leased) == sorted(owners.values())
        assert len(set(leased)) == len(leased)
        assert store.problems() == []
        store.close()
