"""`cnipamctl leases` on big stores: rows per second into a pipe, table against `--json`.

Usage: python3 bench/ctl_listing.py [--quick] [--ctl PATH] [--sizes 20000,1000000]

Issue 20 measured the table at 9.1 s for 20,000 leases (0.34 s with `--json`): about
0.45 ms a row, minutes for a million. This lists stores of 20,000 and 1,000,000 leases
(an IPv4 /8, owned as CNI ADDs own them, written with the store's bulk import) with the
installed `cnipamctl`, the table and `--json` in interleaved rounds, each a fresh process
whose stdout is a pipe this script drains (as `| grep` would). Per run: the wall time
(interpreter start and store opening included) and the process's peak RSS (wait4), so a
listing that held every row would show its memory growing with the store. Runnable
alone; its table is what the README's cnipamctl section quotes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from populate import populate_cnipam
from report import Row, Target, results_section
from timing import Sample, ratio
from tooling import in_temp_folder

FULL_ROUNDS, QUICK_ROUNDS = 5, 2
SIZES = (20_000, 1_000_000)
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def listing(ctl: str, db: Path, *args: str) -> tuple[float, int, int]:
    """One `cnipamctl leases` into a pipe: wall seconds, bytes read, peak RSS in KiB."""
    started = time.perf_counter()
    process = subprocess.Popen([ctl, "--db", str(db), "leases", *args], stdout=subprocess.PIPE, env=ENV)
    assert process.stdout is not None
    read = 0
    while chunk := process.stdout.read(1 << 16):
        read += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    took = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"cnipamctl leases {' '.join(args)} exited {process.returncode}")
    return took, read, usage.ru_maxrss


def measure(ctl: str, venv_python: Path, sizes: Sequence[int], rounds: int, folder: Path) -> list[Row]:
    rows = []
    peaks: dict[int, Sample] = {}  # the table's peak RSS per store size
    for size in sizes:
        db = folder / f"leases-{size}.db"
        populate_cnipam(venv_python, db, "bench", "10.0.0.0/8", size)
        kinds = {"table": (), "json": ("--json",)}
        times = {name: Sample(name) for name in kinds}
        memory = {name: Sample(name) for name in kinds}
        for number in range(rounds):
            for name in list(kinds) if number % 2 == 0 else list(kinds)[::-1]:
                took, _, rss = listing(ctl, db, *kinds[name])
                times[name].values.append(took)
                times[name].round_medians.append(took)
                memory[name].values.append(rss)
                memory[name].round_medians.append(rss)
            print(f"listing {size:,}: round {number + 1}/{rounds}", file=sys.stderr, flush=True)
        rate = {name: size / times[name].median for name in kinds}
        rows.append(
            Row(
                f"C. leases table into a pipe, {size:,} leases",
                f"{times['table'].median:.2f} s ({rate['table']:,.0f} rows/s)",
                f"--json: {times['json'].median:.2f} s ({rate['json']:,.0f} rows/s)",
                ratio(times["table"], times["json"]),
                None,
                f"target ≥ 20,000 rows/s: {'met' if rate['table'] >= 20_000 else 'missed'}"
                f"; peak RSS {memory['table'].median / 1024:.0f} MiB (--json {memory['json'].median / 1024:.0f} MiB)",
            )
        )
        peaks[size] = memory["table"]
    if len(sizes) > 1:
        small, large = peaks[sizes[0]], peaks[sizes[-1]]
        rows.append(
            Row(
                f"C. peak RSS of the table, {sizes[-1]:,} against {sizes[0]:,} leases",
                f"{large.median / 1024:.0f} MiB",
                f"{small.median / 1024:.0f} MiB",
                ratio(large, small),
                Target("<=", 1.2),
                "constant memory: rows are read in pages and written as they come",
            )
        )
    return rows


def section(rows: Sequence[Row], rounds: int) -> str:
    method = (
        "`bench/ctl_listing.py`: stores of 20,000 and 1,000,000 leases in an IPv4 /8 (written with the store's "
        f"bulk import), listed by the installed `cnipamctl leases` into a pipe this script drains; {rounds} rounds, "
        "the table and `--json` interleaved, each a fresh process (interpreter start and store opening included); "
        "peak RSS from wait4."
    )
    return results_section("cnipamctl leases on big stores", method, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of {FULL_ROUNDS}")
    parser.add_argument("--ctl", default=os.path.join(sysconfig.get_path("scripts"), "cnipamctl"), help="cnipamctl")
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES), help="store sizes, comma-separated")
    args = parser.parse_args(argv)
    rounds = QUICK_ROUNDS if args.quick else FULL_ROUNDS
    sizes = [int(size) for size in args.sizes.split(",")]
    venv_python = Path(args.ctl).resolve().parent / "python"
    rows = in_temp_folder("cnipam-bench-ctl-", lambda folder: measure(args.ctl, venv_python, sizes, rounds, folder))
    print(section(rows, rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
