"""What the address history costs a write: an ADD (with its DEL) that records its
history against the same ADD that records none, side by side; the cost of pruning, at
the retention's bound against below it; and the bytes a record takes.

Usage: python3 bench/history.py [--quick] [--etcd]   (an interpreter with cnipam
installed, e.g. .venv/bin/python). Prints the Markdown section docs/observability.md
quotes.

Two views of one ADD and the DEL that frees its address again:

* the plugin as a runtime runs it, a process per call (SQLite): the installed plugin's
  interpreter and flags running `cnipam.plugin.main` on a store file, the
  interpreter's start included: what a container's start waits for;
* `cnipam.plugin.run`, the function the plugin and cnipamd run, on a store held open as
  cnipamd holds it: parse, allocation, transaction and result, without the
  interpreter's start, so its ratio is the largest any caller can see (cnipamd's own
  work per call, before its socket and the forwarding plugin's start).

"Without history" is the same engine with its history switched off in that process
(SQLite: no rows written or pruned; etcd: no records, no log read or written), so the
two differ by the history alone. Rounds interleave the two, alternating which goes
first, and the ratio is median over median (per-round ratios beside it). On SQLite the
judged figure is CPU time (user and system: the processes' own, or this process's for
`run`), the wall time printed beside it: all the history's work is in the caller, and
on a shared machine other work moves the wall time of one call (its fsync above all)
by more than the history costs. On etcd the server works elsewhere, so wall time.

The store holds 10,000 leases and 50,000 history records (etcd: 5,000). "At the bound"
sets the retention to exactly the records held, so every write prunes as many as it adds;
"below the bound" prunes nothing. Both engines delete at most PRUNE_BATCH more per
write than they add, so no single write carries a large delete: the slowest call of
each series is printed too. Last, the bound's cost in room: SQLite's bytes per record
and a `cnipamctl history` query's scan at the default 100,000 records; etcd's bytes per
record (key and value, before etcd's own revisions, which its compaction bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from report import Row, Target, results_table
from timing import Sample, interleaved, ratio
from tooling import in_temp_folder

from cnipam.core.history import DEFAULT_RETENTION, IMPORTED, HistoryRecord, Retention
from cnipam.core.leases import LEASE, Lease
from cnipam.plugin import run
from cnipam.store.base import Store
from cnipam.store.etcd import EtcdStore
from cnipam.store.etcd_change import Change
from cnipam.store.etcd_history import HistoryLog
from cnipam.store.sqlite import SQLiteStore

SUBNET = "10.0.0.0/8"
BASE = (10 << 24) + 2
LEASES, RECORDS = 10_000, 50_000
ROUNDS, RUNS = 8, 150
QUICK_ROUNDS, QUICK_RUNS = 3, 40
CONFIG = json.dumps(
    {"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "ecs-ipam", "ipv4-subnet": SUBNET}}
).encode()


class SQLiteWithoutHistory(SQLiteStore):
    def _record(self, lease: Lease, event: str, at: float) -> None:
        pass


class ChangeWithoutHistory(Change):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log, self.retention = HistoryLog(), (DEFAULT_RETENTION, 0)  # nothing to read: no history

    def commit(self) -> int | None:
        self.history.clear()
        return super().commit()


class EtcdWithoutHistory(EtcdStore):
    def _change(self, warm: Change | None = None) -> Change:
        return ChangeWithoutHistory(self.client, self.keys, warm, self.clock(), self.block_idle, self.liveness)


def fill(store: Store, records: int) -> None:
    """LEASES leases, and `records` history records of addresses beyond them."""
    leases = [
        Lease(4, BASE + i, LEASE, SUBNET, "4", f"cni:net/p{i}/eth0", "net", f"p{i}", "eth0", time.time())
        for i in range(LEASES)
    ]
    now = time.time()
    history = [
        HistoryRecord(now - records + i, IMPORTED, 4, BASE + LEASES + 10 + i, SUBNET, "net", f"cni:net/h{i}/eth0",
                      f"h{i}", "eth0", "/run/netns/x", "bench", "", now - records)
        for i in range(records)
    ]  # fmt: skip
    store.import_leases(leases, {}, history)


@contextmanager
def held(store: Store) -> Iterator[Store]:
    yield store


class BothClocks:
    """Each call's CPU time goes to interleaved(), its wall time is kept here by name, as
    Samples of the same rounds: the CPU time is what the history costs the caller, which
    other work on a shared machine moves less than the wall time."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.walls: dict[str, list[float]] = {}

    def timed(self, name: str, work: Callable[[], object], cpu: Callable[[], float]) -> float:
        started, spent = time.perf_counter(), cpu()
        work()
        self.walls.setdefault(name, []).append(time.perf_counter() - started)
        return cpu() - spent

    def wall(self, name: str) -> Sample:
        values, runs = self.walls[name], self.runs
        return Sample(name, values, [statistics.median(values[at : at + runs]) for at in range(0, len(values), runs)])


