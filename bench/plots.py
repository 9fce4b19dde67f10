"""The PNG plots of docs/benchmarks.md: what each shows (jobs built from bench/run.py's
samples) and drawing them with matplotlib's Agg backend (no display).

The drawing is pure functions from numbers to a PNG file, so they can be tested on
made-up data and run either inside bench/run.py (when matplotlib imports there) or as a
script in a venv of its own: `python3 bench/plots.py JOBS.json` renders each job of a
JSON list (`{"plot": NAME, "path": PNG, ...keyword arguments}`, series as dicts of
Series' fields), which is how bench/run.py draws when its own interpreter lacks matplotlib.

Every point is a median, and its error bar the lowest and highest per-round median:
the spread the report's "per round" column gives for the ratios.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import plots_section

TYPE_CHECKING = False
if TYPE_CHECKING:
    from timing import Sample

    Curves = dict[str, list[tuple[int, Sample]]]  # ADD wall time by leases already in the store, per line

EMPTY_AT = 1.0  # where a store with 0 leases is drawn on a log axis (log 0 does not exist)


@dataclass(frozen=True)
class Series:
    """One line of a plot: x values and, per x, the median and its min-max spread."""

    label: str
    x: list[float]
    median: list[float]
    low: list[float]
    high: list[float]
    dashed: bool = False


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errorbars(ax: Any, series: Series, x: Sequence[float], marker: str) -> None:
    below = [max(m - lo, 0.0) for m, lo in zip(series.median, series.low, strict=True)]
    above = [max(hi - m, 0.0) for m, hi in zip(series.median, series.high, strict=True)]
    ax.errorbar(
        x,
        series.median,
        yerr=[below, above],
        label=series.label,
        marker=marker,
        markersize=7,
        capsize=4,
        linestyle="--" if series.dashed else "-",
    )


def latency_vs_leases(
    series: Sequence[Series], path: Path, title: str = "One ADD against the leases already in the store"
) -> Path:
    """ADD latency (ms) against the number of existing leases, log scale on both axes.

    A point at x = 0 (an empty store) is drawn at EMPTY_AT and its tick labelled "0".
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ticks: set[float] = set()
        for index, line in enumerate(series):
            x = [value if value > 0 else EMPTY_AT for value in line.x]
            ticks.update(x)
            _errorbars(ax, line, x, "osD^v<>"[index % 7])
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_y(ax)
        ordered = sorted(ticks)
        ax.set_xticks(ordered, [_leases(value) for value in ordered])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("leases already in the store (log; 0 drawn at 1)")
        ax.set_ylabel("wall time of one ADD, ms (log)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
        _save(fig, path, "markers: median; bars: lowest to highest per-round median")
    finally:
        plt.close(fig)
    return path


def docker_load(
    throughput: Sequence[Series],
    p99: Sequence[Series],
    path: Path,
    ceiling: float | None = None,
    p99_target: float | None = None,
    title: str = "cnipam-docker: RequestAddress + ReleaseAddress by client count",
) -> Path:
    """Two panels against client count: requests/s, and p99 latency (ms).

    `ceiling` (requests/s) is drawn as a horizontal line on the throughput panel: the
    disk floor, raw durable SQLite commits per second; `p99_target` (ms) likewise on
    the latency panel.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), dpi=100)
    try:
        clients: set[float] = set()
        for index, line in enumerate(throughput):
            clients.update(line.x)
            _errorbars(left, line, line.x, "os^D"[index % 4])
        if ceiling is not None:
            left.axhline(ceiling, color="grey", linestyle=":", label=f"raw SQLite durable commits ({ceiling:,.0f}/s)")
        for index, line in enumerate(p99):
            clients.update(line.x)
            _errorbars(right, line, line.x, "os^D"[index % 4])
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xticks(sorted(clients), [f"{value:g}" for value in sorted(clients)])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            ax.set_xlabel("client processes (log)")
            ax.grid(True, alpha=0.3)
        left.set_ylabel("requests per second")
        left.set_ylim(bottom=0)
        right.set_yscale("log")
        _plain_y(right)
        if p99_target is not None:
            right.axhline(p99_target, color="red", linestyle=":", label=f"target p99 < {p99_target:g} ms")
        right.set_ylabel("p99 latency of one request, ms (log)")
        left.legend(fontsize="small")
        right.legend(fontsize="small")
        fig.suptitle(title)
        _save(fig, path, "markers: median over rounds; bars: lowest to highest round")
    finally:
        plt.close(fig)
    return path


def concurrency(
    panels: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str = "One call's latency against the callers running at once",
) -> Path:
    """One panel per verb: latency (ms, log) against concurrent callers (log), a colour per
    configuration, p50 solid and p99 dashed. Each line: {"label", "x", "p50", "p99"}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4.8), dpi=100, sharey=True)
    try:
        for ax, (verb, lines) in zip(axes, panels.items(), strict=True):
            callers: set[float] = set()
            for index, line in enumerate(lines):
                colour = f"C{index}"
                callers.update(line["x"])
                ax.plot(line["x"], line["p50"], marker="osD^v"[index % 5], color=colour, label=f"{line['label']}, p50")
                ax.plot(line["x"], line["p99"], marker="osD^v"[index % 5], color=colour, linestyle="--", alpha=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_y(ax)
            ax.set_xticks(sorted(callers), [f"{value:g}" for value in sorted(callers)])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            ax.set_xlabel("callers at once (log)")
            ax.set_title(verb)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel("latency of one call, ms (log)")
        axes[0].legend(fontsize="x-small")
        fig.suptitle(title)
        _save(fig, path, "solid: p50; dashed: p99 (same colour); every call of every round")
    finally:
        plt.close(fig)
    return path


def _save(fig: Any, path: Path, footnote: str) -> None:
    """Every figure's footer: how to read its markers, then the PNG itself."""
    fig.text(0.01, 0.01, footnote, fontsize="x-small", alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _plain_y(ax: Any) -> None:
    """Tick labels 2, 5, 10, 20, 50 on a log y axis instead of 2x10^0 and 10^1."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _position: object) -> str:
        return f"{value:g}" if f"{value:.0e}"[0] in "25" else ""  # leading digit 2 or 5: 0.2, 5, 20

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _leases(value: float) -> str:
    if value <= EMPTY_AT:
        return "0"
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


# --------------------------------------------------------------------------- jobs (JSON)


LEASE_PLOT = "add-latency-vs-leases.png"
DOCKER_PLOT = "docker-driver-load.png"
CONCURRENCY_PLOT = "latency-under-concurrency.png"


def lease_series(label: str, points: Sequence[tuple[int, Sample]]) -> dict[str, Any] | None:
    """One Series (ms, as JSON) from the measured points; None when none was measured."""
    ok = [(n, sample) for n, sample in points if sample.ok]
    if not ok:
        return None
    return {
        "label": label,
        "x": [n for n, _ in ok],
        "median": [sample.median * 1e3 for _, sample in ok],
        "low": [min(sample.round_medians or sample.values) * 1e3 for _, sample in ok],
        "high": [max(sample.round_medians or sample.values) * 1e3 for _, sample in ok],
        "dashed": "/16" not in label,
    }


def plot_jobs(
    lease_curves: Curves,
    docker_plot: dict[str, Any] | None,
    folder: Path,
    concurrency_plot: dict[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(caption, job) for every plot the run has data for."""
    jobs: list[tuple[str, dict[str, Any]]] = []
    lines = [line for label, points in lease_curves.items() if (line := lease_series(label, points))]
    if lines:
        caption = (
            "One ADD against the leases already in the store, log scale on both axes (an empty store is drawn at 1). "
            "The /16 lines are figure 2's group (0, 10,000, 50,000 leases, measured interleaved); "
            "the dashed /8 and /64 lines are figure 3's (empty vs 1,000,000 leases, cnipam only: "
            "host-local is not run at 1M). "
            "Markers are medians of all runs; bars the lowest and highest per-round median."
        )
        jobs.append((caption, {"plot": "latency_vs_leases", "path": str(folder / LEASE_PLOT), "series": lines}))
    if docker_plot is not None:
        caption = (
            "The Docker driver under 1 to 64 clients (section D): requests per second and p99 latency, "
            "against the do-nothing HTTP server measured in the same rounds; the dotted lines are raw durable "
            "SQLite commits per second (one request per commit could not pass it) and issue 5's p99 target. "
            "Markers are medians over rounds; "
            "bars the lowest and highest round."
        )
        jobs.append((caption, {**docker_plot, "path": str(folder / DOCKER_PLOT)}))
    if concurrency_plot is not None:
        caption = (
            "One ADD and one DEL against the callers running at once (section C): p50 (solid) and p99 (dashed) "
            "per configuration, directly and through cnipamd, on SQLite and etcd, host-local beside them."
        )
        jobs.append((caption, {**concurrency_plot, "path": str(folder / CONCURRENCY_PLOT)}))
    return jobs


def draw(jobs: Sequence[dict[str, Any]], tmp: Path) -> str | None:
    """Render the jobs; returns why they were not drawn, or None.

    In this process when matplotlib imports here; otherwise by this file as a script in a
    venv of its own under `tmp` (matplotlib only draws, so it stays out of the cnipam venv
    that is timed).
    """
    script = Path(__file__).resolve()
    if importlib.util.find_spec("matplotlib") is not None:
        try:
            for job in jobs:
                render(job)
        except Exception as exc:  # a broken plot must not cost the measured tables
            return f"plots omitted: bench/plots.py failed: {type(exc).__name__}: {exc}"
        return None
    print(
        f"bench: matplotlib is not importable by {sys.executable}; installing it into a venv for the plots ...",
        flush=True,
    )
    venv, spec = tmp / "plot-venv", tmp / "plots.json"
    spec.write_text(json.dumps(list(jobs)))
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "matplotlib"],
        [str(venv / "bin" / "python"), str(script), str(spec)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            return f"plots omitted: matplotlib not importable and `{shlex.join(step[:3])} …` failed: {tail}"
    return None


def make_plots(
    lease_curves: Curves,
    docker_plot: dict[str, Any] | None,
    document_dir: Path | None,
    tmp: Path,
    concurrency_plot: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Draw every plot bench/run.py has data for: the Markdown section linking them ('' when
    none), and why they were not drawn (None when they were).

    With a document, into img/ beside it, linked relatively; without one (--quick, --only
    without --output), into a new temp folder that is kept (its path is printed).
    """
    if not lease_curves and docker_plot is None and concurrency_plot is None:
        return "", None
    folder = document_dir / "img" if document_dir else Path(tempfile.mkdtemp(prefix="cnipam-bench-plots-"))
    jobs = plot_jobs(lease_curves, docker_plot, folder, concurrency_plot)
    if not jobs:
        return "", None
    problem = draw([job for _, job in jobs], tmp)
    if problem is not None:
        print(f"bench: {problem}", flush=True)
        return "", problem
    for _, job in jobs:
        print(f"bench: plot {job['path']}", flush=True)
    links = [os.path.relpath(job["path"], document_dir) if document_dir else job["path"] for _, job in jobs]
    return plots_section([(caption, link) for (caption, _), link in zip(jobs, links, strict=True)]), None


def render(job: dict[str, Any]) -> Path:
    """Draw one JSON job: {"plot": "latency_vs_leases" | "docker_load" | "concurrency", "path": ..., ...}."""
    job = dict(job)
    kind, path = job.pop("plot"), Path(job.pop("path"))
    for key in ("series", "throughput", "p99"):
        if key in job:
            job[key] = [Series(**line) for line in job[key]]
    if kind == "latency_vs_leases":
        return latency_vs_leases(path=path, **job)
    if kind == "docker_load":
        return docker_load(path=path, **job)
    if kind == "concurrency":
        return concurrency(path=path, **job)
    raise ValueError(f"unknown plot {kind!r}")


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 bench/plots.py JOBS.json", file=sys.stderr)
        return 2
    for job in json.loads(Path(argv[0]).read_text()):
        print(render(job))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
