"""A daemon's own metrics: its calls, its waits, its store's errors and retries, its
collector; plus the pool gauges of the stores it holds, all on one `/metrics` endpoint.

Only a process that lives across calls can count calls: the plugin, a new process per
call, has nowhere to keep a counter, so call counts and latencies are cnipamd's (for the
calls plugins forward to it) and cnipam-docker's (for dockerd's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.errors import CnipamError, StoreBusy, StoreCorrupt, StoreIOError
from ..store.base import StoreEvents
from .pools import PoolGauges, Sources

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

# A CNI call or a driver request takes a few milliseconds (docs/benchmarks.md); the
# buckets reach up to the store's default lock timeout and past it.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Waiting for a lock is usually nothing at all, so the buckets start much lower.
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_ERRORS = (("corrupt", StoreCorrupt), ("io", StoreIOError), ("busy", StoreBusy))  # the first match names it
OTHER = "other"  # a verb or method outside the known ones: labels stay bounded whatever a client sends


class CollectorCounts(Protocol):
    """What the collector counts as it goes (agent.reconciler.Reconciler keeps them)."""

    passes: int
    candidates: int
    last_candidates: int
    released: int
    blocks_returned: int


class CollectorMetrics(Collector):
    """The collector's counters as Prometheus series. Read from the object that counts, at
    each scrape, rather than copied into a second set of counters after each pass."""

    def __init__(self, counts: CollectorCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        yield CounterMetricFamily(
            "cnipam_collector_passes", "Passes of cnipamd's collector over a store.", value=counts.passes
        )
        yield CounterMetricFamily(
            "cnipam_collector_candidates",
            "Leases the collector found leaked (no cache entry for their attachment), summed over passes.",
            value=counts.candidates,
        )
        yield GaugeMetricFamily(
            "cnipam_collector_last_candidates",
            "Leases found leaked in the collector's last pass; candidates that stay pass after pass are not released.",
            value=counts.last_candidates,
        )
        yield CounterMetricFamily(
            "cnipam_collector_released_addresses", "Addresses the collector released.", value=counts.released
        )
        yield CounterMetricFamily(
            "cnipam_etcd_blocks_returned",
            "Empty etcd blocks the collector gave back to the shared pool (0 on SQLite).",
            value=counts.blocks_returned,
        )


class DaemonMetrics(StoreEvents):
    """The registry of one daemon. `verbs` are the request kinds it answers (CNI commands,
    driver methods); `verb_label` and `code_label` name those labels."""

    def __init__(self, prefix: str, verbs: Iterable[str], verb_label: str, code_label: str, help_text: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` series per counter only adds
        self.registry = CollectorRegistry()
        self.verbs = frozenset(verbs)
        self.requests = Histogram(
            f"cnipam_{prefix}_request_duration_seconds",
            help_text,
            [verb_label, code_label],
            buckets=CALL_BUCKETS,
            registry=self.registry,
        )
        self.lock_wait = Histogram(
            "cnipam_lock_wait_seconds",
            "Time a write waited for a lock: queue (behind this daemon's other calls on the store), "
            "store (the store's writer lock, shared with other processes).",
            ["lock"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "cnipam_store_errors",
            "Calls that failed in the store: busy (its lock timed out), io (cannot read or write), corrupt.",
            ["kind"],
            registry=self.registry,
        )
        for kind, _ in STORE_ERRORS:
            self.store_errors.labels(kind)
        self.retries = Counter(
            "cnipam_etcd_txn_retries",
            "etcd transactions computed again because another writer changed what they read.",
            registry=self.registry,
        )

    def add_pools(self, sources: Sources) -> None:
        self.registry.register(PoolGauges(sources))

    def add_collector(self, counts: CollectorCounts) -> None:
        """Export the counters of cnipamd's collector (agent.reconciler.Reconciler), read at each scrape."""
        self.registry.register(CollectorMetrics(counts))

    def serve(self, host: str, port: int) -> tuple[WSGIServer, str]:
        """Serve /metrics from a thread of its own: the server (to shut it down) and its URL."""
        server, _ = start_http_server(port, host, self.registry)
        bound, bound_port = str(server.server_address[0]), server.server_address[1]
        return server, f"http://{f'[{bound}]' if ':' in bound else bound}:{bound_port}/metrics"

    # -- what the daemon reports ------------------------------------------------------

    def request(self, verb: str, code: int, seconds: float) -> None:
        self.requests.labels(verb if verb in self.verbs else OTHER, str(code)).observe(seconds)

    def queue_waited(self, seconds: float) -> None:
        self.lock_wait.labels("queue").observe(seconds)

    def lock_waited(self, seconds: float) -> None:
        self.lock_wait.labels("store").observe(seconds)

    def retried(self) -> None:
        self.retries.inc()

    def failed(self, error: BaseException) -> None:
        if isinstance(error, CnipamError):
            for kind, cls in STORE_ERRORS:
                if isinstance(error, cls):
                    self.store_errors.labels(kind).inc()
                    return
