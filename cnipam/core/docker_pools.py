"""A Docker pool: one network's block of addresses, as the store records it.

Docker asks for a pool per network and family (RequestPool) and then for addresses
inside it by pool id. The pool's addresses are ordinary leases of the shared store,
under the pool's key (`pool_key` of its whole usable range, so `cnipamctl check` and
`usage` understand them) and with `network` = `docker:<pool id>`, so the driver can tell
its leases from a CNI network's that happen to share a subnet.

The Docker pool policy lives here once, as `allocator.grant` holds the CNI one: where a
claimed pool goes (`place_pool`), which imported pools and addresses a store accepts
(`import_verdict`, `refuse_import`), which addresses a pool may name or release. The
engines only read what a rule asks about (through callbacks, in their own transaction)
and write the outcome.
"""

from __future__ import annotations

from .addresses import BITS, Network, format_ip
from .errors import AddressConflict, InvalidConfig, PoolExhausted
from .ipam_config import AddressRange, PoolSpec, default_bounds, pool_key
from .leases import DOCKER_AUX, DOCKER_ENDPOINT, DOCKER_GATEWAY, DOCKER_NETWORK, DOCKER_UNSAID, LEASE, Lease, Owner
from .record import Record
from .reuse import NO_DELAY, ReuseDelay

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

NETWORK_PREFIX = DOCKER_NETWORK
GATEWAY_REQUEST = ("RequestAddressType", "com.docker.network.gateway")  # libnetwork's option for a gateway
ENDPOINT_OPTIONS = ("com.docker.network.endpoint.macaddress", "com.docker.network.endpoint.name")
ENDPOINT_NAME = "com.docker.network.endpoint.name"


class AddressUse(Record):
    """What dockerd asked a Docker address for (a lease's slot, core.leases.DOCKER_GATEWAY
    ...), and the endpoint's name when it gave one. Every Docker lease is anonymous
    (handle NULL): this only labels it, for the operator (`cnipamctl`)."""

    __slots__ = ("slot", "endpoint")

    def __init__(self, slot: str = DOCKER_UNSAID, endpoint: str = "") -> None:
        self.slot = slot
        self.endpoint = endpoint


def address_use(options: dict[str, str] | None) -> AddressUse:
    """What a RequestAddress is for, from its Options (None: `"Options": null`).

    libnetwork marks the gateway (`RequestAddressType`); an endpoint carries its MAC
    address (the driver declares RequiresMACAddress to get it, on every Docker version)
    and, since moby 25, its name; aux addresses carry no options at all (null). A request
    that says none of these (another client) is left unsaid."""
    if options is None:
        return AddressUse(DOCKER_AUX)
    if options.get(GATEWAY_REQUEST[0]) == GATEWAY_REQUEST[1]:
        return AddressUse(DOCKER_GATEWAY)
    if any(name in options for name in ENDPOINT_OPTIONS):
        return AddressUse(DOCKER_ENDPOINT, options.get(ENDPOINT_NAME, ""))
    return AddressUse()


class PoolClaim(Record):
    """What RequestPool asks the store for.

    `network` is an explicit pool (`--subnet`), honoured or refused; None asks for the
    lowest free block of `/prefix` inside `main`, the configured main pool.
    """

    __slots__ = ("address_space", "family", "network", "sub_pool", "prefix", "main", "options")

    def __init__(
        self,
        address_space: str,
        family: int,
        network: Network | None,
        sub_pool: Network | None,
        prefix: int,
        main: Network | None,
        options: str,
    ) -> None:
        self.address_space = address_space
        self.family = family
        self.network = network
        self.sub_pool = sub_pool
        self.prefix = prefix
        self.main = main
        self.options = options  # JSON text of the request's Options, kept for inspection


