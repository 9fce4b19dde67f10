"""Where an ADD's start-up time goes: `-X importtime` parsed and summarised.

For a process that lives ~20 ms, imports are most of the cost above the bare
interpreter, so the report lists the imports with the largest cumulative time. Several
runs are taken and the median per module kept, because single importtime runs are noisy.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PREFIX = "import time:"


@dataclass(frozen=True)
class ImportRow:
    """One import; `parent` is the module whose import caused it ("" = the script)."""

    module: str
    parent: str
    self_us: int
    cumulative_us: int


def parse_importtime(stderr: str) -> list[ImportRow]:
    """Parse lines like `import time:   120 |   450 |   encodings.aliases`.

    Indentation (2 spaces per level) gives the nesting; Python prints a module after
    everything it imported, so a row's parent is the next row that is one level up.
    """
    entries: list[tuple[str, int, int, int]] = []
    for line in stderr.splitlines():
        if not line.startswith(_PREFIX):
            continue
        self_text, cum_text, name = line[len(_PREFIX) :].split("|", 2)
        if not self_text.strip().isdigit():  # the header line
            continue
        stripped = name.lstrip(" ")
        entries.append((stripped.strip(), (len(name) - len(stripped) - 1) // 2, int(self_text), int(cum_text)))
    rows: list[ImportRow] = []
    pending: dict[int, list[int]] = {}  # depth -> indices of rows still waiting for a parent
    for module, depth, self_us, cum_us in entries:
        for child in pending.pop(depth + 1, []):
            rows[child] = dataclasses.replace(rows[child], parent=module)
        pending.setdefault(depth, []).append(len(rows))
        rows.append(ImportRow(module, "", self_us, cum_us))
    return rows


def profile(argv: Sequence[str], stdin: Path, env: Mapping[str, str]) -> list[ImportRow]:
    """Run argv (which already holds `-X importtime`) once; return its parsed import rows."""
    with stdin.open("rb") as fin:
        done = subprocess.run(
            list(argv), stdin=fin, capture_output=True, text=True, env={**os.environ, **env}, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"importtime run exited {done.returncode}: {done.stdout[-300:]} {done.stderr[-300:]}")
    return parse_importtime(done.stderr)


@dataclass(frozen=True)
class ImportSummary:
    top: list[ImportRow]  # medians over runs, largest cumulative first
    total_us: int  # median over runs of the summed top-level cumulative times
    runs: int


def summarise(runs: Sequence[list[ImportRow]], top: int = 12) -> ImportSummary:
    """Median self/cumulative per module over runs; keep the `top` largest cumulative."""
    by_key: dict[tuple[str, str], list[ImportRow]] = {}
    for rows in runs:
        for row in rows:
            by_key.setdefault((row.module, row.parent), []).append(row)
    medians = [
        ImportRow(
            mod,
            parent,
            int(statistics.median(r.self_us for r in rs)),
            int(statistics.median(r.cumulative_us for r in rs)),
        )
        for (mod, parent), rs in by_key.items()
    ]
    medians.sort(key=lambda r: r.cumulative_us, reverse=True)
    totals = [sum(r.cumulative_us for r in rows if not r.parent) for rows in runs]
    return ImportSummary(medians[:top], int(statistics.median(totals)) if totals else 0, len(runs))
