"""`pools`: the Docker driver's pools as `docker network inspect` users think of them.

A Docker network's IPAM config is a subnet, an `--ip-range`, a gateway and aux addresses;
the driver keeps each network's as a pool (core.docker_pools) and its addresses as
leases that say what each is for (core.leases.DOCKER_GATEWAY...). This lists every pool
with those, and how full its range is: the addresses it holds, and the free ones left in
the range its containers' dynamic addresses come from (siblings share a subnet, not a
range). dockerd never tells an IPAM driver a network's name: match a pool to its network
by subnet and range (`docker network inspect`).
"""

from __future__ import annotations

import json
import time

import click

from ..core.docker_pools import DockerPool
from ..core.leases import DOCKER_AUX, DOCKER_ENDPOINT, DOCKER_GATEWAY, Lease
from ..store.lease_query import LeaseQuery
from .options import json_option, store_options
from .output import Listing, age, count, emit_json, stdout_is_terminal
from .session import Session


@click.command()
@json_option
@store_options
@click.pass_obj
def pools(session: Session, as_json: bool) -> None:
    """List the Docker driver's pools: subnet, ip-range, gateway, aux addresses, usage.

    One row per Docker network (and family), oldest first. "used" counts the pool's
    addresses, "free" the addresses of its range nobody holds."""
    with session.existing(reading=True) as store:
        found = store.docker_pools()
        by_subnet: dict[str, list[Lease]] = {}
        for pool in found:  # siblings share a subnet: read it once
            if str(pool.network) not in by_subnet:
                by_subnet[str(pool.network)] = list(store.scan_leases(LeaseQuery(within=pool.network)))
    rows = [PoolRow(pool, by_subnet[str(pool.network)]) for pool in found]
    if as_json:
        emit_json([row.as_json() for row in rows])
        return
    if not rows:
        click.echo("no Docker pools: cnipam-docker has made none in this store", err=True)
        return
    now = time.time()
    table = Listing(
        "pool", "subnet", "ip-range", "gateway", "aux", "endpoints", "used", "free", "percent", "age",
        wide=("pool", "aux"), right=("endpoints", "used", "free", "percent"), decor=("age", "endpoints"),
    )  # fmt: skip
    for row in rows:
        table.add(
            row.pool.id, str(row.pool.network), str(row.pool.sub_pool or "-"), row.gateway or "-",
            ",".join(row.aux) or "-", str(row.endpoints), count(row.used), count(row.free),
            f"{row.percent:.1f}%", age(row.pool.created, now),
        )  # fmt: skip
    table.print()
    if stdout_is_terminal() and any(row.unsaid for row in rows):
        click.echo("(addresses the driver recorded before it kept what each is for count as used only)", err=True)


class PoolRow:
    """One pool with what its addresses are for, and its range's usage."""

    def __init__(self, pool: DockerPool, subnet: list[Lease]) -> None:
        self.pool = pool
        own = [lease for lease in subnet if lease.network == pool.lease_network]
        self.gateway = next((lease.ip for lease in own if lease.slot == DOCKER_GATEWAY), "")
        self.aux = [lease.ip for lease in own if lease.slot == DOCKER_AUX]
        self.endpoints = sum(1 for lease in own if lease.slot == DOCKER_ENDPOINT)
        self.unsaid = len(own) - self.endpoints - len(self.aux) - (1 if self.gateway else 0)
        self.used = len(own)
        dynamic = pool.spec(None).ranges[0]  # the range dynamic addresses come from
        self.size = dynamic.last - dynamic.first + 1
        self.free = self.size - sum(1 for lease in subnet if dynamic.first <= lease.address <= dynamic.last)

    @property
    def percent(self) -> float:
        return round(100.0 * (self.size - self.free) / self.size, 1) if self.size else 100.0

    def as_json(self) -> dict[str, object]:
        pool = self.pool
        return {
            "id": pool.id, "address_space": pool.address_space, "family": pool.family, "subnet": str(pool.network),
            "ip_range": None if pool.sub_pool is None else str(pool.sub_pool), "gateway": self.gateway or None,
            "aux": self.aux, "endpoints": self.endpoints, "used": self.used, "size": self.size, "free": self.free,
            "percent": self.percent, "options": json.loads(pool.options or "{}"), "created": pool.created,
        }  # fmt: skip
