"""`migrate host-local DIR`, `migrate ecs-boltdb FILE`, `migrate gipam FILE`: move a host onto cnipam.

Both need the network config the host will use with cnipam (`--config`, the store option
that also picks the store as the plugin will): it says which
pool each lease belongs to (so the plugin finds it where it looks), what the network is
called (what leases record, and what DEL and GC match), and, with `ipam.dataDir`, where
the plugin's store is. The source is only read; see migration_run for the rules.
gipam's file needs no config: its pools carry their own subnets and ids
(migration_gipam).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from ..migration.sources import count_entries, host_local_folder, read_ecs_source, read_host_local_source
from .migration_gipam import migrate_gipam
from .migration_run import conclude, run_migration
from .netconf import NetworkConfig
from .options import json_option, store_options
from .progress import Phases
from .session import Session

F = TypeVar("F", bound=Callable[..., object])


def import_options(command: F) -> F:
    """What every migration takes: a dry run, skipping refusals, JSON output, the store."""
    for option in reversed(
        (
            click.option("--dry-run", is_flag=True, help="report what would be imported; write nothing"),
            click.option("--skip-refused", is_flag=True, help="import what can be, leaving out (and listing) the rest"),
            json_option,
            store_options,
        )
    ):
        command = option(command)
    return command


def migration_options(command: F) -> F:
    """A CNI network's migration: the name its leases record, then import_options."""
    command = import_options(command)
    return click.option("--network", help="the network name leases record (default: the config's name)")(command)


def served_config(session: Session, network: str | None) -> NetworkConfig:
    """The one network config a CNI migration serves (`--config`): it says which pool each
    lease belongs to, and picks the store as the plugin will."""
    configs = session.network_configs(network)
    if len(configs) != 1:
        raise click.UsageError(
            "give the network config cnipam will serve with --config CONF, once"
            + (f" (got {len(configs)})" if configs else "")
        )
    return configs[0][1]


@click.group()
def migrate() -> None:
    """Import an ecs-ipam, host-local or gipam store.

    All or nothing by default; the source is only read."""


@migrate.command("host-local")
@click.argument("path", metavar="DIR")
@migration_options
@click.pass_obj
def host_local(
    session: Session, path: str, network: str | None, dry_run: bool, skip_refused: bool, as_json: bool
) -> None:
    """A host-local folder (DIR, or DIR/<network> when DIR is its dataDir), served with --config CONF."""
    config = served_config(session, network)
    folder = host_local_folder(path, config.name)
    with Phases(count_entries(folder)) as phases:
        with phases.phase("reading"):
            source = read_host_local_source(folder)
        report = run_migration(session, source, config, dry_run, skip_refused, phases)
    conclude(report, as_json)  # after the progress bar is gone


@migrate.command("ecs-boltdb")
@click.argument("path", metavar="FILE")
@migration_options
@click.pass_obj
def ecs_boltdb(
    session: Session, path: str, network: str | None, dry_run: bool, skip_refused: bool, as_json: bool
) -> None:
    """An ecs-ipam boltdb file (IPAM_DB_PATH of the old plugin; stop its callers first), served with --config CONF."""
    config = served_config(session, network)
    source = read_ecs_source(path)
    with Phases(len(source.found)) as phases:
        report = run_migration(session, source, config, dry_run, skip_refused, phases)
    conclude(report, as_json)


@migrate.command("gipam")
@click.argument("path", metavar="FILE")
@import_options
@click.pass_obj
def gipam(session: Session, path: str, dry_run: bool, skip_refused: bool, as_json: bool) -> None:
    """A gipam lease file (its lease.json): Docker pools under their ids, with their addresses."""
    conclude(migrate_gipam(session, path, dry_run, skip_refused), as_json)
