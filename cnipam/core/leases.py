"""Who holds an address, and the record of a lease."""

from __future__ import annotations

from .addresses import format_ip
from .record import Record

LEASE = "lease"
GATEWAY = "gateway"  # a reservation that keeps a gateway out of every pool sharing the store


class Owner(Record):
    """The identity an ADD allocates for.

    `handle` is the key leases are owned by: `id:<ipam.id>` when the ecs config names an
    id, else `cni:<network>/<container>/<ifname>`, else None (an anonymous lease that only
    a DEL by address frees, as upstream ecs-ipam allows). `exclusive` owners (ecs ids) are
    refused a second address per slot, as the ECS agent expects; attachment owners get
    their existing lease back, so a retried ADD is idempotent. The attachment fields are
    recorded whichever handle is used, so GC and inspection always work.
    """

    __slots__ = ("handle", "exclusive", "network", "container_id", "ifname")

    def __init__(self, handle: str | None, exclusive: bool, network: str, container_id: str, ifname: str) -> None:
        self.handle = handle
        self.exclusive = exclusive
        self.network = network
        self.container_id = container_id
        self.ifname = ifname

    def describe(self) -> str:
        return describe_holder(self.handle, self.container_id, self.ifname)

    @classmethod
    def for_request(cls, owner_id: str | None, network: str, container_id: str, ifname: str) -> Owner:
        if owner_id:
            return cls("id:" + owner_id, True, network, container_id, ifname)
        if container_id:
            return cls(f"cni:{network}/{container_id}/{ifname}", False, network, container_id, ifname)
        return cls(None, False, network, container_id, ifname)


class Lease(Record):
    """One row of the store: an address held by an owner (or reserved as a gateway)."""

    __slots__ = (
        "family", "address", "kind", "pool", "slot", "handle", "network", "container_id", "ifname", "created",
        "gateway",
    )  # fmt: skip

    def __init__(
        self,
        family: int,
        address: int,
        kind: str,
        pool: str,
        slot: str,
        handle: str | None,
        network: str,
        container_id: str,
        ifname: str,
        created: float,
        gateway: int | None = None,
    ) -> None:
        self.family = family
        self.address = address
        self.kind = kind
        self.pool = pool
        self.slot = slot
        self.handle = handle
        self.network = network
        self.container_id = container_id
        self.ifname = ifname
        self.created = created
        # A lease: the gateway reserved for the range it came from, whose reservation goes
        # when no lease of that subnet is left (None: none, or a lease older than the field).
        self.gateway = gateway

    @property
    def ip(self) -> str:
        return format_ip(self.family, self.address)

    def describe_holder(self) -> str:
        if self.kind == GATEWAY:
            return "a gateway reservation"
        return describe_holder(self.handle, self.container_id, self.ifname)


class Cursor(Record):
    """A pool's round-robin position: the last address handed out, and for ecs-ipam's
    pools also the last released (upstream's lastKnownIP); host-local's last_reserved_ip
    moves only on allocation, and the two orders differ once addresses are freed."""

    __slots__ = ("family", "address", "moves_on_release")

    def __init__(self, family: int, address: int, moves_on_release: bool) -> None:
        self.family = family
        self.address = address
        self.moves_on_release = moves_on_release


def describe_holder(handle: str | None, container_id: str, ifname: str) -> str:
    """How messages name an owner: by ecs id, else by attachment."""
    if handle is None:
        return "an anonymous lease"
    if handle.startswith("id:"):
        return f"id {handle[3:]!r}"
    return f"container {container_id!r} interface {ifname!r}"
