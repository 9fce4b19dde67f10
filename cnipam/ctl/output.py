"""Printing: tables fitted to a terminal, plain aligned columns in a pipe, JSON on request.

A table is written as its rows come (`Listing.write`), so `cnipamctl leases` lists a
million leases in constant memory: the column widths are taken from the first SAMPLE
rows and later rows are padded to them (a longer cell widens its own line, never cut in
a pipe). On a terminal the table is fitted to the window: the decorative columns (kind,
boot, age, a usage bar) are left out first, in the order the table gives, and only then
do the wide identifying ones (owner, container, pool) end in an ellipsis; the address is
never cut. In a pipe nothing is cut, wrapped, coloured or boxed, and trailing blanks are
stripped, so `cnipamctl leases | grep`, `awk` and `sort` see one record per line. `--json`
prints nothing but the JSON document, streamed the same way.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterable, Sequence

import click

from ..core.leases import DOCKER_AUX, DOCKER_ENDPOINT, DOCKER_GATEWAY, GATEWAY, Lease

SAMPLE = 256  # rows whose cells set the column widths
GAP = "  "
MIN_WIDE = 8
CHUNK = 512  # lines written at a time


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def emit_json_list(items: Iterable[object]) -> None:
    """A JSON list written item by item, byte for byte what emit_json(list(items)) writes."""
    out, first = sys.stdout, True
    out.write("[")
    for item in items:
        out.write(("\n  " if first else ",\n  ") + json.dumps(item, indent=2).replace("\n", "\n  "))
        first = False
    out.write("]\n" if first else "\n]\n")
    out.flush()


class Styled:
    """A cell drawn in parts, each with click.style's keywords on a terminal (plain in a pipe)."""

    def __init__(self, *parts: tuple[str, dict[str, object]]) -> None:
        self.parts = parts
        self.text = "".join(text for text, _ in parts)

    def render(self) -> str:
        return "".join(click.style(text, **style) for text, style in self.parts)  # type: ignore[arg-type]


Cell = str | Styled