class DockerPool(Record):
    """One row of `docker_pools`."""

    __slots__ = ("id", "address_space", "network", "sub_pool", "options", "created")

    def __init__(
        self, id: str, address_space: str, network: Network, sub_pool: Network | None, options: str, created: float
    ) -> None:
        self.id = id
        self.address_space = address_space
        self.network = network
        self.sub_pool = sub_pool
        self.options = options
        self.created = created

    @property
    def family(self) -> int:
        return self.network.family

    @property
    def whole(self) -> AddressRange:
        """Every address a caller may name: the pool less its network address (IPv4 and
        the IPv6 subnet-router anycast alike) and the IPv4 broadcast address."""
        return AddressRange(self.network, *default_bounds(self.network), None)

    @property
    def key(self) -> str:
        return pool_key((self.whole,))

    @property
    def lease_network(self) -> str:
        return NETWORK_PREFIX + self.id

    def check_named(self, address: int) -> None:
        """Refuse an address RequestAddress names outside what the pool may hand out."""
        whole = self.whole
        if not whole.first <= address <= whole.last:
            what = "outside" if address not in self.network else "a reserved address of"
            raise InvalidConfig(f"address {format_ip(self.family, address)} is {what} pool {self.network}")

    def check_own(self, family: int, address: int) -> None:
        """Refuse an address ReleaseAddress names outside the pool's network."""
        if family != self.family or address not in self.network:
            raise InvalidConfig(f"address {format_ip(family, address)} is outside pool {self.network}")

    def holds(self, lease: Lease | None) -> bool:
        """Whether `lease` is one of this pool's address leases (what ReleaseAddress frees;
        anything else at the address is left alone, as in Docker's own IPAM)."""
        return lease is not None and lease.kind == LEASE and lease.network == self.lease_network

    def owner(self, use: AddressUse) -> Owner:
        """The owner of an address the pool hands out: anonymous, marked by the pool's
        lease network, so a CNI network sharing the subnet never mistakes them, and with
        the endpoint's name (as its container) when dockerd gave it."""
        return Owner(None, False, self.lease_network, use.endpoint, "")

    def lease(self, address: int, created: float) -> Lease:
        """The lease row an import writes for `address` (what it was for is not known), as
        RequestAddress would, so an imported address is released and counted like one."""
        return Lease(self.family, address, LEASE, self.key, DOCKER_UNSAID, None, self.lease_network, "", "", created)

    def spec(
        self, requested: int | None, serial: bool = False, reuse: ReuseDelay = NO_DELAY, use: AddressUse | None = None
    ) -> PoolSpec:
        """The PoolSpec of one RequestAddress: a named address may be anywhere in the
        pool (Docker's rule: `--ip` outside `--ip-range` is fine); a dynamic one comes
        from the sub-pool when there is one, lowest free first, or with `serial` (Docker's
        `com.docker.network.ipam.serial`, which swarm sets) the next free one after the
        last handed out, wrapping, so a freed address is not reused at once. `reuse` is
        the driver's reuse delay (core.reuse), `use` what the address is for (its slot)."""
        whole = self.whole
        ranges = (whole,)
        if requested is None and self.sub_pool is not None:
            first = max(whole.first, self.sub_pool.value)
            last = min(whole.last, self.sub_pool.last)
            ranges = (AddressRange(self.network, first, last, None),)
        round_robin = serial and requested is None  # a named address leaves Docker's position where it was
        slot = DOCKER_UNSAID if use is None else use.slot
        return PoolSpec(
            slot, self.key, ranges, requested, release_moves_cursor=False, lowest_free=not round_robin, reuse=reuse
        )


def pool_region(claim: PoolClaim) -> Network:
    """The block a claim is decided in: its explicit network, or the main pool a dynamic
    block is cut from (refused when none is configured for the family)."""
    if claim.network is not None:
        return claim.network
    if claim.main is None:
        raise InvalidConfig(
            f"no IPv{claim.family} main pool is configured for dynamic pools; give --subnet or configure one"
        )
    return claim.main