def add_del(store: Store, n: int) -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"b{n}", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x",
           "IPAM_DB_PATH": "unused", "CNIPAM_BOOT_ID": "bench"}  # fmt: skip
    text, status = run(env, CONFIG, "/", lambda _settings: held(store))
    if status:
        raise RuntimeError(text)
    text, status = run({**env, "CNI_COMMAND": "DEL"}, CONFIG, "/", lambda _settings: held(store))
    if status:
        raise RuntimeError(text)


def ms(sample: Sample) -> str:
    return f"{sample.median * 1000:.2f} ms (slowest {max(sample.values) * 1000:.1f} ms)"


def compare(label: str, stores: dict[str, Store], rounds: int, runs: int, by_cpu: bool) -> list[Row]:
    """Rows for one engine: with history / without, and at the bound / below it. `by_cpu`:
    judged by this process's CPU time, the wall time beside it (SQLite: all the work is
    here); else by the wall time (etcd: the server's work is elsewhere)."""
    bound = stores["at the bound"]
    bound.set_history_retention(Retention(max_records=len(bound.history())))
    clocks = BothClocks(runs)

    def call(name: str, store: Store, n: int) -> float:
        return clocks.timed(name, lambda: add_del(store, n), time.process_time)

    cpu = interleaved({name: partial(call, name, store) for name, store in stores.items()}, rounds, runs)
    wall = {name: clocks.wall(name) for name in stores}
    judged, clock = (cpu, " (CPU)") if by_cpu else (wall, "")
    kept = len(bound.history())
    rows = [
        Row(
            f"H. ADD+DEL with history, `run`, {label}{clock}",
            f"recording both: {ms(judged['with history'])}",
            f"recording nothing: {ms(judged['without history'])}",
            ratio(judged["with history"], judged["without history"]),
            Target("<=", 1.05),
            note="plugin.run on a store held open, as cnipamd runs it (a plugin process adds its start)",
        ),
    ]
    if by_cpu:
        rows.append(
            Row(
                f"H. ADD+DEL with history, `run`, {label} (wall)",
                f"recording both: {ms(wall['with history'])}",
                f"recording nothing: {ms(wall['without history'])}",
                ratio(wall["with history"], wall["without history"]),
                note="the same calls' wall time, fsync included, which other work on the machine moves",
            )
        )
    rows.append(
        Row(
            f"H. ADD+DEL at the retention's bound, `run`, {label}{clock}",
            f"pruning as many as it adds: {ms(judged['at the bound'])}",
            f"below the bound: {ms(judged['with history'])}",
            ratio(judged["at the bound"], judged["with history"]),
            note=f"{kept:,} records kept at the end of {len(judged['at the bound'].values):,} calls",
        )
    )
    return rows


# One process's ADD or DEL, as the installed plugin runs it: its interpreter and flags,
# cnipam found where the plugin finds it; "without" switches the history off first.
PROCESS = """import sys
sys.path[:0] = {paths!r}
if sys.argv[1] == "without":
    from cnipam.store.sqlite import SQLiteStore
    SQLiteStore._record = lambda *args: None
from cnipam.plugin import main
sys.exit(main([]))
"""


def process_rows(folder: Path, rounds: int, runs: int) -> list[Row]:
    from plugins import launcher_interpreter

    import cnipam

    script = folder / "plugin-call.py"
    script.write_text(PROCESS.format(paths=[str(Path(cnipam.__file__).parent.parent)]))
    interpreter = launcher_interpreter(Path(sys.executable).parent / "cnipam")

    clocks = BothClocks(runs)

    def children() -> float:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        return used.ru_utime + used.ru_stime

    def call(variant: str, n: int) -> float:
        """The CPU time (user and system) of the two processes; their wall time beside it."""
        env = {"CNI_CONTAINERID": f"p{n}", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x", "CNI_PATH": "/",
               "IPAM_DB_PATH": str(folder / f"process-{variant}.db"), "CNIPAM_AGENT": "off",
               "CNIPAM_BOOT_ID": "bench", "PATH": os.environ.get("PATH", "")}  # fmt: skip

        def both() -> None:
            for command in ("ADD", "DEL"):
                done = subprocess.run(
                    [*interpreter, str(script), variant], input=CONFIG, env={**env, "CNI_COMMAND": command},
                    capture_output=True, check=False,
                )  # fmt: skip
                if done.returncode:
                    raise RuntimeError(done.stdout.decode() + done.stderr.decode())

        return clocks.timed(variant, both, children)

    for variant in ("with", "without"):
        store = SQLiteStore(str(folder / f"process-{variant}.db"), timeout=30)
        fill(store, RECORDS)
        store.close()
    cpu = interleaved({"with": partial(call, "with"), "without": partial(call, "without")}, rounds, runs)
    wall = {variant: clocks.wall(variant) for variant in ("with", "without")}
    return [
        Row(
            "H. ADD+DEL with history, the plugin's processes, SQLite (CPU)",
            f"recording both: {ms(cpu['with'])}",
            f"recording nothing: {ms(cpu['without'])}",
            ratio(cpu["with"], cpu["without"]),
            Target("<=", 1.05),
            note="user+system time of two plugin processes (ADD, DEL) as a runtime starts them, start included",
        ),
        Row(
            "H. ADD+DEL with history, the plugin's processes, SQLite (wall)",
            f"recording both: {ms(wall['with'])}",
            f"recording nothing: {ms(wall['without'])}",
            ratio(wall["with"], wall["without"]),
            note="the same calls' wall time, which other work on the machine moves more than the history does",
        ),
    ]


