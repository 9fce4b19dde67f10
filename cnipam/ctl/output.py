"""Printing: rich tables on a terminal, plain aligned columns in a pipe, JSON on request.

On a terminal a table is fitted to the window (long container ids end in an ellipsis).
In a pipe nothing is cut, wrapped, coloured or boxed, and trailing blanks are stripped,
so `cnipamctl leases | grep`, `awk` and `sort` see one record per line. `--json` prints
nothing but the JSON document.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Sequence

import click
from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from ..core.leases import Lease


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


GAP = 3  # between two columns of a SIMPLE_HEAD table: padding on both sides and the divider
MIN_WIDE = 8


class Listing:
    """Rows of cells, printed as a table when complete (widths need every row).

    On a terminal only the `wide` columns give way (ellipsis); the others keep the width
    of their longest cell, so an address is never cut. In a pipe nothing is cut.
    """

    def __init__(self, *columns: str, wide: Sequence[str] = (), right: Sequence[str] = ()) -> None:
        self.columns, self.wide, self.right = columns, set(wide), set(right)
        self.rows: list[tuple[Text, ...]] = []

    def add(self, *cells: str | Text) -> None:
        """Plain strings are taken literally: a pool key's "[...]" is not rich markup."""
        self.rows.append(tuple(cell if isinstance(cell, Text) else Text(cell) for cell in cells))

    def print(self) -> None:
        terminal = stdout_is_terminal()
        console = (
            Console()
            if terminal
            else Console(file=io.StringIO(), width=1 << 16, color_system=None, force_terminal=False)
        )
        widths = self._fit(console.width - GAP * (len(self.columns) - 1)) if terminal else [None] * len(self.columns)
        table = Table(
            box=box.SIMPLE_HEAD if terminal else None,
            show_edge=False,
            pad_edge=False,
            header_style="bold" if terminal else "",
        )
        for name, width in zip(self.columns, widths, strict=True):
            justify: JustifyMethod = "right" if name in self.right else "left"
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", width=width)
        for row in self.rows:
            table.add_row(*row)
        console.print(table)
        if not terminal:
            assert isinstance(console.file, io.StringIO)
            click.echo("\n".join(line.rstrip() for line in console.file.getvalue().splitlines()))

    def _fit(self, room: int) -> list[int | None]:
        """Column widths for a terminal: every column as wide as its longest cell, except
        that the wide ones share what room is left (each at least MIN_WIDE)."""
        natural = [
            max([len(name)] + [row[index].cell_len for row in self.rows]) for index, name in enumerate(self.columns)
        ]
        flexible = [index for index, name in enumerate(self.columns) if name in self.wide]
        left = room - sum(width for index, width in enumerate(natural) if index not in flexible)
        widths: list[int | None] = list(natural)
        for position, index in enumerate(sorted(flexible, key=lambda i: natural[i])):  # narrowest first: water-filling
            share = max(MIN_WIDE, left // (len(flexible) - position))
            widths[index] = min(natural[index], share)
            left -= min(natural[index], share)
        return widths


def print_lines(lines: Sequence[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


def lease_listing(leases: Sequence[Lease], now: float | None = None) -> Listing:
    now = time.time() if now is None else now
    table = Listing(
        "ip",
        "kind",
        "owner",
        "container",
        "ifname",
        "network",
        "pool",
        "boot",
        "age",
        wide=("owner", "container", "pool"),
    )
    for lease in leases:
        cells = (
            lease.ip, lease.kind, lease.describe_holder(), lease.container_id or "-", lease.ifname or "-",
            lease.network or "-", lease.pool, short_boot(lease.boot), age(lease.created, now),
        )  # fmt: skip
        table.add(*cells)
    return table


def short_boot(boot: str) -> str:
    """A boot id's first 8 characters, as `show` prints it in full: enough to tell boots apart."""
    return boot[:8] if boot else "-"


def count(number: int) -> str:
    """A count for a table: exact up to a trillion, then in powers of ten (an IPv6 /64
    has 18446744073709551615 addresses; `1.8e19` says as much and fits)."""
    return str(number) if number < 10**12 else f"{number:.1e}".replace("e+", "e")


def age(created: float, now: float) -> str:
    """A lease's age in its two largest units (`3d4h`, `5m12s`): enough to spot a stale one."""
    seconds = max(0, int(now - created))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def when(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(created))