def place_pool(claim: PoolClaim, in_use: Iterable[DockerPool], serial: int, created: float) -> DockerPool:
    """The pool a claim gets, under the id of counter value `serial`.

    `in_use`: the existing pools that overlap `pool_region(claim)`, as the engine found
    them (others may be included; they are ignored). An explicit network is honoured or
    refused when it overlaps one of them (the first named; `sibling_refusal`), never
    replaced by another block; a dynamic claim gets the lowest free block of its size in
    the main pool.
    """
    region = pool_region(claim)
    network = claim.network
    if network is not None:
        refusal = _first_refusal(network, claim.sub_pool, in_use, "already in use")
        if refusal is not None:
            raise AddressConflict(f"pool {network} {refusal}")
    else:
        taken = sorted((pool.network.value, pool.network.last) for pool in in_use if pool.network.overlaps(region))
        network = lowest_free_block(region, claim.prefix, taken)
        if network is None:
            raise PoolExhausted(f"no free /{claim.prefix} block left in main pool {region}")
    return DockerPool(
        pool_id(claim.address_space, network, serial),
        claim.address_space,
        network,
        claim.sub_pool,
        claim.options,
        created,
    )


def sibling_refusal(network: Network, sub_pool: Network | None, other: DockerPool, where: str) -> str | None:
    """Why a pool of `network` (dynamic addresses from `sub_pool`, if given) cannot sit
    beside `other`, or None when it can; `where` says where `other` is ("already in use").

    Docker's own IPAM lets several networks share one explicit subnet when each names
    its own `--ip-range` (shared/reference/docker-ipam.md §3): the subnet is their common
    parent, which exists while one of them does. So a pool may overlap another only as
    its sibling: the very same subnet, both with a sub-pool, the two sub-pools disjoint.
    Addresses stay unique across siblings (they are leases of one store); disjoint ranges
    keep each network's dynamic addresses its own. A network without `--ip-range` uses
    its whole subnet and shares it with nobody.
    """
    if not other.network.overlaps(network):
        return None
    if other.network != network:
        return f"overlaps pool {other.network} ({other.id}) {where}"
    if sub_pool is None:
        return f"is the subnet of pool {other.id} {where}; a network sharing a subnet needs its own --ip-range"
    if other.sub_pool is None:
        return f"is the subnet of pool {other.id} {where}, which uses it whole (it has no --ip-range)"
    if other.sub_pool.overlaps(sub_pool):
        return f"has ip-range {sub_pool}, which overlaps ip-range {other.sub_pool} of pool {other.id} {where}"
    return None


def import_verdict(
    pools: Iterable[DockerPool],
    leases: Iterable[Lease],
    id_taken: Callable[[str], bool],
    overlapping: Callable[[Network], Sequence[DockerPool]],
    held: Callable[[int, int], Lease | None],
) -> tuple[list[DockerPool], list[Lease], list[tuple[str, str]]]:
    """Split the pools and addresses of an import (Store.import_docker_pools) into those
    the store can take and the refusals, (what, why), in input order.

    The store is asked through the callbacks: whether a pool id is already used, which
    Docker pools already there overlap a network, which lease holds an address. A pool is
    refused for an id already used (in the store or earlier in the import) or for a block
    it may not share with another pool (`sibling_refusal`, likewise); its addresses go
    with it, unlisted. An address is refused when the store or the import already holds
    it. An address that is not one its pool could have handed out is an input error
    (InvalidConfig), not a refusal.
    """
    accepted: dict[str, DockerPool] = {}  # by lease network
    ids: set[str] = set()
    dropped: set[str] = set()
    refused: list[tuple[str, str]] = []
    for pool in pools:
        what = f"pool {pool.id} ({pool.network})"
        clash = _first_refusal(pool.network, pool.sub_pool, overlapping(pool.network), "already in the store")
        twin = _first_refusal(pool.network, pool.sub_pool, accepted.values(), "of the same import")
        if id_taken(pool.id):
            refused.append((what, "a pool with this id is already in the store"))
        elif pool.id in ids:
            refused.append((what, f"its id {pool.id!r} appears twice in the import"))
        elif clash is not None:
            refused.append((what, clash))
        elif twin is not None:
            refused.append((what, twin))
        else:
            accepted[pool.lease_network] = pool
        if pool.lease_network not in accepted:
            dropped.add(pool.lease_network)
        ids.add(pool.id)
    taken: set[tuple[int, int]] = set()
    kept: list[Lease] = []
    for lease in leases:
        if lease.network in dropped:
            continue
        what = f"{lease.ip} of pool {imported_pool_of(lease, accepted).id}"
        if (lease.family, lease.address) in taken:
            refused.append((what, "appears twice in the import"))
            continue
        holder = held(lease.family, lease.address)
        if holder is not None:
            refused.append((what, f"already in the store, held by {holder_text(holder)}"))
        else:
            taken.add((lease.family, lease.address))
            kept.append(lease)
    return list(accepted.values()), kept, refused


