"""`export` and `import`: the whole store as one JSON file, and back.

For backups, for moving a host's leases to a new disk or a new engine, and for reading
or diffing a store with ordinary tools. An import is one store transaction
(Store.import_leases): a single conflicting address refuses it all and changes nothing,
so a half-imported store never has to be cleaned up.
"""

from __future__ import annotations

import os
import tempfile

import click

from ..config_files import COMPANIONS
from ..core.docker_pools import pools_overlapping, refuse_import
from ..store.orphans import orphans
from ..store.sqlite_damage import SUFFIX as DAMAGE_SUFFIX
from ..store.sqlite_disk import RESERVE_SUFFIX
from .exchange_format import dump_export, parse_export
from .failures import BadInput
from .json_files import load_json_file
from .options import json_option, store_options
from .output import emit_json
from .session import Session


@click.command("export")
@click.argument("path", metavar="[FILE]", required=False)
@store_options
@click.pass_obj
def export(session: Session, path: str | None) -> None:
    """Write the whole store as JSON.

    Every lease, gateway reservation, round-robin position and Docker pool, and the
    address history, to FILE or stdout."""
    with session.existing(reading=True) as store:
        leases, cursors, pools, history = store.leases(), store.cursors(), store.docker_pools(), store.history()
    text = dump_export(leases, cursors, pools, history)
    if path is None or path == "-":
        click.echo(text, nl=False)
        return
    settings = session.settings()
    if settings.etcd is None:
        _refuse_the_store(path, settings.path)
    _write_atomically(path, text)
    extra = f" and {len(pools)} Docker pool(s)" if pools else ""
    click.echo(f"exported {len(leases)} rows and {len(cursors)} positions{extra} to {path}", err=True)


@click.command("import")
@click.argument("path", metavar="FILE")
@json_option
@store_options
@click.pass_obj
def import_(session: Session, path: str, as_json: bool) -> None:
    """Load an export, all or nothing.

    Adds the leases, positions and history of FILE (- for stdin) in one transaction, then
    its Docker pools; a conflict with the store, or a row `check` would flag (a lease or
    position outside its pool), refuses the whole import. A file without history (written
    before cnipam kept one) starts each lease's history at the import."""
    leases, cursors, pools, history = parse_export(load_json_file(path, "export"), path)
    flagged = orphans(leases, cursors)  # what `check` would find in the store after the import
    if flagged:
        more = f" (and {len(flagged) - 1} more)" if len(flagged) > 1 else ""
        raise BadInput(f"{path}: import refused, nothing was imported: {flagged[0]}{more}")
    with session.creating() as store:
        if pools:  # checked before anything is written: the pools go in a transaction of their own, last
            existing = store.docker_pools()
            ids = {pool.id for pool in existing}
            refuse_import(pools, [], ids.__contains__, lambda net: pools_overlapping(existing, net), lambda *_: None)
        imported = store.import_leases(leases, cursors, history)
        if pools:
            store.import_docker_pools(pools, [])
        where = session.settings().name
    records = len(history or ())
    if as_json:
        counts = {"imported": imported, "cursors": len(cursors), "docker_pools": len(pools), "history": records}
        emit_json({"store": where, **counts})
    else:
        extra = f", {len(pools)} Docker pool(s)" if pools else ""
        click.echo(f"imported {imported} rows, {len(cursors)} positions{extra} and {records} history records", nl=False)
        click.echo(f" into {where}")


def _refuse_the_store(path: str, store: str) -> None:
    """An export written over the store (or its WAL) would replace the file under every
    process that holds it: cnipamd and the Docker driver would go on writing into the
    unlinked one, and every lease they hand out from then on would be lost."""
    target = os.path.realpath(path)
    for name in (store, *(store + suffix for suffix in (*COMPANIONS, ".lock", RESERVE_SUFFIX, DAMAGE_SUFFIX))):
        try:
            same = target == os.path.realpath(name) or os.path.samefile(path, name)
        except OSError:  # one of them does not exist (a WAL is removed with the last connection)
            same = False
        if same:
            raise BadInput(f"{path} is the store {store} or one of its files; export to another file")


def _write_atomically(path: str, text: str) -> None:
    """A crash while writing leaves the previous file (or none), never half an export."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".cnipam-export.", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
