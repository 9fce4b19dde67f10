"""`migrate gipam FILE`: gipam's pools and addresses into the store, under gipam's ids.

dockerd stores the PoolID a driver returned with each network and sends it in every
later RequestAddress, ReleaseAddress and ReleasePool, so the pools are imported under
exactly those ids (Store.import_docker_pools) and then serve like any pool the driver
made. The rules are the other migrations' (migration_run): the file is only read; every
refusal is listed with its reason; nothing is written unless everything can be, or with
`--skip-refused` the rest; the store is checked first so every conflict is listed at
once, and the import is one transaction, so a conflict appearing in between still
leaves the store unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..core.docker_pools import DockerPool, import_verdict, pools_overlapping
from ..core.leases import Lease
from ..migration.gipam_file import GipamFileError, GipamPlan, plan_gipam
from .failures import BadInput
from .json_files import read_operator_file
from .migration_report import MigrationReport, plural
from .output import Listing
from .progress import Phases
from .session import Session, has_store

SOURCE_KIND = "gipam lease file"


@dataclass(kw_only=True)
class GipamReport(MigrationReport):
    source_kind: str = SOURCE_KIND
    pools: list[DockerPool] = field(default_factory=list)  # what is (or would be) imported
    leases: list[Lease] = field(default_factory=list)

    def per_pool(self) -> list[tuple[DockerPool, int]]:
        counts: dict[str, int] = {}
        for lease in self.leases:
            counts[lease.network] = counts.get(lease.network, 0) + 1
        return [(pool, counts.get(pool.lease_network, 0)) for pool in self.pools]

    def planned(self) -> str:
        return f"{plural(len(self.pools), 'pool')} and {plural(len(self.leases), 'address', 'es')}"

    def planned_count(self) -> int:
        return len(self.pools) + len(self.leases)

    def details(self) -> dict[str, object]:
        planned = {"pools": len(self.pools), "addresses": len(self.leases)}
        return {
            "planned": planned,
            "imported": planned if self.imported else {"pools": 0, "addresses": 0},
            "pools": [{"id": pool.id, "pool": str(pool.network), "addresses": used} for pool, used in self.per_pool()],
        }

    def table(self) -> None:
        if self.pools:
            table = Listing("pool id", "pool", "addresses", wide=("pool id",), right=("addresses",))
            for pool, used in self.per_pool():
                table.add(pool.id, str(pool.network), str(used))
            table.print()


def read_gipam_file(path: str) -> GipamPlan:
    raw = read_operator_file(path, "gipam lease file")
    try:
        return plan_gipam(raw, time.time())
    except GipamFileError as exc:
        raise BadInput(f"{path} is not a gipam lease file: {exc.message}") from None


def migrate_gipam(session: Session, path: str, dry_run: bool, skip_refused: bool) -> GipamReport:
    """Read, check against the store and (unless a dry run or refused) import."""
    planned = read_gipam_file(path)
    settings = session.settings()
    report = GipamReport(source=path, store=settings.name, dry_run=dry_run, refused=list(planned.refused))
    report.notes.extend(_notes(path, planned))
    pools, leases = planned.pools, planned.leases
    with Phases(len(leases)) as phases:
        if has_store(settings):
            with phases.phase("checking the store"), session.existing() as store:
                existing_pools, existing = store.docker_pools(), store.leases()
            if _done(existing_pools, existing, pools, leases):  # this migration, run before
                report.already, pools, leases = len(pools), [], []
            else:
                pools, leases, conflicts = _verdict(existing_pools, existing, pools, leases)
                report.refused += conflicts
        report.pools, report.leases = pools, leases
        report.aborted = bool(report.refused) and not skip_refused
        if report.imported and pools:
            with phases.phase("importing"), session.creating() as store:
                store.import_docker_pools(pools, leases)
    return report


def _done(
    existing_pools: list[DockerPool], existing: list[Lease], pools: list[DockerPool], leases: list[Lease]
) -> bool:
    """Whether the store holds every pool (by id and block) and address of the file already."""
    held = {pool.id: pool.network for pool in existing_pools}
    at = {(lease.family, lease.address): lease.network for lease in existing}
    return (
        bool(pools)
        and all(held.get(pool.id) == pool.network for pool in pools)
        and all(at.get((lease.family, lease.address)) == lease.network for lease in leases)
    )


def _verdict(
    existing_pools: list[DockerPool], existing: list[Lease], pools: list[DockerPool], leases: list[Lease]
) -> tuple[list[DockerPool], list[Lease], list[tuple[str, str]]]:
    """The store's own import rules (docker_pools.import_verdict) over what it holds now,
    every refusal listed instead of the first one only."""
    ids = {pool.id for pool in existing_pools}
    by_address = {(lease.family, lease.address): lease for lease in existing}

    return import_verdict(
        pools,
        leases,
        ids.__contains__,
        lambda network: pools_overlapping(existing_pools, network),
        lambda family, address: by_address.get((family, address)),
    )


def _notes(path: str, planned: GipamPlan) -> list[str]:
    notes = [f"{path} was read, not changed; stop gipam before starting cnipam-docker on this store"]
    notes.append(
        "networks created with gipam name their IPAM driver 'gipam': serve them with `cnipam-docker --name gipam` "
        "(socket /run/docker/plugins/gipam.sock)"
    )
    if planned.mains:
        flags = " ".join(
            f"-v{family} {main.network} -v{family}ab {main.block}" for family, main in sorted(planned.mains.items())
        )
        notes.append(
            f"gipam's main pools were: {flags}; give cnipam-docker the same flags to keep cutting blocks from them"
        )
    if planned.released_blocks:
        notes.append(
            f"{len(planned.released_blocks)} released block(s) not imported (dockerd no longer refers to them): "
            + ", ".join(planned.released_blocks)
        )
    return notes