def room(folder: Path) -> tuple[float, float, float]:
    """SQLite's file growth per history record and the time of one address's query, at
    the default 100,000 records; etcd's bytes per record (key and value)."""
    from cnipam.core.history import DEFAULT_MAX_RECORDS, record_of
    from cnipam.core.tenancy import Subject
    from cnipam.store.etcd_history import encode_record
    from cnipam.store.etcd_keys import Keys

    sizes = []
    for records in (0, DEFAULT_MAX_RECORDS):
        path = folder / f"size-{records}.db"
        store = SQLiteStore(str(path))
        fill(store, records)
        sizes.append(os.path.getsize(path))
        if records:
            subject = Subject(address=(4, BASE + LEASES + 10 + records // 2))
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                store.history(subject)
                timings.append(time.perf_counter() - started)
            query = statistics.median(timings)
        store.close()
    lease = Lease(4, BASE, LEASE, SUBNET, "4", "cni:net/" + "c" * 64 + "/eth0", "net", "c" * 64, "eth0", time.time())
    record = record_of(lease, IMPORTED, time.time(), "node-1")
    key = Keys(b"/cnipam/", "node-1").history("node-1", 123456)
    return (sizes[1] - sizes[0]) / DEFAULT_MAX_RECORDS, query, len(key) + len(encode_record(record))


def sqlite_rows(folder: Path, rounds: int, runs: int) -> list[Row]:
    stores: dict[str, Store] = {}
    sqlite_kinds: tuple[tuple[str, type[SQLiteStore]], ...] = (
        ("with history", SQLiteStore), ("without history", SQLiteWithoutHistory), ("at the bound", SQLiteStore),
    )  # fmt: skip
    for name, kind in sqlite_kinds:
        store: Store = kind(str(folder / f"{name.replace(' ', '-')}.db"), timeout=30)
        fill(store, RECORDS)
        stores[name] = store
    try:
        return compare("SQLite", stores, rounds, runs, by_cpu=True)
    finally:
        for store in stores.values():
            store.close()


def etcd_rows(folder: Path, rounds: int, runs: int) -> list[Row]:
    from cnipam.store.etcdv3 import EtcdClient
    from cnipam.testing.etcd_server import EtcdServer

    with EtcdServer("bench-history") as server:
        stores: dict[str, Store] = {}
        etcd_kinds: tuple[tuple[str, type[EtcdStore]], ...] = (
            ("with history", EtcdStore), ("without history", EtcdWithoutHistory), ("at the bound", EtcdStore),
        )  # fmt: skip
        for name, kind in etcd_kinds:
            prefix = "/" + name.replace(" ", "-") + "/"
            client = EtcdClient((server.endpoint,), 30.0)
            store: Store = kind(client, prefix, "bench", 30.0, str(folder / f"{prefix.strip('/')}.lock"))
            fill(store, RECORDS // 10)  # etcd fills slowly: 5,000 records
            stores[name] = store
        try:
            return compare("etcd", stores, rounds, max(runs // 3, 10), by_cpu=False)
        finally:
            for store in stores.values():
                store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--etcd", action="store_true", help="also on a private etcd (etcd-server must be installed)")
    args = parser.parse_args()
    rounds, runs = (QUICK_ROUNDS, QUICK_RUNS) if args.quick else (ROUNDS, RUNS)

    def work(folder: Path) -> tuple[list[Row], tuple[float, float, float]]:
        rows = process_rows(folder, rounds, max(runs // 5, 8))
        rows += sqlite_rows(folder, rounds, runs)
        if args.etcd:
            rows += etcd_rows(folder, rounds, runs)
        return rows, room(folder)

    rows, (size, query, etcd_size) = in_temp_folder("cnipam-history-bench-", work)
    print(results_table(rows))
    print()
    print(f"SQLite: {size:.0f} bytes per history record, so the default 100,000 records take "
          f"{size * 100_000 / 1e6:.1f} MB; `cnipamctl history ADDRESS` scans them in {query * 1000:.0f} ms. "
          f"etcd: {etcd_size} bytes per record (key and value, a 64-character container id), "
          f"{etcd_size * 100_000 / 1e6:.0f} MB per host at 100,000 records.")  # fmt: skip


if __name__ == "__main__":
    main()
