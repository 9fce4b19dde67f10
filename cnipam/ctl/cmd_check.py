"""`check`: the store's own integrity check (Store.problems), with an exit status.

Run after a disk incident, a restore, or a hand edit with `sqlite3`: the plugin refuses
to allocate from a store whose free index disagrees with its leases (StoreCorrupt), and
this names what disagrees. The exit status makes it usable from monitoring.
"""

from __future__ import annotations

import click

from .failures import CtlError
from .options import db_option, json_option
from .output import emit_json, print_lines
from .session import Session


@click.command()
@json_option
@db_option
@click.pass_obj
def check(session: Session, as_json: bool) -> None:
    """Check the store's integrity.

    Prints "ok" (exit 0), or each problem (exit 1): constraints, the free index against
    the leases, the schema version."""
    with session.existing(reading=True) as store:
        problems = store.problems()
        path = session.settings().name  # a file, or an etcd cluster and prefix
    if as_json:
        emit_json({"store": path, "ok": not problems, "problems": problems})
    elif not problems:
        click.echo("ok")
    else:
        print_lines(problems)
    if problems:
        raise CtlError(f"store {path} has {len(problems)} problem{'s' if len(problems) != 1 else ''}")
