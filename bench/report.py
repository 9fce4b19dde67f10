"""Turn measured rows into the Markdown of docs/benchmarks.md.

The document is regenerated whole by every full run, method text included, so the
figures and the description of how they were obtained can never drift apart.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from importprofile import ImportSummary
from timing import Ratio
from tooling import Machine

TIMES, DASH = "\u00d7", "\u2013"  # multiplication sign and en dash, escaped for linters


@dataclass(frozen=True)
class Target:
    """A goal on a ratio, e.g. Target("<=", 2.0); `per_round`: judged on the median of the
    per-round ratios, which cancels the machine's drift between rounds, instead of the
    ratio of the two overall medians."""

    op: str
    value: float
    per_round: bool = False

    def met(self, got: Ratio) -> bool:
        compare: Callable[[float, float], bool] = operator.le if self.op == "<=" else operator.ge
        return compare(got.round_median if self.per_round else got.value, self.value)

    def __str__(self) -> str:
        text = f"{'≤' if self.op == '<=' else '≥'} {self.value:g}{TIMES}"
        return text + " (per-round median)" if self.per_round else text


@dataclass(frozen=True)
class Row:
    """One line of the results table: numerator vs denominator and their ratio."""

    figure: str
    numerator: str
    denominator: str
    ratio: Ratio | None
    target: Target | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        if self.target is None:
            return "(report only)"
        return "met" if self.target.met(self.ratio) else "**MISSED**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _ratio_cells(r: Ratio | None) -> tuple[str, str]:
    if r is None:
        return "—", "—"
    return f"**{r.value:.2f}{TIMES}**", f"{r.round_median:.2f} ({r.low:.2f}{DASH}{r.high:.2f})"


def results_table(rows: Sequence[Row]) -> str:
    lines = [
        f"| # | measured | compared with | ratio | per round: median (min{DASH}max) | target | verdict | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        value, spread = _ratio_cells(row.ratio)
        lines.append(
            f"| {row.figure} | {_cell(row.numerator)} | {_cell(row.denominator)} | {value} | {spread} "
            f"| {row.target or '—'} | {row.verdict} | {_cell(row.note)} |"
        )
    return "\n".join(lines)


def machine_table(machine: Machine) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in machine.rows()]
    return "\n".join(lines)


def import_table(summary: ImportSummary | None, add_ms: float | None) -> str:
    if summary is None or not summary.top:
        return "_No import profile: cnipam was not available in this run._"
    share = f" ({summary.total_us / 1000 / add_ms:.0%} of the median ADD)" if add_ms else ""
    lines = [
        f"All imports of the process together: **{summary.total_us / 1000:.1f} ms**{share}, "
        "interpreter start-up imports (`encodings`, …) included; "
        f"medians over {summary.runs} runs of `-X importtime` (which itself adds overhead).",
        "",
        "| module | imported by | self ms | cumulative ms |",
        "| --- | --- | --- | --- |",
    ]
    for row in summary.top:
        parent = f"`{row.parent}`" if row.parent else "(top level)"
        lines.append(f"| `{row.module}` | {parent} | {row.self_us / 1000:.2f} | {row.cumulative_us / 1000:.2f} |")
    return "\n".join(lines)


METHOD = """\
* **Timing**: [hyperfine](https://github.com/sharkdp/hyperfine) runs every command through
  `sh -c` and subtracts its measured shell start-up (the plugins read their config from a
  `<` redirect, and hyperfine 1.15 has no `--input`). The bare-interpreter floor gets the
  same redirects, so all rows pay for the same shell work. hyperfine's shell calibration
  is good to about 1 ms, which matters only for host-local's ~3 ms rows. Times are the runs exported by
  `--export-json`; the bench computes the medians itself, and every ratio is
  median / median.
* **Interleaving**: each group of rows is measured in rounds; each round runs every command
  of the group (order reversed every other round). The "per round" column is the median,
  lowest and highest of the per-round ratios: a wide range means a noisy machine, and a
  headline ratio outside it means the machine drifted between rounds (the per-round
  median, which cancels drift, is then the better estimate).
* **One ADD**: `--prepare` DELs the same container before every timed ADD, so each ADD
  starts from the same store (baseline.md's method). Both tools are run as executables
  directly: cnipam as the launcher `pip` installed in a private venv (whose `#!` names the
  real interpreter with `-I -S`), host-local as `/usr/lib/cni/host-local`. The floor is the
  launcher's own `#!` interpreter and flags with `-c pass`.
* **Existing leases**: stores are written directly (host-local: one lease file per
  address, cursor after the last, as baseline.md's `populate.py`; cnipam: its bulk-import
  API), leases from network + 2 upwards, then ADD/DEL of one more container is timed.
  host-local is **not run at 1,000,000 leases**: it reads every lease file on every ADD
  (~13 µs each, so ~13 s per ADD) and would need a million files (and as many inodes)
  per store; its 10,000 / 50,000 rows already show the linear growth.
* **Parallel throughput**: 500 ADDs with distinct container ids, `seq 1 500 | xargs -P 8
  -n 50 sh -c 'for i; do CNI_CONTAINERID=par$i PLUGIN < conf; done'` on a store emptied by
  `--prepare`; throughput = 500 / median wall time, cnipam's directly and through a
  `cnipamd` (as in figure 7), against host-local's and against the interpreter's own limit:
  `nproc` cores ÷ the CPU time of one bare interpreter start (figure 1's floor row, per
  round), the most ADDs a second any plugin that starts this interpreter per call could
  reach. A separate, untimed run of the same script keeps every ADD's output and checks
  that all 500 succeeded with 500 distinct addresses.
* **Peak memory**: GNU time's `%M` (max RSS) of one process, median of several runs. Not
  `wait4()` on a child of the bench: Linux carries a forking parent's high-water RSS
  into the child across `exec`, so every child of the ~19 MiB bench process would
  report at least that.
* **CPU rows**: hyperfine's mean user + system time per round (its shell start-up
  subtracted), medians over rounds. CPU time is less disturbed than wall time by other
  load on the machine, and it bounds throughput: with every ADD CPU-bound, `nproc`
  cores cannot run more than `nproc / CPU per ADD` ADDs a second.
* **Disk work per call** (figure 8): rounds of ADD+DEL pairs of both tools (distinct
  containers, a store that already exists), each process run under `strace -f` counting
  `fsync`, `fdatasync`, `sync_file_range`, `syncfs` and `sync`; files made or deleted are
  read from the store's folder (names and inodes) before and after each call. The ratio's
  floor is one sync per durable change.
* **Through cnipamd** (figure 7): a `cnipamd` from the same venv listens on a socket in the
  temp folder and the plugin is pointed at it with `CNIPAM_AGENT_SOCKET`; every other row
  sets `CNIPAM_AGENT=off`, so it times the plugin on its own. An "ADD via cnipamd" is still
  a whole plugin process (its launcher's forward path: connect, send, print the answer);
  the agent's own work happens in the agent's process, so the wall time includes it but
  hyperfine's CPU time does not. The bench checks from the agent's log that it answered
  the calls. The ADD+DEL rows run both calls in one command with no prepare step, against
  two bare interpreters in one command.
* **Peers**: Go `host-local` from Debian's `containernetworking-plugins` (the installed
  peer of the plugin), and a bare interpreter start (the floor). gipam, the Docker driver's
  peer, is **not measured**: its source is not on the machine and cannot be fetched or
  built offline (only the PyPI, Debian and npm registries are reachable, and Debian does
  not package it), so the driver is compared with a do-nothing HTTP server on the same
  socket and with raw durable SQLite commits on the same disk instead.
* Everything is written under one `tempfile.mkdtemp()` folder, removed at the end; nothing
  goes to `/var/lib/cni`.
"""


def summary_line(rows: Sequence[Row]) -> str:
    """One sentence: how many targets were met, missed, or could not be measured."""
    targeted = [r for r in rows if r.target is not None]
    missed = [r for r in targeted if r.verdict == "**MISSED**"]
    unmeasured = [r for r in targeted if r.ratio is None]
    met = len(targeted) - len(missed) - len(unmeasured)
    text = f"Targets: {met} of {len(targeted)} met"
    if missed:
        text += "; **missed**: " + "; ".join(
            f"{r.figure} ({r.ratio.round_median if r.target and r.target.per_round else r.ratio.value:.2f}{TIMES}, "
            f"target {r.target})"
            for r in missed
            if r.ratio
        )
    if unmeasured:
        text += f"; {len(unmeasured)} not measured (see notes)"
    return text + "."


def results_section(title: str, method: str, rows: Sequence[Row]) -> str:
    """A section of its own (the Docker driver's, the etcd engine's): how it measured, then its rows."""
    return "\n".join([f"## {title}", "", method, "", results_table(rows), ""])


def plots_section(images: Sequence[tuple[str, str]]) -> str:
    """The Markdown section of the plots: (caption, link to the PNG) each."""
    parts = ["## Plots", ""]
    for caption, link in images:
        alt = caption.split(",")[0].split(":")[0]
        parts += [f"![{_cell(alt)}]({link})", "", caption, ""]
    return "\n".join(parts)


def document(
    machine: Machine,
    rows: Sequence[Row],
    imports: str,
    command: str,
    problems: Sequence[str],
    extra: Sequence[str] = (),
    figures: str = "",
) -> str:
    """The whole docs/benchmarks.md text; the plots (`figures`, a section) and the `extra`
    sections (the Docker driver's, the etcd engine's) follow the results."""
    verdict = summary_line(rows)
    parts = [
        "# cnipam benchmarks",
        "",
        "Generated by `bench/run.py`; do not edit by hand, rerun it. Every figure is a **ratio "
        "of two things measured in the same run**, because absolute times on this shared "
        "2-core machine drift by ±15 % from minute to minute. Absolute medians are shown "
        "next to each side only to make the ratio readable. The host-local method and "
        "reference figures are those of `shared/reference/baseline.md`.",
        "",
        f"Reproduce: `{command}` from the repository root, as root on a Debian machine (it installs "
        "hyperfine, GNU time and `containernetworking-plugins` with apt when missing); a few minutes, "
        "under 10. `--quick` is a smoke test that writes no document.",
        "",
        "## Machine",
        "",
        machine_table(machine),
        "",
        "## Results",
        "",
        verdict,
        "",
        results_table(rows),
        "",
        *([figures] if figures else []),
        *(line for section in extra for line in (section.rstrip("\n"), "")),
        "## Where the time of one ADD goes",
        "",
        imports,
        "",
        "## Method",
        "",
        METHOD,
    ]
    if problems:
        parts += ["## Problems seen during the run", ""] + [f"* {_cell(p)}" for p in problems] + [""]
    return "\n".join(parts)
