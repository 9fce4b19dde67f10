"""The pure allocation policy: search order and what an owner's existing lease means."""

import pytest

from cnipam.core.addresses import Network
from cnipam.core.allocator import reuse_existing, search_windows
from cnipam.core.errors import AddressConflict
from cnipam.core.ipam_config import AddressRange, PoolSpec, cut_out
from cnipam.core.leases import LEASE, Lease, Owner


def test_without_a_cursor_the_ranges_are_searched_in_order() -> None:
    assert search_windows(((1, 7), (9, 254)), None) == [(1, 7), (9, 254)]


def test_after_the_cursor_first_then_wrap_round_ending_at_the_cursor() -> None:
    assert search_windows(((1, 7), (9, 254)), 5) == [(6, 7), (9, 254), (1, 5)]
    assert search_windows(((1, 7), (9, 254)), 254) == [(1, 7), (9, 254)]
    assert search_windows(((1, 7), (9, 254)), 7) == [(9, 254), (1, 7)]


def test_ranges_are_walked_in_config_order_not_numeric_order() -> None:
    assert search_windows(((100, 110), (1, 10)), 5) == [(6, 10), (100, 110), (1, 5)]
    assert search_windows(((100, 110), (1, 10)), 50) == [(100, 110), (1, 10)]  # a cursor in no range: from the start


def test_cut_out_removes_addresses_and_ignores_those_outside() -> None:
    assert cut_out(1, 10, [1, 5, 10, 99]) == ((2, 4), (6, 9))
    assert cut_out(1, 1, [1]) == ()


SPEC = PoolSpec("4", "10.0.0.0/24", (AddressRange(Network(4, 0x0A000000, 24), 0x0A000001, 0x0A0000FE, 0x0A000001),))


def lease(address: int, slot: str = "4", handle: str = "cni:n/c/eth0") -> Lease:
    return Lease(4, address, LEASE, "10.0.0.0/24", slot, handle, "n", "c", "eth0", 0.0)


def test_an_attachment_gets_its_lease_back() -> None:
    owner = Owner.for_request(None, "n", "c", "eth0")
    assert reuse_existing(owner, SPEC, [lease(0x0A000005)]) == lease(0x0A000005)
    assert reuse_existing(owner, SPEC, [lease(0x0A000005, slot="6")]) is None


def test_an_ecs_id_is_refused_a_second_address() -> None:
    owner = Owner.for_request("task-1", "n", "", "eth0")
    with pytest.raises(AddressConflict, match="id 'task-1' already holds 10.0.0.5 in IPv4"):
        reuse_existing(owner, SPEC, [lease(0x0A000005, handle="id:task-1")])


def test_an_attachment_asking_for_something_else_is_refused() -> None:
    owner = Owner.for_request(None, "n", "c", "eth0")
    with pytest.raises(AddressConflict, match="not the requested 10.0.0.9"):
        reuse_existing(owner, SPEC.with_requested(0x0A000009), [lease(0x0A000005)])
    with pytest.raises(AddressConflict, match="outside 10.0.0.0/24"):
        reuse_existing(owner, SPEC, [lease(0x0B000005)])


def test_owner_handles_do_not_collide_across_kinds() -> None:
    assert Owner.for_request("a", "n", "c", "eth0").handle == "id:a"
    assert Owner.for_request(None, "n", "c", "eth0").handle == "cni:n/c/eth0"
    assert Owner.for_request(None, "n", "", "eth0").handle is None