class Listing:
    """A table whose rows are written as they come (`write`), or collected and printed
    (`add`, `print`). `wide`: identifying columns that give way with an ellipsis on a
    terminal; `decor`: columns left out first when the terminal is too narrow, in that
    order; `right`: right-aligned."""

    def __init__(
        self, *columns: str, wide: Sequence[str] = (), right: Sequence[str] = (), decor: Sequence[str] = ()
    ) -> None:
        self.columns, self.wide, self.right, self.decor = columns, set(wide), set(right), list(decor)
        self.rows: list[Sequence[Cell]] = []

    def add(self, *cells: Cell) -> None:
        self.rows.append(cells)

    def print(self) -> None:
        self.write(self.rows)

    def write(self, rows: Iterable[Sequence[Cell]]) -> int:
        """Write the header and every row; the number of rows written."""
        terminal = stdout_is_terminal()
        iterator = iter(rows)
        sample: list[Sequence[Cell]] = []
        for row in iterator:
            sample.append(row)
            if len(sample) == SAMPLE:
                break
        natural = [
            max([len(name)] + [len(_text(row[index])) for row in sample]) for index, name in enumerate(self.columns)
        ]
        shown, widths = self._fit(natural, shutil.get_terminal_size().columns) if terminal else (
            list(range(len(self.columns))), natural,
        )  # fmt: skip
        out = sys.stdout
        out.write(self._line([self.columns[i] for i in shown], shown, widths, terminal, header=True) + "\n")
        if terminal:
            rule = sum(widths[i] for i in shown) + len(GAP) * (len(shown) - 1)
            out.write(click.style("─" * rule, dim=True) + "\n")
        count, chunk = 0, []
        for row in _chain(sample, iterator):
            chunk.append(self._line([row[i] for i in shown], shown, widths, terminal))
            count += 1
            if len(chunk) == CHUNK:
                out.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            out.write("\n".join(chunk) + "\n")
        out.flush()
        return count

    def _fit(self, natural: list[int], room: int) -> tuple[list[int], list[int]]:
        """The columns shown and every column's width, for a terminal `room` wide: decor
        columns left out in their order while the rest does not fit, then the wide ones
        share what room is left (narrowest first, each at least MIN_WIDE)."""
        shown = list(range(len(self.columns)))

        def total() -> int:
            return sum(natural[i] for i in shown) + len(GAP) * (len(shown) - 1)

        for name in self.decor:
            if total() <= room:
                break
            shown.remove(self.columns.index(name))
        widths = list(natural)
        excess = total() - room
        flexible = sorted((i for i in shown if self.columns[i] in self.wide), key=lambda i: natural[i])
        if excess > 0 and flexible:
            left = sum(natural[i] for i in flexible) - excess
            for position, index in enumerate(flexible):
                share = max(MIN_WIDE, left // (len(flexible) - position))
                widths[index] = min(natural[index], share)
                left -= widths[index]
        return shown, widths

    def _line(
        self, cells: Sequence[Cell], shown: list[int], widths: list[int], terminal: bool, header: bool = False
    ) -> str:
        """One line: cells padded to their widths (cut with an ellipsis on a terminal),
        no blanks at its end."""
        parts: list[tuple[str, str, str, Cell]] = []  # padding before, text, padding after, the cell
        for cell, index in zip(cells, shown, strict=True):
            width, text = widths[index], _text(cell)
            if terminal and len(text) > width:
                text = cell = text[: max(width - 1, 0)] + "…"
            pad = " " * (width - len(text))
            right = self.columns[index] in self.right
            parts.append((pad if right else "", text, "" if right else pad, cell))
        while parts and not parts[-1][1].strip():  # trailing empty cells: nothing to draw
            parts.pop()
        if parts:
            parts[-1] = (parts[-1][0], parts[-1][1], "", parts[-1][3])
        drawn = []
        for before, text, after, cell in parts:
            if terminal and header:
                text = click.style(text, bold=True)
            elif terminal and isinstance(cell, Styled):
                text = cell.render()
            drawn.append(before + text + after)
        return GAP.join(drawn)


def _text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Styled) else cell


def _chain(first: list[Sequence[Cell]], rest: Iterable[Sequence[Cell]]) -> Iterable[Sequence[Cell]]:
    yield from first
    yield from rest


def print_lines(lines: Sequence[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


LEASE_COLUMNS = ("ip", "kind", "owner", "container", "ifname", "network", "pool", "boot", "age")


def lease_listing() -> Listing:
    """The leases table: the address, then who holds it (owner, container, network, pool:
    the identifying columns), then kind, interface, boot and age, left out first on a
    narrow terminal."""
    return Listing(
        *LEASE_COLUMNS, wide=("owner", "container", "network", "pool"), decor=("boot", "kind", "ifname", "age")
    )


def lease_row(lease: Lease, now: float) -> tuple[str, ...]:
    return (
        lease.ip, lease.kind, owner_cell(lease), lease.container_id or "-", lease.ifname or "-", lease.network or "-",
        lease.pool, short_boot(lease.boot), age(lease.created, now),
    )  # fmt: skip


def print_leases(leases: Iterable[Lease]) -> int:
    """The leases table, written as the leases come; the number of rows."""
    now = time.time()
    return lease_listing().write(lease_row(lease, now) for lease in leases)


_DOCKER_ROLES = {DOCKER_GATEWAY: "Docker gateway", DOCKER_AUX: "Docker aux address", DOCKER_ENDPOINT: "Docker endpoint"}


def owner_cell(lease: Lease) -> str:
    """Who owns a lease, in a table whose container and interface have columns of their
    own: an ecs id, an attachment (the container and interface columns), a Docker pool's
    address by what it is for, a reservation, or nobody recorded."""
    if lease.kind == GATEWAY:
        return "gateway reservation"
    if lease.docker_pool is not None:
        return _DOCKER_ROLES.get(lease.slot, "Docker address")
    if lease.handle is None:
        return "anonymous"
    if lease.handle.startswith("id:"):
        return f"id {lease.handle[3:]!r}"
    return "attachment"


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
