"""Releasing leaked leases: addresses whose container is gone without a DEL.

A runtime that uses libcni writes a result cache entry for every attachment after its
ADD and removes it with the DEL (cnipam/libcni/cache.py). When a network's cache is in
use, a lease whose (network, container, interface) has no entry is therefore a leak:
the DEL never reached the plugin (a runtime crash, a node killed between the two). Only
networks with at least one cache entry are judged, since a runtime that keeps no cache
for a network says nothing about its leases; a network whose cached config says
`disableGC` is never judged (libcni's escape valve); and only leases that record a
container can be judged at all.

The store applies core.collector's rules: an owner is released only when it was seen
leaked in two passes at least the grace period apart (the runtime writes the entry only
after the ADD has returned, so one pass could catch an ADD in flight), with the cache
looked at again, attachment by attachment, inside the transaction that releases it
(`CacheEntries`), and all of an owner's leases together. Leases of earlier boots are the
reboot repair's (core.reboot), which cnipamd also runs at start.

The counters are the collector's health for the metrics: `passes` (passes over a store),
`candidates` (owners' leases seen leaked, summed over passes; Calico's gc_candidates),
`last_candidates` (in the last pass), `released` (leases released; Calico's
gc_reclamations), `blocks_returned` (empty etcd blocks given back to the shared pool).
"""

from __future__ import annotations

import json
import os

from ..core.collector import gc_disabled
from ..core.errors import CnipamError
from ..libcni.cache import decode_config, entry_path, list_entries
from ..libcni.errors import CacheError
from ..store.cluster import ClusterStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.leases import Lease
    from ..store.base import Store

Attachment = tuple[str, str]  # (container id, interface)


def collected_networks(cache_dir: str) -> set[str]:
    """The networks with at least one result cache entry, less those whose cached config
    says disableGC (or cannot be read: nothing then says collecting is welcome)."""
    networks: set[str] = set()
    disabled: set[str] = set()
    for entry in list_entries(cache_dir):
        network = str(entry["networkName"])
        networks.add(network)
        try:
            config = json.loads(decode_config(entry) or b"{}")
            if not isinstance(config, dict) or gc_disabled(config):
                disabled.add(network)
        except (ValueError, CacheError, CnipamError):
            disabled.add(network)
    return networks - disabled


class CacheEntries:
    """The valid attachments of one network as the store's collector asks about them: each
    question looks at the cache afresh, so an entry written a moment ago counts."""

    def __init__(self, cache_dir: str, network: str) -> None:
        self.cache_dir = cache_dir
        self.network = network

    def __contains__(self, attachment: object) -> bool:
        if not (isinstance(attachment, tuple) and len(attachment) == 2 and all(attachment)):
            return True  # not an attachment the cache could name: never judged leaked
        return os.path.lexists(entry_path(self.cache_dir, self.network, *attachment))


class Reconciler:
    def __init__(self, cache_dir: str, grace: float) -> None:
        self.cache_dir = cache_dir
        self.grace = grace
        self.passes = 0
        self.candidates = 0
        self.last_candidates = 0
        self.released = 0
        self.blocks_returned = 0

    def reconcile(self, store: Store) -> list[Lease]:
        """One pass over one store; the leases released."""
        networks = collected_networks(self.cache_dir)
        released: list[Lease] = []
        seen = 0
        if networks:
            for network in sorted(networks & {lease.network for lease in store.leases()}):
                collection = store.collect_garbage(
                    network, CacheEntries(self.cache_dir, network), max(self.grace, 1e-9)
                )
                seen += len(collection.candidates)
                released += collection.released
        if isinstance(store, ClusterStore):
            self.blocks_returned += len(store.return_idle_blocks())
            store.prune_silent_history()  # hosts gone for longer than the history's age (store/etcd_history.py)
        self.passes += 1
        self.last_candidates = seen
        self.candidates += seen
        self.released += len(released)
        return released
