"""The etcd client on a three-member cluster: a dead member is passed over at once, a hung
one after its share of the time, within the same call."""

from __future__ import annotations

import time
from pathlib import Path

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.etcd import EtcdStore
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from cnipam.testing.etcd_server import EtcdCluster
from tests.support.etcd import need_etcd

POOLS = parse_ecs({"ipv4-subnet": "10.21.0.0/24"}).pools


def fresh_store(cluster: EtcdCluster, folder: Path, first: int) -> EtcdStore:
    """A store as a plugin process opens it, starting at member `first`."""
    store = open_etcd(EtcdSettings(tuple(cluster.endpoints), "/over/", "node-1", lock_dir=str(folder)), 3.0)
    assert isinstance(store, EtcdStore)
    store.client._current = first  # a process starts where its pid points: the test points it
    return store


def test_a_dead_member_and_a_hung_member_are_passed_over_within_the_call(tmp_path: Path) -> None:
    """A dead member refuses connections: the next is asked at once. A hung one accepts
    them and never answers: a read gives it a third of the timeout, then asks the next.
    (A write is never sent twice: a long-lived process whose member hangs under a write
    answers 11 once and starts its next call at the next member.)"""
    need_etcd()
    with EtcdCluster(3, "over") as cluster:
        leader = cluster.leader()
        dead, hung = (member for member in cluster.members if member is not leader)
        dead.kill()
        store = fresh_store(cluster, tmp_path, cluster.members.index(dead))
        try:
            began = time.monotonic()
            assert store.allocate(Owner.for_request(None, "net", "c1", "eth0"), POOLS)
            assert time.monotonic() - began < 0.5
        finally:
            store.close()
        dead.start()  # with one member dead and one hung, the leader would have no quorum
        hung.pause()
        store = fresh_store(cluster, tmp_path, cluster.members.index(hung))
        try:
            began = time.monotonic()
            assert store.allocate(Owner.for_request(None, "net", "c2", "eth0"), POOLS)
            elapsed = time.monotonic() - began
        finally:
            hung.resume()
            store.close()
        assert 0.9 < elapsed < 2.5, elapsed
