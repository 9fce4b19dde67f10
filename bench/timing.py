"""Timing (through hyperfine) and peak-memory measurement, and the ratios built from them.

The machine is a shared 2-core box with ±15 % drift between minutes, so an absolute
millisecond figure means little on its own. Every figure in the report is therefore the
ratio of two samples taken in the same run, and the samples are interleaved: each
benchmark's runs are split into rounds, and each round runs every benchmark of the group
once (in alternating order), so slow phases of the machine hit numerator and
denominator alike.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Bench:
    """One command to time. `prepare` runs before every timed run, outside the timing,
    to put the state back (e.g. DEL the lease the timed ADD creates)."""

    name: str
    command: str
    prepare: str = "true"
    runs: int = 30
    warmup: int = 2


@dataclass
class Sample:
    """All values of one measured quantity (run times in seconds, or peak RSS in KiB)
    and the median of each round."""

    name: str
    values: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # per round: mean user+system seconds
    error: str | None = None

    def cpu_sample(self) -> Sample:
        """The CPU time (user+system, per-round means) as a Sample of its own, so CPU
        ratios are built and reported exactly like wall-time ones."""
        return Sample(self.name, list(self.cpu), list(self.cpu), error=self.error)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass(frozen=True)
class Ratio:
    """median(numerator) / median(denominator) over all runs (the headline figure), plus
    the median and spread of the per-round ratios: when the machine drifts between rounds
    the pooled ratio can leave the per-round range, and the per-round median is the
    drift-free cross-check."""

    value: float
    round_median: float
    low: float
    high: float


def ratio(num: Sample, den: Sample) -> Ratio | None:
    """Median over median; None when either side failed or is missing."""
    if not (num.ok and den.ok):
        return None
    per_round = [a / b for a, b in zip(num.round_medians, den.round_medians, strict=False) if b > 0] or [
        num.median / den.median
    ]
    return Ratio(num.median / den.median, statistics.median(per_round), min(per_round), max(per_round))


class Hyperfine:
    """Runs single-command hyperfine invocations and reads their exported JSON."""

    def __init__(self, exe: str, env: Mapping[str, str], workdir: Path) -> None:
        self.exe = exe
        self.env = {**os.environ, **env}
        self.workdir = workdir

    def times(self, bench: Bench, runs: int) -> tuple[list[float], float]:
        """Time `bench.command` `runs` times: (wall times, mean user+system CPU seconds).

        Raises RuntimeError with hyperfine's complaint (e.g. a non-zero exit).
        """
        fd, export = tempfile.mkstemp(suffix=".json", dir=self.workdir)
        os.close(fd)
        argv = [
            self.exe,
            "--style",
            "none",
            "--shell",
            "sh",
            "--warmup",
            str(bench.warmup),
            "--runs",
            str(max(runs, 1)),
            "--prepare",
            bench.prepare,
            "--export-json",
            export,
            "-n",
            bench.name,
            bench.command,
        ]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        try:
            if done.returncode != 0:
                raise RuntimeError((done.stderr or done.stdout).strip()[-600:])
            result = json.loads(Path(export).read_text())["results"][0]
            return [float(t) for t in result["times"]], float(result["user"]) + float(result["system"])
        finally:
            os.unlink(export)


def interleaved(calls: dict[str, Callable[[int], float]], rounds: int, runs: int) -> dict[str, Sample]:
    """`runs` calls of each in turn per round, the order reversed every other round, so
    drift and warm-up fall on all alike; each call gets a number no other call got
    (a container id, say) and returns what it measured."""
    samples = {name: Sample(name) for name in calls}
    order = list(calls)
    counter = 0
    for index in range(rounds):
        for name in order if index % 2 == 0 else reversed(order):
            got = []
            for _ in range(runs):
                counter += 1
                got.append(calls[name](counter))
            samples[name].values += got
            samples[name].round_medians.append(statistics.median(got))
    return samples


def measure(hyperfine: Hyperfine, benches: Sequence[Bench], rounds: int, label: str = "") -> dict[str, Sample]:
    """Time a group of benches interleaved in `rounds` rounds; keyed by bench name.

    A bench that fails is reported (Sample.error) and dropped from later rounds; the
    others go on, so one broken command never blanks the whole report.
    """
    samples = {b.name: Sample(b.name) for b in benches}
    for r in range(rounds):
        order = benches if r % 2 == 0 else list(reversed(benches))
        for bench in order:
            sample = samples[bench.name]
            if sample.error is not None:
                continue
            print(f"  {label} round {r + 1}/{rounds}: {bench.name}", flush=True)
            try:
                got, cpu = hyperfine.times(bench, math.ceil(bench.runs / rounds))
            except RuntimeError as exc:
                sample.error = str(exc)
                print(f"  !! {bench.name} failed: {sample.error}", flush=True)
                continue
            sample.values.extend(got)
            sample.round_medians.append(statistics.median(got))
            sample.cpu.append(cpu)
    return samples


def max_rss_kib(gnu_time: str, argv: Sequence[str], stdin: Path, env: Mapping[str, str], scratch: Path) -> int:
    """Peak resident set size of one process, in KiB, as GNU time's `%M` reports it.

    Not wait4()/RUSAGE_CHILDREN on a child of this script: Linux carries the parent's
    high-water RSS into a vfork()ed or fork()ed child across exec(), so every such
    child would report at least this Python process's ~19 MiB. GNU time is a small C
    program, so its child starts from a ~1 MiB image.
    """
    report = scratch / "rss.txt"
    with stdin.open("rb") as fin:
        done = subprocess.run(
            [gnu_time, "-o", str(report), "-f", "%M", *argv],
            stdin=fin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-300:]}")
    return int(report.read_text().split()[-1])


@dataclass(frozen=True)
class Probe:
    """One process whose peak memory is measured; `undo` restores the state after it."""

    name: str
    argv: list[str]
    stdin: Path
    env: dict[str, str]
    undo: Callable[[], object] | None = None


def measure_rss(gnu_time: str, probes: Sequence[Probe], reps: int, scratch: Path) -> dict[str, Sample]:
    """Peak RSS (KiB) of each probe, `reps` times, interleaved like `measure`."""
    samples = {p.name: Sample(p.name) for p in probes}
    for _ in range(reps):
        for probe in probes:
            sample = samples[probe.name]
            if sample.error is not None:
                continue
            try:
                kib = max_rss_kib(gnu_time, probe.argv, probe.stdin, probe.env, scratch)
            except (RuntimeError, OSError) as exc:
                sample.error = str(exc)
                continue
            if probe.undo is not None:
                probe.undo()
            sample.values.append(kib)
            sample.round_medians.append(kib)
    return samples
