"""Releasing leaked leases: addresses whose container is gone without a DEL.

A runtime that uses libcni writes a result cache entry for every attachment after its
ADD and removes it with the DEL (cnipam/libcni/cache.py). When a network's cache is in
use, a lease whose (network, container, interface) has no entry is therefore a leak:
the DEL never reached the plugin (a runtime crash, a node reboot between the two). Only
networks with at least one cache entry are judged, since a runtime that keeps no cache
for a network says nothing about its leases; only leases that record a container can be
judged at all; and leases younger than the grace period are left alone, because the
runtime writes the entry only after the ADD has returned.

The leases to release are chosen before the store's transaction, but the cache is looked
at again inside it, entry by entry (`StillValid`), just before anything is released: an
ADD whose runtime wrote its entry meanwhile keeps its lease, and a lease created
meanwhile by another attachment is never even a candidate.
"""

from __future__ import annotations

import os
import time

from ..core.leases import LEASE
from ..libcni.cache import entry_path, list_entries

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.leases import Lease
    from ..store.base import Store

Attachment = tuple[str, str]  # (container id, interface)


def cached_networks(cache_dir: str) -> set[str]:
    """The networks with at least one result cache entry."""
    return {str(entry["networkName"]) for entry in list_entries(cache_dir)}


def has_entry(cache_dir: str, network: str, attachment: Attachment) -> bool:
    return os.path.lexists(entry_path(cache_dir, network, *attachment))


def candidates(leases: list[Lease], network: str, cache_dir: str, older_than: float) -> set[Attachment]:
    """Attachments of `network` holding a lease created before `older_than` with no cache entry."""
    return {
        (lease.container_id, lease.ifname)
        for lease in leases
        if lease.network == network
        and lease.kind == LEASE
        and lease.container_id
        and lease.ifname
        and lease.created < older_than
        and not has_entry(cache_dir, network, (lease.container_id, lease.ifname))
    }


class StillValid(set[Attachment]):
    """The "valid attachments" handed to Store.collect_garbage: everything except the
    candidates, each candidate judged again against the cache when the store asks."""

    def __init__(self, cache_dir: str, network: str, leaked: set[Attachment]) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.network = network
        self.leaked = leaked

    def __contains__(self, attachment: object) -> bool:
        if attachment not in self.leaked:
            return True
        return has_entry(self.cache_dir, self.network, attachment)


def reconcile(store: Store, cache_dir: str, grace: float, now: float | None = None) -> tuple[int, list[Lease]]:
    """One pass over one store: how many attachments were candidates (the metrics'
    collector health), and the leases released."""
    networks = cached_networks(cache_dir)
    if not networks:
        return 0, []
    older_than = (time.time() if now is None else now) - grace
    leases = store.leases()
    seen = 0
    released: list[Lease] = []
    for network in sorted(networks & {lease.network for lease in leases}):
        leaked = candidates(leases, network, cache_dir, older_than)
        seen += len(leaked)
        if leaked:
            released += store.collect_garbage(network, StillValid(cache_dir, network, leaked))
    return seen, released
