"""One migration: plan against the config, check against the store, import in one go.

Nothing is written unless everything can be: refusals from the reader, from the plan
(outside every pool, duplicates) and conflicts with what the store already holds all
abort by default. `--skip-refused` imports the rest, still listing what was left out.
The store is checked before the import so that every conflict is listed at once (the
import itself would stop at the first), and the import is a single
Store.import_leases call, so a conflict that appears in between still leaves the
store unchanged.
"""

from __future__ import annotations

from ..core.leases import GATEWAY, Lease
from ..migration.plan import plan
from ..migration.sources import Source
from .failures import CtlError
from .migration_report import MigrationReport, Report
from .netconf import NetworkConfig
from .progress import Phases
from .session import Session, has_store


def run_migration(
    session: Session, source: Source, config: NetworkConfig, dry_run: bool, skip_refused: bool, phases: Phases
) -> Report:
    """Plan, check and (unless a dry run or refused) import; the report says which happened."""
    with phases.phase("planning"):
        planned = plan(source.found, source.positions, config.ipam, config.name, source.moves_on_release)
    settings = session.settings()
    report = Report(
        source_kind=source.kind, source=source.path, network=config.name, store=settings.name, dry_run=dry_run
    )
    report.refused = source.refused + planned.refused
    report.notes = source.notes + planned.notes
    if config.store is not None or config.ipam.data_dir:  # the config itself picks the plugin's store
        plugin_store = Session(configs=session.configs, env=session.env).settings()
        if plugin_store.name != settings.name:
            report.notes.append(f"this config makes the plugin use {plugin_store.name}, not {settings.name}")
    leases, cursors = planned.leases, planned.cursors
    if has_store(settings):
        with phases.phase("checking the store"), session.existing() as store:
            leases, conflicts, present, report.already = store_conflicts(store.leases(), leases)
        report.refused += conflicts
        if present:
            report.notes.append(f"{len(present)} gateway reservation(s) already in the store: {', '.join(present)}")
        if report.already and not leases and not conflicts:  # a finished migration run again: nothing to do
            cursors = {}
    report.leases, report.cursors = leases, cursors
    report.aborted = bool(report.refused) and not skip_refused
    if report.imported and (leases or cursors):
        with phases.phase("importing"), session.creating() as store:
            store.import_leases(leases, planned.cursors)
    return report


def conclude(report: MigrationReport, as_json: bool) -> None:
    """Print the report; an aborted migration then fails with one line (the list is above)."""
    report.show(as_json)
    if report.aborted:
        raise CtlError(
            f"migration {'would be ' if report.dry_run else ''}refused: {len(report.refused)} item"
            f"{'s' if len(report.refused) != 1 else ''} cannot be imported (listed above); "
            f"nothing was written; --skip-refused imports the rest"
        )


def store_conflicts(
    existing: list[Lease], incoming: list[Lease]
) -> tuple[list[Lease], list[tuple[str, str]], list[str], int]:
    """Split the incoming rows: those the store accepts, those it would refuse (a taken
    address, an owner's slot already used) with why, gateways it already reserves (the
    same reservation twice is no conflict: they are left out), and how many leases it
    already holds exactly as the source has them (an earlier run of this migration: left
    as they are, not refused)."""
    by_address = {(lease.family, lease.address): lease for lease in existing}
    by_slot = {(lease.handle, lease.slot): lease for lease in existing if lease.handle is not None}
    accepted, refused, present, already = [], [], [], 0
    for lease in incoming:
        held = by_address.get((lease.family, lease.address))
        other = by_slot.get((lease.handle, lease.slot)) if lease.handle is not None else None
        if held is not None and held.kind == lease.kind == GATEWAY:
            present.append(lease.ip)
        elif held is not None and _same_holder(held, lease):
            already += 1
        elif held is not None:
            refused.append((lease.ip, f"already in the store, held by {held.describe_holder()}"))
        elif other is not None:
            refused.append((lease.ip, f"{lease.describe_holder()} already holds {other.ip} in the store"))
        else:
            accepted.append(lease)
    return accepted, refused, present, already


def _same_holder(held: Lease, lease: Lease) -> bool:
    """The store's lease is the migrated one: same pool, owner and attachment (its time may differ)."""
    same = ("kind", "pool", "slot", "handle", "network", "container_id", "ifname")
    return all(getattr(held, name) == getattr(lease, name) for name in same)
