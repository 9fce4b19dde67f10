"""`usage`: how full each pool is, the first thing to look at before a pool runs out.

Status code 50 (STATUS) and 101 (ADD) tell a runtime that a pool is full; this tells the
operator how close each pool is, with a bar so the full one stands out.
"""

from __future__ import annotations

import click

from ..core.ipam_config import names_ranges
from .options import json_option, store_options
from .output import Listing, Styled, count, emit_json, stdout_is_terminal
from .session import Session

BAR_WIDTH = 20


@click.command()
@json_option
@store_options
@click.pass_obj
def usage(session: Session, as_json: bool) -> None:
    """How full each pool is.

    Per pool: size, reserved (gateways), used, cooling (inside the reuse delay the
    --config gives, or kept for an attachment after a reboot), free, percent (leased or
    reserved), and a bar. --config also lists that network's pools, those still empty too."""
    configured = [spec for _, config in session.network_configs() for spec in config.ipam.pools]
    with session.existing(reading=True) as store:
        usages = store.usage(configured)
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
        decor=("",),  # the bar goes first on a narrow terminal: the percent says the same
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
            percent(item.percent, item.size - item.free),
            bar(item.percent, item.size - item.free),
        )
    table.print()


def bar(percent: float, taken: int) -> Styled:
    """A fixed-width bar: coloured blocks on a terminal, ASCII in a pipe. A pool with
    anything taken shows a cell however little it is (its percent then reads "<0.1%")."""
    filled = round(BAR_WIDTH * percent / 100)
    if taken > 0:
        filled = max(filled, 1)  # a pool in use never shows an empty bar
    if stdout_is_terminal():
        colour = "red" if percent >= 90 else "yellow" if percent >= 70 else "green"
        return Styled(("█" * filled, {"fg": colour}), ("░" * (BAR_WIDTH - filled), {"dim": True}))
    return Styled(("#" * filled + "." * (BAR_WIDTH - filled), {}))


def percent(value: float, taken: int) -> str:
    """One decimal, except that a pool with something taken never reads 0.0%."""
    if value == 0 and taken > 0:
        return "<0.1%"
    return f"{value:.1f}%"
