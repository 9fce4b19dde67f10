"""What a metrics scrape costs: `Store.usage` (the pool gauges) on an SQLite store of
10,000 to 1,000,000 leases, against one ADD on the same store, and the longest the scrape
holds the store (one query: a writer of the daemon waits at most that long).

Usage: python3 bench/metrics_scrape.py [--quick]   (an interpreter with cnipam installed,
e.g. .venv/bin/python). Prints the Markdown section docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from populate import _cnipam_import

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import SQLiteStore

SUBNET = "10.0.0.0/8"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)


def timed(action: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(folder: Path, leases: int) -> tuple[float, float, float]:
    """(median scrape, longest single query of a scrape, median ADD+DEL), in seconds."""
    db = folder / f"store-{leases}.db"
    _cnipam_import(str(db), "bench", SUBNET, leases)
    store = SQLiteStore(str(db), timeout=60)
    pools = parse_ecs({"ipv4-subnet": SUBNET}).pools
    longest = [0.0]
    plain_read = store._read

    def read_timed(query: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return plain_read(query)
        finally:
            longest[0] = max(longest[0], time.perf_counter() - started)

    def add_del() -> None:
        owner = Owner.for_request(None, "bench", "timed", "eth0")
        store.allocate(owner, pools)
        store.release(owner.handle)

    try:
        usages = store.usage()
        assert sum(usage.used for usage in usages) == leases
        store._read = read_timed  # type: ignore[method-assign]
        scrape = timed(store.usage, 5)
        store._read = plain_read  # type: ignore[method-assign]
        write = timed(add_del, 200)
    finally:
        store.close()
    return scrape, longest[0], write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 100,000 leases")
    args = parser.parse_args()
    print("| leases | scrape (Store.usage) | longest hold | ADD+DEL | scrape / ADD+DEL |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for leases in QUICK_SIZES if args.quick else SIZES:
            scrape, longest, write = measure(Path(folder), leases)
            print(
                f"| {leases:,} | {scrape * 1000:.1f} ms | {longest * 1000:.1f} ms | {write * 1000:.2f} ms "
                f"| {scrape / write:.0f}x |"
            )


if __name__ == "__main__":
    main()
