"""One config of 8,000 ranges: what it costs the plugin and the store, next to one range.

Usage: python3 bench/large_config.py [--quick] [--exe PATH]

The config is issue 18's probe: host-local's dialect, one range set of 8,000 /24s (a
234 KB config). It once wrote a 923 MB store in 7.2 s holding the store's lock (every
gateway of every range reserved, each row repeating the whole pool key), and validating
16,000 ranges took 48 s. Its peer is the same network with one /24, measured side by side
in interleaved rounds (large, small, small, large, ...) on stores of their own, by the
installed `cnipam`, each call a fresh process as a runtime makes it:
* ADD and DEL, wall time per call (interpreter start included, as a runtime sees it);
* the store file's size after the ADD (every lease on a fresh store: the schema and the
  rows one ADD wrote), and after the DEL (what the pool leaves behind).
The SQLite file is checkpointed when each plugin process closes it, so its size is what
the calls wrote. Runnable alone, and by bench/run.py, which puts its rows in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from report import Row, Target, results_section
from timing import Sample, ratio
from tooling import in_temp_folder

RANGES = 8000
FULL_ROUNDS, QUICK_ROUNDS = 10, 3
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/b"}


def config(ranges: int) -> bytes:
    sets = [[{"subnet": f"10.{i // 256}.{i % 256}.0/24"} for i in range(ranges)]]
    return json.dumps({"cniVersion": "1.0.0", "name": "bench", "ipam": {"type": "cnipam", "ranges": sets}}).encode()


def call(exe: str, command: str, stdin: bytes, db: Path, container: str) -> float:
    """One plugin call's wall time in seconds; a failed call ends the run."""
    env = {**ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "IPAM_DB_PATH": str(db), "CNIPAM_AGENT": "off"}
    started = time.perf_counter()
    done = subprocess.run([exe], input=stdin, env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stdout[:300]!r} {done.stderr[:300]!r}")
    return took


def store_bytes(db: Path) -> int:
    return sum(os.path.getsize(path) for path in (db, Path(f"{db}-wal")) if path.exists())


def measure(exe: str, rounds: int, folder: Path) -> list[Row]:
    inputs = {"large": config(RANGES), "small": config(1)}
    adds = {name: Sample(name) for name in inputs}
    dels = {name: Sample(name) for name in inputs}
    after_add = {name: Sample(name) for name in inputs}
    after_del = {name: Sample(name) for name in inputs}
    for number in range(rounds):
        order = list(inputs) if number % 2 == 0 else list(inputs)[::-1]
        for name in order:
            db = folder / f"{name}-{number}.db"
            add = call(exe, "ADD", inputs[name], db, f"c{number}")
            size = store_bytes(db)
            delete = call(exe, "DEL", inputs[name], db, f"c{number}")
            left = store_bytes(db)
            for sample, value in ((adds, add), (dels, delete), (after_add, size), (after_del, left)):
                sample[name].values.append(value)
                sample[name].round_medians.append(value)
        print(f"large config: round {number + 1}/{rounds}", file=sys.stderr, flush=True)
    size = len(inputs["large"])
    rows = []
    for what, samples in (("ADD", adds), ("DEL", dels)):
        large, small = samples["large"].median * 1e3, samples["small"].median * 1e3
        per_range = (large - small) * 1e3 / (RANGES - 1)
        before = "; was 7.2 s, holding the store's lock" if what == "ADD" else ""
        rows.append(
            Row(
                f"L. {what} with {RANGES:,} ranges ({size // 1000} KB config)",
                f"{large:.1f} ms",
                f"the same {what} with 1 range: {small:.1f} ms",
                ratio(samples["large"], samples["small"]),
                None,
                f"{per_range:.1f} µs per range more, reading and checking the config{before}",
            )
        )
    for what, samples, note in (
        ("store after the ADD", after_add, "was 923 MB"),
        ("store after the DEL", after_del, "rows of the pool left: none (the round-robin position stays)"),
    ):
        large, small = samples["large"].median / 1024, samples["small"].median / 1024
        rows.append(
            Row(
                f"L. {what}, {RANGES:,} ranges",
                f"{large:.0f} KiB",
                f"1 range: {small:.0f} KiB",
                ratio(samples["large"], samples["small"]),
                Target("<=", 1.5),
                note,
            )
        )
    return rows


def section(rows: Sequence[Row], rounds: int) -> str:
    method = (
        f"`bench/large_config.py`: issue 18's config, one range set of {RANGES:,} /24s in host-local's dialect, "
        f"against the same network with one /24; {rounds} rounds, interleaved, each on fresh SQLite stores: one "
        "`cnipam` process per ADD and per DEL (wall time, interpreter start included), and the store file's size "
        "after each (the file is checkpointed when the process closes it)."
    )
    return results_section("One config of 8,000 ranges", method, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of {FULL_ROUNDS}")
    parser.add_argument("--exe", default=os.path.join(sysconfig.get_path("scripts"), "cnipam"), help="the plugin")
    args = parser.parse_args(argv)
    rounds = QUICK_ROUNDS if args.quick else FULL_ROUNDS
    rows = in_temp_folder("cnipam-bench-config-", lambda folder: measure(args.exe, rounds, folder))
    print(section(rows, rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
