"""`usage`: how full each pool is, the first thing to look at before a pool runs out.

Status code 50 (STATUS) and 101 (ADD) tell a runtime that a pool is full; this tells the
operator how close each pool is, with a bar so the full one stands out.
"""

from __future__ import annotations

import click
from rich.text import Text

from ..core.ipam_config import names_ranges
from .netconf import load_network_config
from .options import db_option, json_option
from .output import Listing, count, emit_json, stdout_is_terminal
from .session import Session

BAR_WIDTH = 20


@click.command()
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="also list this network config's pools (and use its ipam.dataDir store)",
)
@json_option
@db_option
@click.pass_obj
def usage(session: Session, config_path: str | None, as_json: bool) -> None:
    """How full each pool is.

    Per pool: size, reserved (gateways), used, cooling (inside the reuse delay the
    --config gives, or kept for an attachment after a reboot), free, percent (leased or
    reserved), and a bar."""
    configured = load_network_config(config_path) if config_path else None
    with session.existing(configured.ipam.data_dir if configured else None, reading=True) as store:
        usages = store.usage(configured.ipam.pools if configured else ())
    for item in usages:
        if item.size is None and names_ranges(item.pool):
            click.echo(f"cnipamctl: warning: pool key {item.pool!r} in the store cannot be read; not sized", err=True)
        elif item.size is None:
            click.echo(
                f"cnipamctl: pool {item.pool} has too many ranges to be named by them; --config sizes it", err=True
            )
    if as_json:
        emit_json([item.as_json() for item in usages])
        return
    if not usages:
        click.echo("no pools: the store holds no lease yet (--config lists a network's pools)", err=True)
        return
    table = Listing(
        "pool",
        "size",
        "reserved",
        "used",
        "cooling",
        "free",
        "percent",
        "",
        wide=("pool",),
        right=("size", "reserved", "used", "cooling", "free", "percent"),
    )
    for item in usages:
        if item.size is None or item.free is None or item.percent is None:
            table.add(item.pool, "?", count(item.reserved), count(item.used), "?", "?", "?", "")
            continue
        table.add(
            item.pool,
            count(item.size),
            count(item.reserved),
            count(item.used),
            count(item.cooling),
            count(item.free),
            f"{item.percent:.1f}%",
            bar(item.percent, item.size - item.free),
        )
    table.print()


def bar(percent: float, taken: int) -> Text:
    """A fixed-width bar: coloured blocks on a terminal, ASCII in a pipe."""
    filled = round(BAR_WIDTH * percent / 100)
    if taken > 0:
        filled = max(filled, 1)  # a pool in use never shows an empty bar
    if stdout_is_terminal():
        colour = "red" if percent >= 90 else "yellow" if percent >= 70 else "green"
        return Text.assemble(("█" * filled, colour), ("░" * (BAR_WIDTH - filled), "dim"))
    return Text("#" * filled + "." * (BAR_WIDTH - filled))