def pools_overlapping(pools: Iterable[DockerPool], network: Network) -> list[DockerPool]:
    """The pools of `pools` that overlap `network` (an engine or an import that holds every pool)."""
    return [pool for pool in pools if pool.network.overlaps(network)]


def _first_refusal(network: Network, sub_pool: Network | None, others: Iterable[DockerPool], where: str) -> str | None:
    return next((why for why in (sibling_refusal(network, sub_pool, other, where) for other in others) if why), None)


def refuse_import(
    pools: Sequence[DockerPool],
    leases: Sequence[Lease],
    id_taken: Callable[[str], bool],
    overlapping: Callable[[Network], Sequence[DockerPool]],
    held: Callable[[int, int], Lease | None],
) -> None:
    """An engine's import is all or nothing: AddressConflict naming the first refusal."""
    refused = import_verdict(pools, leases, id_taken, overlapping, held)[2]
    if refused:
        what, why = refused[0]
        raise AddressConflict(f"import refused: {what}: {why}")


def holder_text(lease: Lease) -> str:
    """Who holds an address, for a refusal: a Docker pool's address as such, else the owner and its network."""
    if lease.docker_pool is not None or not lease.network:
        return lease.describe_holder()
    return f"{lease.describe_holder()} of network {lease.network!r}"


def pool_id(address_space: str, network: Network, serial: int) -> str:
    """A pool id as the driver makes it: `SPACE/CIDR/N`, N from the never-decreasing
    `docker_pool` counter, so an id names its block and is never handed out twice."""
    return f"{address_space}/{network}/{serial}"


def pool_serial(pool_id: str) -> int | None:
    """The counter value inside an id of the driver's own form, else None (gipam's
    random ids have none): an import must move the counter past it, or the driver could
    one day mint the same id again."""
    head, slash, tail = pool_id.rpartition("/")
    if not slash or "/" not in head or not (tail.isascii() and tail.isdigit()):
        return None
    return int(tail)


def imported_pool_of(lease: Lease, pools: dict[str, DockerPool]) -> DockerPool:
    """The imported pool (keyed by lease_network) a lease of an import belongs to;
    InvalidConfig when it is not an address the pool could have handed out."""
    owner = pools.get(lease.network)
    if owner is None or lease.kind != LEASE or lease.pool != owner.key or lease.handle is not None:
        raise InvalidConfig(f"import refused: {lease.ip} is not an address lease of an imported pool")
    if lease.family != owner.family:
        raise InvalidConfig(f"import refused: {lease.ip} is not an IPv{owner.family} address of pool {owner.network}")
    owner.check_named(lease.address)
    return owner


def block_size(family: int, prefix: int) -> int:
    return 1 << (BITS[family] - prefix)


def lowest_free_block(main: Network, prefix: int, taken: list[tuple[int, int]]) -> Network | None:
    """The lowest aligned `/prefix` inside `main` that overlaps none of `taken`.

    `taken` holds the (first, last) of the existing pools, sorted; they are disjoint or
    equal (siblings share their block), so one pass finds the answer: each pool in the
    way moves the candidate to the next aligned block after it.
    """
    if prefix < main.prefix:
        return None
    step = block_size(main.family, prefix)
    candidate = main.value
    for first, last in taken:
        if last < candidate:
            continue
        if first > candidate + step - 1:
            break
        candidate = (last + step) // step * step  # the aligned block after `last`
    if candidate + step - 1 > main.last:
        return None
    return Network(main.family, candidate, prefix)
