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
from ..store.sqlite_damage import SUFFIX as DAMAGE_SUFFIX
from ..store.sqlite_disk import RESERVE_SUFFIX
from .exchange_format import dump_export, parse_export
from .failures import BadInput
from .json_files import load_json_file
from .options import db_option, json_option
from .output import emit_json
from .session import Session


@click.command("export")
@click.argument("path", metavar="[FILE]", required=False)
@db_option
@click.pass_obj
def export(session: Session, path: str | None) -> None:
    """Write the whole store as JSON.

    Every lease, gateway reservation and round-robin position, and the address history,
    to FILE or stdout."""
    with session.existing(reading=True) as store:
        leases, cursors, history = store.leases(), store.cursors(), store.history()
    text = dump_export(leases, cursors, history)
    if path is None or path == "-":
        click.echo(text, nl=False)
        return
    settings = session.settings()
    if settings.etcd is None:
        _refuse_the_store(path, settings.path)
    _write_atomically(path, text)
    click.echo(f"exported {len(leases)} rows and {len(cursors)} positions to {path}", err=True)


@click.command("import")
@click.argument("path", metavar="FILE")
@json_option
@db_option
@click.pass_obj
def import_(session: Session, path: str, as_json: bool) -> None:
    """Load an export, all or nothing.

    Adds the leases, positions and history of FILE (- for stdin) in one transaction; a
    conflict with the store refuses the whole import. A file without history (written
    before cnipam kept one) starts each lease's history at the import."""
    leases, cursors, history = parse_export(load_json_file(path, "export"), path)
    with session.creating() as store:
        imported = store.import_leases(leases, cursors, history)
        where = session.settings().path
    records = len(history or ())
    if as_json:
        emit_json({"store": where, "imported": imported, "cursors": len(cursors), "history": records})
    else:
        click.echo(f"imported {imported} rows, {len(cursors)} positions and {records} history records into {where}")


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
