"""The first call after a reboot, against a normal call: what the reboot repair costs.

Usage: python3 bench/reboot.py [--quick] [--leases N] [--exe PATH] [--etcd]

Runnable alone, and by bench/run.py (section R of docs/benchmarks.md, with --etcd when
etcd is installed).

Two stores of N leases each (default 50,000) in one IPv4 /8, written in bulk: in one the
leases were made in an earlier boot, in the other in the current one. Each timed ADD is
a fresh plugin process (as a runtime runs it, `CNIPAM_AGENT=off`):
* "first call after a reboot": an ADD on the first store with a boot id no call used
  before, so each such ADD is the first of its boot: it finds the repair due and makes
  its step of it (core/reboot.py);
* "normal call": an ADD on the second store in its own boot (nothing to repair).
Rounds interleave the two (each round runs both, in alternating order), so the ratio
is drift-free. `--etcd` runs the same on a private etcd (started and stopped here),
with N/10 leases by default, since filling etcd is slow.

A second figure is the cost of reading the boot id (cnipam/boot_id.py, done by every
call) against the whole ADD process, both measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from report import Row, results_table
from timing import Sample, interleaved, ratio
from tooling import in_temp_folder

SUBNET = "10.0.0.0/8"
BASE = (10 << 24) + 2
RUNS, ROUNDS = 10, 6
QUICK_RUNS, QUICK_ROUNDS = 3, 2


def installed(name: str) -> str:
    return os.path.join(sysconfig.get_path("scripts"), name)


def populate(python: str, store: dict[str, str], leases: int, boot: str) -> None:
    """`leases` CNI leases of `boot` in bulk, through the store's import (a child process
    of the venv that has cnipam)."""
    code = f"""
import json, sys
from cnipam.core.leases import LEASE, Cursor, Lease
from cnipam.store.opening import open_store
from cnipam.store.settings import StoreSettings
settings = StoreSettings.from_env({json.dumps(store)})
s = open_store(settings)
leases = (
    Lease(4, {BASE} + i, LEASE, "{SUBNET}", "4", f"cni:net/p{{i}}/eth0", "net", f"p{{i}}", "eth0", 0.0, "{boot}", "/x")
    for i in range({leases})
)
s.import_leases(leases, {{"{SUBNET}": Cursor(4, {BASE} + {leases} - 1, True)}})
s.close()
"""
    subprocess.run([python, "-c", code], check=True)


def add_once(exe: str, store: dict[str, str], container: str, boot: str) -> float:
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/run/netns/x", "CNIPAM_AGENT": "off", "CNIPAM_BOOT_ID": boot, **store}  # fmt: skip
    config = json.dumps(
        {"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "cnipam", "ipv4-subnet": SUBNET}}
    ).encode()
    started = time.perf_counter()
    done = subprocess.run([exe], input=config, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ADD failed: {done.stdout.decode()[:300]}")
    return elapsed


def ms(sample: Sample) -> str:
    return f"{sample.median * 1000:.1f} ms"


def measure(
    exe: str,
    python: str,
    stores: tuple[dict[str, str], dict[str, str]],
    leases: int,
    rounds: int,
    runs: int,
    label: str,
) -> tuple[list[Row], Sample]:
    """The rows, and the normal ADD's sample (the denominator of the boot id figure)."""
    rebooted, steady = stores
    populate(python, rebooted, leases, "boot-before")
    populate(python, steady, leases, "boot-now")
    samples = interleaved(
        {
            "first": lambda n: add_once(
                exe, rebooted, f"first{n}", f"boot-{n}"
            ),  # a boot no call used before: its first call
            "normal": lambda n: add_once(exe, steady, f"normal{n}", "boot-now"),
        },
        rounds,
        runs,
    )
    first, normal = samples["first"], samples["normal"]
    return [
        Row(
            f"R. first ADD after a reboot, {label}",
            f"{leases:,} leases of an earlier boot: {ms(first)}",
            f"{leases:,} leases of this boot, normal ADD: {ms(normal)}",
            ratio(first, normal),
            note="each first ADD makes one step of the repair "
            "(core/reboot.py REPAIR_CHUNK; etcd: ADD_STEP, in the ADD's own Txn)",
        )
    ], normal


def boot_id_cost(python: str, normal: Sample) -> list[Row]:
    """Reading the boot id, as every call does (import and read, in a process of its own,
    each timed inside it) against one whole normal ADD process of the rounds above."""
    code = (
        "import time, cnipam; t = time.perf_counter(); from cnipam.boot_id import current_boot; current_boot({}); "
        "print(time.perf_counter() - t)"
    )
    reads = Sample("boot id")
    for _ in normal.round_medians:
        got = [
            float(subprocess.run([python, "-c", code], capture_output=True, check=True, text=True).stdout)
            for _ in range(5)
        ]
        reads.values += got
        reads.round_medians.append(statistics.median(got))
    return [
        Row(
            "R. reading the boot id",
            f"import and read: {reads.median * 1e6:.0f} µs",
            f"a normal ADD process: {ms(normal)}",
            ratio(reads, normal),
            note="every call reads /proc/sys/kernel/random/boot_id (cnipam/boot_id.py)",
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds")
    parser.add_argument("--leases", type=int, default=50_000, help="leases in each store (default 50,000)")
    parser.add_argument("--exe", default=installed("cnipam"), help="the cnipam plugin (default: next to this Python)")
    parser.add_argument("--etcd", action="store_true", help="also on a private etcd (etcd-server must be installed)")
    args = parser.parse_args(argv)
    rounds, runs = (QUICK_ROUNDS, QUICK_RUNS) if args.quick else (ROUNDS, RUNS)
    python = sys.executable

    def work(folder: Path) -> list[Row]:
        stores = ({"IPAM_DB_PATH": str(folder / "rebooted.db")}, {"IPAM_DB_PATH": str(folder / "steady.db")})
        rows, normal = measure(args.exe, python, stores, args.leases, rounds, runs, "SQLite")
        rows += boot_id_cost(python, normal)
        if args.etcd:
            from cnipam.testing.etcd_server import EtcdServer  # a private etcd, standard library only

            with EtcdServer("bench-reboot") as server:

                def etcd(name: str) -> dict[str, str]:
                    selector = {"type": "etcd", "endpoints": [server.endpoint], "prefix": f"/{name}/", "host": "node"}
                    return {"CNIPAM_STORE": json.dumps({**selector, "lockDir": str(folder / name)})}

                stores = (etcd("rebooted"), etcd("steady"))
                rows += measure(
                    args.exe, python, (stores[0], stores[1]), max(args.leases // 10, 100), rounds, runs, "etcd"
                )[0]
        return rows

    rows = in_temp_folder("cnipam-reboot-bench-", work)
    print(section(rows, args.leases, rounds, runs))
    return 0


def section(rows: Sequence[Row], leases: int, rounds: int, runs: int) -> str:
    return "\n".join(
        [
            "## R. The first call after a reboot",
            "",
            f"`bench/reboot.py`: {rounds} rounds x {runs} fresh `cnipam` ADD processes per row, interleaved. "
            f"The first ADD after a reboot runs on a store holding {leases:,} leases of an earlier boot "
            "(SQLite; etcd a tenth of that), each with a boot id no call used before, so each is the first of "
            "its boot and makes one step of the repair (core/reboot.py); the normal ADD runs on a store holding "
            "as many leases of its own boot. Releasing all 50,000 in the first call, as a first version did, "
            "took 0.56 s (35x a normal ADD).",
            "",
            results_table(rows),
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
