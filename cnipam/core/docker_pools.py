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
from .leases import LEASE, Lease, Owner
from .record import Record
from .reuse import NO_DELAY, ReuseDelay

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

SLOT = "docker"  # every Docker lease is anonymous (handle NULL); the slot only labels it
NETWORK_PREFIX = "docker:"


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

    def owner(self) -> Owner:
        """The owner of every address the pool hands out: anonymous, marked only by the
        pool's lease network, so a CNI network sharing the subnet never mistakes them."""
        return Owner(None, False, self.lease_network, "", "")

    def lease(self, address: int, created: float) -> Lease:
        """The lease row RequestAddress writes for `address`; an import writes the same
        row, so an imported address is released and counted exactly like a requested one."""
        return Lease(self.family, address, LEASE, self.key, SLOT, None, self.lease_network, "", "", created)

    def spec(self, requested: int | None, serial: bool = False, reuse: ReuseDelay = NO_DELAY) -> PoolSpec:
        """The PoolSpec of one RequestAddress: a named address may be anywhere in the
        pool (Docker's rule: `--ip` outside `--ip-range` is fine); a dynamic one comes
        from the sub-pool when there is one, lowest free first, or with `serial` (Docker's
        `com.docker.network.ipam.serial`, which swarm sets) the next free one after the
        last handed out, wrapping, so a freed address is not reused at once. `reuse` is
        the driver's reuse delay (core.reuse)."""
        whole = self.whole
        ranges = (whole,)
        if requested is None and self.sub_pool is not None:
            first = max(whole.first, self.sub_pool.value)
            last = min(whole.last, self.sub_pool.last)
            ranges = (AddressRange(self.network, first, last, None),)
        round_robin = serial and requested is None  # a named address leaves Docker's position where it was
        return PoolSpec(
            SLOT, self.key, ranges, requested, release_moves_cursor=False, lowest_free=not round_robin, reuse=reuse
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
    refused when it overlaps one of them (the first named), never replaced by another
    block; a dynamic claim gets the lowest free block of its size in the main pool.
    """
    region = pool_region(claim)
    network = claim.network
    if network is not None:
        for pool in in_use:
            if pool.network.overlaps(network):
                raise AddressConflict(f"pool {network} overlaps pool {pool.network} already in use")
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


def import_verdict(
    pools: Iterable[DockerPool],
    leases: Iterable[Lease],
    id_taken: Callable[[str], bool],
    overlap: Callable[[Network], DockerPool | None],
    held: Callable[[int, int], Lease | None],
) -> tuple[list[DockerPool], list[Lease], list[tuple[str, str]]]:
    """Split the pools and addresses of an import (Store.import_docker_pools) into those
    the store can take and the refusals, (what, why), in input order.

    The store is asked through the callbacks: whether a pool id is already used, which
    Docker pool already there overlaps a network, which lease holds an address. A pool is
    refused for an id already used (in the store or earlier in the import) or for a block
    overlapping another pool (likewise); its addresses go with it, unlisted. An address is
    refused when the store or the import already holds it. An address that is not one its
    pool could have handed out is an input error (InvalidConfig), not a refusal.
    """
    accepted: dict[str, DockerPool] = {}  # by lease network
    ids: set[str] = set()
    dropped: set[str] = set()
    refused: list[tuple[str, str]] = []
    for pool in pools:
        what = f"pool {pool.id} ({pool.network})"
        clash = overlap(pool.network)
        twin = next((other for other in accepted.values() if other.network.overlaps(pool.network)), None)
        if id_taken(pool.id):
            refused.append((what, "a pool with this id is already in the store"))
        elif pool.id in ids:
            refused.append((what, f"its id {pool.id!r} appears twice in the import"))
        elif clash is not None:
            refused.append((what, f"overlaps pool {clash.network} ({clash.id}) already in the store"))
        elif twin is not None:
            refused.append((what, f"overlaps pool {twin.network} ({twin.id}) of the same import"))
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


def refuse_import(
    pools: Sequence[DockerPool],
    leases: Sequence[Lease],
    id_taken: Callable[[str], bool],
    overlap: Callable[[Network], DockerPool | None],
    held: Callable[[int, int], Lease | None],
) -> None:
    """An engine's import is all or nothing: AddressConflict naming the first refusal."""
    refused = import_verdict(pools, leases, id_taken, overlap, held)[2]
    if refused:
        what, why = refused[0]
        raise AddressConflict(f"import refused: {what}: {why}")


def holder_text(lease: Lease) -> str:
    """Who holds an address, for a refusal: a Docker pool by its id, else the owner and its network."""
    if lease.network.startswith(NETWORK_PREFIX):
        return f"Docker pool {lease.network[len(NETWORK_PREFIX) :]}"
    return lease.describe_holder() + (f" of network {lease.network!r}" if lease.network else "")


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

    `taken` holds the (first, last) of the existing pools, sorted and disjoint (the store
    refuses overlapping pools), so one pass finds the answer: each pool in the way moves
    the candidate to the next aligned block after it.
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
