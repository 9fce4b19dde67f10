"""Blocks do not leak on etcd: an empty block its host left unused for `blockIdle` goes
back to the shared pool, taken over by the next host allocating there or given back by
cnipamd, with compare-and-swap like every change, and a host always keeps one block per
pool. The races: an allocation in the block while another host takes it over, and two
takeovers that each count on the other's block being kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.addresses import format_ip, parse_ip
from cnipam.core.host_local_config import parse_host_local
from cnipam.core.leases import LEASE, Owner
from cnipam.store.etcd import EtcdStore
from tests.support.store_engines import etcd_store

# One pool over blocks 10.0.1.0/24 .. 10.0.3.0/24 (block 0 is outside it).
POOL = parse_host_local(
    {"subnet": "10.0.0.0/22", "rangeStart": "10.0.1.0", "rangeEnd": "10.0.3.255"}, {"cniVersion": "1.0.0"}, ""
).pools
SECOND_BLOCK = parse_host_local(
    {"subnet": "10.0.0.0/22", "rangeStart": "10.0.2.0", "rangeEnd": "10.0.2.255"}, {"cniVersion": "1.0.0"}, ""
).pools  # another network's pool, over 10.0.2.0/24 only
LONG_AGO = time.time() - 3600


@pytest.fixture
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, EtcdStore]]:
    opened: dict[str, EtcdStore] = {}
    for name in ("a", "b", "c"):
        store = etcd_store(request, tmp_path, f"host-{name}")
        assert isinstance(store, EtcdStore)
        opened[name] = store
    yield opened
    assert opened["a"].problems() == []
    for store in opened.values():
        store.close()


def at(store: EtcdStore, owner: str, address: str, when: float | None = None) -> None:
    """`owner` takes `address` (claiming its block for the pool), at `when` by the store's clock."""
    if when is not None:
        store.clock = lambda: when
    store.allocate(Owner.for_request(None, "n", owner, "eth0"), (POOL[0].with_requested(parse_ip(address)[1]),))
    store.clock = time.time


def gone(store: EtcdStore, owner: str, when: float | None = None) -> None:
    if when is not None:
        store.clock = lambda: when
    store.release(Owner.for_request(None, "n", owner, "eth0").handle)
    store.clock = time.time


def next_ip(store: EtcdStore, owner: str) -> str:
    return store.allocate(Owner.for_request(None, "n", owner, "eth0"), POOL)[0].ip


def next_ip_racing(store: EtcdStore, owner: str, meanwhile: Callable[[], object]) -> str:
    """`next_ip`, with `meanwhile` run just before its first commit reaches etcd."""
    real_txn = store.client.txn
    fired: list[bool] = []

    def racing(compares: list[Any], ops: list[Any]) -> Any:
        if compares and not fired:
            fired.append(True)
            meanwhile()
        return real_txn(compares, ops)

    store.client.txn = racing  # type: ignore[method-assign,assignment]
    try:
        return next_ip(store, owner)
    finally:
        store.client.txn = real_txn  # type: ignore[method-assign]
        assert fired


def owners(store: EtcdStore) -> dict[str, str]:
    """Each claimed block (by its first address) and its host."""
    return {format_ip(block.family, block.first): block.host for block in store.blocks() if block.host}


def test_an_idle_empty_block_is_taken_over_unless_it_is_the_hosts_last_of_the_pool(hosts: dict[str, EtcdStore]) -> None:
    a, b = hosts["a"], hosts["b"]
    at(a, "x", "10.0.1.7", LONG_AGO)
    gone(a, "x", LONG_AGO)  # block 10.0.1.0 is empty and idle, but a's only block of the pool
    assert next_ip(b, "b1") == "10.0.2.0"  # so b claims the next free block instead
    at(a, "y", "10.0.3.9")  # now a holds another block of the pool
    assert next_ip(b, "b2") == "10.0.2.1"  # b's own block first
    for n in range(3, 257):
        next_ip(b, f"b{n}")  # b's block is full now
    assert next_ip(b, "more") == "10.0.1.0"  # a's idle empty block goes back to the pool, and b takes it
    assert owners(a) == {"10.0.1.0": "host-b", "10.0.2.0": "host-b", "10.0.3.0": "host-a"}


def test_an_allocation_racing_the_takeover_keeps_its_block(hosts: dict[str, EtcdStore]) -> None:
    a, b = hosts["a"], hosts["b"]
    at(a, "keep", "10.0.3.9")
    at(a, "x", "10.0.1.7", LONG_AGO)
    gone(a, "x", LONG_AGO)
    got = next_ip_racing(b, "b1", lambda: at(a, "racer", "10.0.1.5"))  # a allocates in the block b decided to take over
    assert b.retries >= 1  # b's takeover failed its compare and was computed again
    assert got == "10.0.2.0"  # a's block is in use again: b claims a free one
    assert owners(a)["10.0.1.0"] == "host-a"
    held = [lease.ip for lease in a.leases() if lease.kind == LEASE]
    assert sorted(held) == ["10.0.1.5", "10.0.2.0", "10.0.3.9"]


def test_two_takeovers_cannot_leave_a_host_without_a_block(hosts: dict[str, EtcdStore]) -> None:
    a, b, c = hosts["a"], hosts["b"], hosts["c"]
    for owner, address in (("x", "10.0.1.7"), ("y", "10.0.2.7")):
        at(a, owner, address, LONG_AGO)
        gone(a, owner, LONG_AGO)  # a holds two empty idle blocks of the pool: each may go, not both
    # b counts on a keeping 10.0.2.0; c takes that one over meanwhile
    got = next_ip_racing(b, "b1", lambda: c.allocate(Owner.for_request(None, "n", "c1", "eth0"), SECOND_BLOCK))
    blocks = owners(a)
    assert "host-a" in blocks.values(), blocks  # a still has a block of the pool
    assert got == "10.0.3.0" and blocks == {"10.0.1.0": "host-a", "10.0.2.0": "host-c", "10.0.3.0": "host-b"}


def test_cnipamd_gives_back_idle_empty_blocks_keeping_one_per_host_and_pool(hosts: dict[str, EtcdStore]) -> None:
    a, b = hosts["a"], hosts["b"]
    for owner, address in (("x", "10.0.1.7"), ("y", "10.0.2.7"), ("z", "10.0.3.7")):
        at(a, owner, address, LONG_AGO)
    gone(a, "x", LONG_AGO)
    gone(a, "y", LONG_AGO + 60)
    returned = b.return_idle_blocks()  # any host's cnipamd may notice
    assert sorted(format_ip(block.family, block.first) for block in returned) == ["10.0.1.0", "10.0.2.0"]
    assert owners(a) == {"10.0.3.0": "host-a"}  # the block in use is the one kept
    gone(a, "z", LONG_AGO)
    assert b.return_idle_blocks() == [] and owners(a) == {"10.0.3.0": "host-a"}  # the last one stays
    a.block_idle = 0
    assert a.return_idle_blocks() == []  # blockIdle 0: never
