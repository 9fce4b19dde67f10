"""`recover`: a new store rebuilt from what a damaged one still holds.

The operator's way out when `cnipamctl check` (or a call failing with code 5) says the
store file is damaged: nothing is written to the damaged file, and the new one is
checked like any store. What was saved, what is held with its owner only partly known,
and what may be lost is printed; the procedure is in the README (The store).
"""

from __future__ import annotations

import click

from ..store.sqlite_recovery import RECOVERED_NETWORK, Recovery, recover
from .options import json_option
from .output import emit_json, print_lines

SHOWN = 20  # addresses listed per kind before "and N more"


@click.command("recover")
@click.argument("source", metavar="SRC")
@click.option("--to", "target", metavar="NEW", required=True, help="the new store file to build (must not exist)")
@json_option
def recover_command(source: str, target: str, as_json: bool) -> None:
    """Rebuild a damaged SQLite store into a new file.

    Reads SRC (and its -wal) page by page without writing to it, and builds NEW from
    every lease, reservation, position and Docker pool still readable. Addresses known
    to be held whose lease rows are lost stay held in NEW (network cnipam-recovered when
    their owner is unknown). Stop cnipamd and cnipam-docker first."""
    done = recover(source, target)
    if as_json:
        emit_json({name: getattr(done, name) for name in Recovery.__slots__} | {"lossless": done.lossless})
        return
    print_lines(_report(done))


def _report(done: Recovery) -> list[str]:
    lines = [
        f"recovered {done.source} into {done.target}",
        f"  pages read: {done.pages} ({done.wal})",
        f"  saved whole: {done.saved} leases and reservations"
        + (f" ({done.saved_unreached} from pages no b-tree reached)" if done.saved_unreached else ""),
        f"  round-robin positions: {done.cursors}; Docker pools: {done.docker_pools} (id counter {done.counter})",
        f"  address history: {done.history} records, and each lease's history goes on from the recovery",
    ]
    for title, items in (
        ("held, owner from an index (lease row lost)", done.rebuilt),
        (f"held, owner unknown (network {RECOVERED_NETWORK})", done.unowned),
        ("rows not used", done.dropped),
        ("damage found", done.damaged),
    ):
        if items:
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            lines.append(f"  {title}: {len(items)}")
            lines.extend(f"    {item}" for item in items[:SHOWN])
            if more:
                lines.append(f"   {more}")
    lines.extend(f"  note: {note}" for note in done.notes)
    lines.append(
        "nothing was lost"
        if done.lossless
        else "check the addresses above before releasing them: `cnipamctl --db NEW leases`, `release`"
    )
    return lines
