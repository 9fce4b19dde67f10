"""Which leases a listing wants, given to the store so that it reads only those.

`cnipamctl leases` on a store of a million leases must not read them all to show a few,
nor hold them all to show them all: the store reads what a query names (an address
range, a network, an owner, a container) in pages, in address order, and a listing
resumes after the last address it printed (`after`, keyset paging).
"""

from __future__ import annotations

from ..core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.addresses import Network
    from ..core.leases import Lease

PAGE = 1000  # rows an engine reads at a time


class LeaseQuery(Record):
    """Leases and reservations matching every field given (None: any), strictly after
    `after` (family, address) in address order (IPv4 first)."""

    __slots__ = ("within", "network", "handle", "container", "after")

    def __init__(
        self,
        within: Network | None = None,
        network: str | None = None,
        handle: str | None = None,
        container: str | None = None,
        after: tuple[int, int] | None = None,
    ) -> None:
        self.within = within
        self.network = network
        self.handle = handle
        self.container = container
        self.after = after

    def matches(self, lease: Lease) -> bool:
        within = self.within
        return (
            (within is None or (lease.family == within.family and lease.address in within))
            and (self.network is None or lease.network == self.network)
            and (self.handle is None or lease.handle == self.handle)
            and (self.container is None or lease.container_id == self.container)
            and (self.after is None or (lease.family, lease.address) > self.after)
        )
