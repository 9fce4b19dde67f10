"""Who holds an address, and the record of a lease."""

from __future__ import annotations

from .addresses import format_ip
from .errors import AddressConflict
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

LEASE = "lease"
GATEWAY = "gateway"  # a reservation that keeps a gateway out of every pool sharing the store

# A Docker pool's addresses are anonymous leases of network `docker:<pool id>`
# (core.docker_pools); the slot says what dockerd asked each for, as far as it said: its
# network's gateway, an aux address (`--aux-address`), or an endpoint (a container's
# interface; `container_id` is then the endpoint's name when dockerd sends it). Leases
# recorded before the driver kept this say nothing (DOCKER_UNSAID).
DOCKER_NETWORK = "docker:"
DOCKER_GATEWAY, DOCKER_AUX, DOCKER_ENDPOINT, DOCKER_UNSAID = "docker-gateway", "docker-aux", "docker-endpoint", "docker"


class Owner(Record):
    """The identity an ADD allocates for.

    `handle` is the key leases are owned by: `id:<ipam.id>` when the ecs config names an
    id, else `cni:<network>/<container>/<ifname>`, else None (an anonymous lease that only
    a DEL by address frees, as upstream ecs-ipam allows). `exclusive` owners (ecs ids) are
    refused a second address per slot, as the ECS agent expects; attachment owners get
    their existing lease back, so a retried ADD is idempotent. The attachment fields are
    recorded whichever handle is used, so GC and inspection always work.

    `netns` and `boot` say where and when the attachment lives: its CNI_NETNS and the
    kernel boot it was made in ("" for owners that outlive a reboot, Docker's pools, or
    when unknown). A reboot ends every attachment of earlier boots (core.reboot).
    """

    __slots__ = ("handle", "exclusive", "network", "container_id", "ifname", "netns", "boot")

    def __init__(
        self,
        handle: str | None,
        exclusive: bool,
        network: str,
        container_id: str,
        ifname: str,
        netns: str = "",
        boot: str = "",
    ) -> None:
        self.handle = handle
        self.exclusive = exclusive
        self.network = network
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.boot = boot

    def describe(self) -> str:
        return describe_holder(self.handle, self.container_id, self.ifname)

    @classmethod
    def for_request(
        cls, owner_id: str | None, network: str, container_id: str, ifname: str, netns: str = "", boot: str = ""
    ) -> Owner:
        if owner_id:
            return cls("id:" + owner_id, True, network, container_id, ifname, netns, boot)
        if container_id:
            return cls(f"cni:{network}/{container_id}/{ifname}", False, network, container_id, ifname, netns, boot)
        return cls(None, False, network, container_id, ifname, netns, boot)


class Lease(Record):
    """One row of the store: an address held by an owner (or reserved as a gateway).

    `boot` is the kernel boot id of the host when a CNI attachment made the lease, and
    `netns` its CNI_NETNS; both are "" for gateway reservations, Docker addresses,
    migrated leases and leases older than these fields. `gateway` is, for a lease, the
    gateway reserved for the range it came from, whose reservation goes when no lease of
    that subnet is left (None: none, or a lease older than the field)."""

    __slots__ = (
        "family", "address", "kind", "pool", "slot", "handle", "network", "container_id", "ifname", "created",
        "boot", "netns", "gateway",
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
        boot: str = "",
        netns: str = "",
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
        self.boot = boot
        self.netns = netns
        self.gateway = gateway

    @property
    def ip(self) -> str:
        return format_ip(self.family, self.address)

    def describe_holder(self) -> str:
        if self.kind == GATEWAY:
            return "a gateway reservation"
        if self.docker_pool is not None:
            return describe_docker_address(self.docker_pool, self.slot, self.container_id)
        return describe_holder(self.handle, self.container_id, self.ifname)

    @property
    def docker_pool(self) -> str | None:
        """The id of the Docker pool whose address this is, else None."""
        if self.handle is None and self.kind == LEASE and self.network.startswith(DOCKER_NETWORK):
            return self.network[len(DOCKER_NETWORK) :]
        return None


class Cursor(Record):
    """A pool's round-robin position: the last address handed out, and for ecs-ipam's
    pools also the last released (upstream's lastKnownIP); host-local's last_reserved_ip
    moves only on allocation, and the two orders differ once addresses are freed."""

    __slots__ = ("family", "address", "moves_on_release")

    def __init__(self, family: int, address: int, moves_on_release: bool) -> None:
        self.family = family
        self.address = address
        self.moves_on_release = moves_on_release


def refuse_changed(
    leases: Iterable[Lease], current: Iterable[Lease], cursors: Mapping[str, Cursor], positions: Mapping[str, Cursor]
) -> None:
    """An operator's release (a `check --report`) applies only to exactly what it was
    computed from: AddressConflict naming the first lease not held as given (`current`:
    the leases at those addresses now) or position not as given."""
    now = set(current)
    for lease in leases:
        if lease not in now:
            raise AddressConflict(
                f"{lease.ip} changed since the report was made (or is not held any more); nothing was released"
            )
    for pool, cursor in cursors.items():
        if positions.get(pool) != cursor:
            raise AddressConflict(
                f"the position of pool {pool} changed since the report was made; nothing was released"
            )


def describe_docker_address(pool_id: str, slot: str, endpoint: str) -> str:
    """How messages name the holder of a Docker pool's address (DOCKER_GATEWAY...)."""
    if slot == DOCKER_GATEWAY:
        return f"the gateway of Docker pool {pool_id}"
    if slot == DOCKER_AUX:
        return f"an aux address of Docker pool {pool_id}"
    if slot == DOCKER_ENDPOINT:
        return (
            f"endpoint {endpoint!r} of Docker pool {pool_id}" if endpoint else f"an endpoint of Docker pool {pool_id}"
        )
    return f"an address of Docker pool {pool_id}"


def describe_holder(handle: str | None, container_id: str, ifname: str) -> str:
    """How messages name an owner: by ecs id, else by attachment."""
    if handle is None:
        return "an anonymous lease"
    if handle.startswith("id:"):
        return f"id {handle[3:]!r}"
    return f"container {container_id!r} interface {ifname!r}"
