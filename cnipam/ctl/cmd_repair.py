"""`repair`: rebuild in place what `check` finds wrong in what the store derives from its
leases (Store.repair): SQLite's free index, etcd's block bitmaps and indexes, and the
round-robin positions that lie outside their pools.

Before, the way out was an export piped into an import into a new store, by hand. The
leases are the truth and are never changed, so a repair can only make an address the
leases hold taken again, never free one; a dry run, the default, lists what it would do.
What repair cannot fix (SQLite's own damage: `recover`; a lease outside its pool: the
operator's call, `check --report`) is still listed by the check that follows it.
"""

from __future__ import annotations

import click

from .failures import CtlError
from .options import json_option, store_options
from .output import emit_json, print_lines
from .session import Session


@click.command()
@click.option("--apply", is_flag=True, help="make the changes (default: only list them)")
@json_option
@store_options
@click.pass_obj
def repair(session: Session, apply: bool, as_json: bool) -> None:
    """Rebuild the free index (etcd: bitmaps and indexes) from the leases.

    Lists what would change; --apply changes it, then checks the store. Leases are never
    changed, so no held address can become free."""
    with session.existing(reading=not apply) as store:
        changes = store.repair(apply)
        problems = store.problems() if apply else []
        name = session.settings().name
    if as_json:
        emit_json({"store": name, "applied": apply, "changes": changes, "problems": problems})
    else:
        print_lines(changes)
        if not changes:
            click.echo("nothing to repair")
        elif not apply:
            click.echo(f"dry run: nothing was written; --apply makes these {len(changes)} change(s)", err=True)
        print_lines([f"still: {problem}" for problem in problems])
    if problems:
        raise CtlError(
            f"store {name}: {len(problems)} problem(s) remain that repair does not fix"
            " (SQLite's own damage: cnipamctl recover; leases outside their pools: check --report)"
        )
