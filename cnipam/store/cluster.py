"""The capability of a store several hosts share, which `cnipamctl hosts` asks for by
name instead of by engine. Not in base.py: the plugin imports that on every call and
never needs this.
"""

from __future__ import annotations

import abc

from .base import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.leases import Lease
    from .etcd_keys import Block, HostSeen


class ClusterStore(Store):
    """A store several hosts share (the etcd engine): each host claims blocks of addresses
    and allocates in them, so a dead host keeps its leases and blocks until an operator
    releases them (`cnipamctl hosts`). Only such a store has these operations."""

    @abc.abstractmethod
    def hosts(self) -> list[HostSeen]:
        """Every host that ever wrote, with when it last did and what it holds."""

    @abc.abstractmethod
    def blocks(self) -> list[Block]:
        """Every claimed block of both families, in address order."""

    @abc.abstractmethod
    def return_idle_blocks(self) -> list[Block]:
        """Give back to the shared pool the empty blocks their hosts have not used for the
        store's idle time, keeping at least one block per host and pool. Returns them."""

    @abc.abstractmethod
    def repair_block(self, family: int, number: int, revision: int, clear: int, disown: bool) -> None:
        """Clear the bits `clear` of a block, which no lease may hold, and give the block up
        when `disown`, only if the block is still at `revision` (a report, applied exactly);
        else AddressConflict."""

    @abc.abstractmethod
    def prune_silent_history(self) -> list[str]:
        """Delete the address history of the hosts that have written none for longer than
        the retention's age (each host prunes its own as it writes). Returns those hosts."""

    @abc.abstractmethod
    def release_host(self, host: str, grace: float) -> tuple[list[Lease], int]:
        """Release every lease a dead host allocated and give up its blocks; refused
        (AddressConflict) while the host wrote less than `grace` seconds ago. Returns the
        released leases and the number of blocks given up."""
