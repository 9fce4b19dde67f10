"""A Docker pool: one network's block of addresses, as the store records it.

Docker asks for a pool per network and family (RequestPool) and then for addresses
inside it by pool id. The pool's addresses are ordinary leases of the shared store,
under the pool's key (`pool_key` of its whole usable range, so `cnipamctl check` and
`usage` understand them) and with `network` = `docker:<pool id>`, so the driver can tell
its leases from a CNI network's that happen to share a subnet.
"""

from __future__ import annotations

from .addresses import BITS, Network, format_ip
from .errors import InvalidConfig
from .ipam_config import AddressRange, PoolSpec, default_bounds, pool_key
from .leases import LEASE, Lease
from .record import Record

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

    def __init__(self, id: str, address_space: str, network: Network, sub_pool: Network | None, options: str, created: float) -> None:
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

    def lease(self, address: int, created: float) -> Lease:
        """The lease row RequestAddress writes for `address`; an import writes the same
        row, so an imported address is released and counted exactly like a requested one."""
        return Lease(self.family, address, LEASE, self.key, SLOT, None, self.lease_network, "", "", created)

    def spec(self, requested: int | None, serial: bool = False) -> PoolSpec:
        """The PoolSpec of one RequestAddress: a named address may be anywhere in the
        pool (Docker's rule: `--ip` outside `--ip-range` is fine); a dynamic one comes
        from the sub-pool when there is one, lowest free first, or with `serial` (Docker's
        `com.docker.network.ipam.serial`, which swarm sets) the next free one after the
        last handed out, wrapping, so a freed address is not reused at once."""
        whole = self.whole
        ranges = (whole,)
        if requested is None and self.sub_pool is not None:
            first = max(whole.first, self.sub_pool.value)
            last = min(whole.last, self.sub_pool.last)
            ranges = (AddressRange(self.network, first, last, None),)
        round_robin = serial and requested is None  # a named address leaves Docker's position where it was
        return PoolSpec(SLOT, self.key, ranges, requested, release_moves_cursor=False, lowest_free=not round_robin)


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
