"""The pool gauges, computed from a store when Prometheus scrapes (or `cnipamctl
metrics` runs): size and the addresses reserved, used, cooling and free of every pool,
and on etcd the blocks each host holds.

A pool whose ranges the store does not know (a digest key, ipam_config.pool_key, when no
config names it) gets only its reserved and used series, counted from its rows: no size,
no cooling, no free, so a "how full" query simply has no answer for it rather than a
wrong one. `cnipamctl metrics --config` with its config gives all of them.

Each scrape asks the store (`Store.usage`) rather than keeping counts of its own, so the
gauges are right whoever changed the store: the plugin running alone, the other daemon,
`cnipamctl`, another host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.errors import CnipamError
from ..core.ipam_config import PoolSpec
from ..core.pool_usage import PoolUsage
from ..store.base import Store
from ..store.cluster import ClusterStore

POOL_LABELS = ["store", "pool", "network", "family"]
STATES = ("reserved", "used", "cooling", "free")

# What one store gives at a scrape: its pools' usage, and per host (etcd) the blocks it
# claimed, their addresses in use and their addresses in all.
Reading = tuple[list[PoolUsage], dict[str, tuple[int, int, int]]]
# Each store to report: its name, and how to read it (holding it only while that runs,
# so a daemon's calls wait for one store's count at most).
Sources = Callable[[], Iterable[tuple[str, Callable[[], Reading]]]]


class PoolGauges(Collector):
    """A prometheus_client collector over the stores `sources` names."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "cnipam_pool_size_addresses",
            "Usable addresses of the pool's ranges, gateways included.",
            labels=POOL_LABELS,
        )
        addresses = GaugeMetricFamily(
            "cnipam_pool_addresses",
            "Addresses of the pool by state: reserved (gateways), used (leased), cooling (free, but inside the "
            "reuse delay or kept for an attachment after a reboot), free; they add up to the size.",
            labels=[*POOL_LABELS, "state"],
        )
        up = GaugeMetricFamily("cnipam_store_up", "1 when the store could be read at this scrape.", labels=["store"])
        blocks = GaugeMetricFamily(
            "cnipam_etcd_blocks", "etcd blocks (256 addresses each) claimed by each host.", labels=["store", "host"]
        )
        block_addresses = GaugeMetricFamily(
            "cnipam_etcd_block_addresses",
            "Addresses of the blocks each host claimed, by state: used or free.",
            labels=["store", "host", "state"],
        )
        for name, read in self.sources():
            try:
                usages, hosts = read()
            except (CnipamError, OSError):
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            for usage in usages:
                labels = [name, usage.pool, usage.network, str(usage.family)]
                states = [usage.reserved, usage.used]
                free = usage.free
                if usage.size is not None and free is not None:  # else its ranges are unknown: no size, no free
                    size.add_metric(labels, usage.size)
                    states += [usage.cooling, free]
                for state, value in zip(STATES, states, strict=False):
                    addresses.add_metric([*labels, state], value)
            for host, (claimed, used, total) in sorted(hosts.items()):
                blocks.add_metric([name, host], claimed)
                block_addresses.add_metric([name, host, "used"], used)
                block_addresses.add_metric([name, host, "free"], total - used)
        yield from (size, addresses, up, blocks, block_addresses)


def read_store(store: Store, configured: Iterable[PoolSpec] = ()) -> Reading:
    """One store's pool usage (with the `configured` pools), and its blocks per host when
    it is a cluster store."""
    usages = store.usage(configured)
    hosts: dict[str, tuple[int, int, int]] = {}
    if isinstance(store, ClusterStore):
        for block in store.blocks():
            claimed, used, total = hosts.get(block.host, (0, 0, 0))
            hosts[block.host] = (claimed + 1, used + block.taken, total + block.size)
    return usages, hosts
