"""The etcd engine against the embedded one, side by side, as ratios.

Usage: python3 bench/etcd_cluster.py [--quick]

Starts a private etcd (Debian's etcd-server) on loopback with its data on tmpfs, and
measures, rounds interleaved so the shared machine's drift hits every side alike:
* one ADD process (the installed `cnipam`, a fresh interpreter per call as a runtime
  runs it) on etcd against the same ADD on SQLite: target at most 1.5x;
* the same ADD in a pool already holding 100,000 leases against an empty pool, on
  etcd: target at most 1.2x;
* 4 hosts x 4 parallel workers allocating from one /16 (long-lived processes, so this
  is the store's cost, not interpreter start-up) against 16 workers on one SQLite file,
  and the Txns each allocation had to compute again from fresh reads because another
  writer got there first (target: near zero, at most 0.05 per allocation, with block
  affinity). A long-lived process's first attempt starts from what it knew, and a
  sibling worker of the same host makes that stale; those cheap misses are not counted.
Runnable alone, and by bench/run.py, which puts its rows in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import RunningAgent
from report import Row, Target, results_section
from timing import Ratio, Sample, ratio
from tooling import in_temp_folder

from cnipam.testing.etcd_server import EtcdCluster, EtcdServer, enable_auth, etcd_binary, gateway_post

SUBNET = "10.66.0.0/15"
HOSTS, WORKERS_PER_HOST = 4, 4


@dataclass(frozen=True)
class EtcdPlan:
    rounds: int
    add_runs: int  # timed ADDs per bench per round
    allocations: int  # per worker in the throughput figure
    populated: int  # leases already in the pool of figure E2


FULL = EtcdPlan(rounds=6, add_runs=15, allocations=150, populated=100_000)
QUICK = EtcdPlan(rounds=2, add_runs=4, allocations=30, populated=5_000)


def launcher_argv(launcher: str) -> list[str]:
    first = Path(launcher).read_bytes().split(b"\n", 1)[0].decode()
    return first[2:].split()


def config(store: dict[str, object] | None) -> bytes:
    ipam: dict[str, object] = {"type": "cnipam", "ipv4-subnet": SUBNET}
    if store is not None:
        ipam["store"] = store
    return json.dumps({"cniVersion": "1.0.0", "name": "bench", "ipam": ipam}).encode()


class PluginBench:
    """ADD then an untimed DEL of one container, so every timed ADD sees the same store."""

    def __init__(self, name: str, exe: str, stdin: bytes, env: dict[str, str]) -> None:
        self.name, self.exe, self.stdin = name, exe, stdin
        self.env = {
            "PATH": "/usr/bin:/bin",
            "CNI_CONTAINERID": "bench",
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/x",
            "CNIPAM_AGENT": "off",
            **env,
        }

    def once(self) -> float:
        started = time.perf_counter()
        added = subprocess.run(
            [self.exe], input=self.stdin, env={**self.env, "CNI_COMMAND": "ADD"}, capture_output=True
        )
        elapsed = time.perf_counter() - started
        if added.returncode != 0:
            raise RuntimeError(f"{self.name}: ADD failed: {added.stdout.decode(errors='replace')}")
        subprocess.run(
            [self.exe], input=self.stdin, env={**self.env, "CNI_COMMAND": "DEL"}, capture_output=True, check=True
        )
        return elapsed


class CommandBench:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name, self.argv = name, argv

    def once(self) -> float:
        started = time.perf_counter()
        subprocess.run(self.argv, check=True)
        return time.perf_counter() - started


def interleave(
    benches: Sequence[PluginBench | CommandBench], plan: EtcdPlan, progress: Callable[[str], None]
) -> dict[str, Sample]:
    samples = {bench.name: Sample(bench.name) for bench in benches}
    for round_number in range(plan.rounds):
        for bench in benches:
            times = [bench.once() for _ in range(plan.add_runs)]
            samples[bench.name].values.extend(times)
            samples[bench.name].round_medians.append(statistics.median(times))
        progress(f"  round {round_number + 1}/{plan.rounds}")
    return samples


def populate(endpoint: str, prefix: str, count: int) -> None:
    """`count` leases in SUBNET through the engine's own import (the migration path)."""
    from cnipam.core.addresses import parse_cidr
    from cnipam.core.ecs_config import parse_ecs
    from cnipam.core.leases import LEASE, Lease
    from cnipam.store.opening import open_etcd
    from cnipam.store.settings import EtcdSettings

    spec = parse_ecs({"ipv4-subnet": SUBNET}).pools[0]
    first = parse_cidr(SUBNET, "subnet")[1].value + 2
    now = time.time()
    leases = [
        Lease(4, first + n, LEASE, spec.key, spec.slot, f"cni:bench/fill-{n}/eth0", "bench", f"fill-{n}", "eth0", now)
        for n in range(count)
    ]
    store = open_etcd(EtcdSettings((endpoint,), prefix, "bench-host", lock_dir=None), 60.0)
    try:
        store.import_leases(leases, {})
    finally:
        store.close()


def allocate_worker(settings: tuple[str, str, str, str | None], count: int, out: multiprocessing.Queue[object]) -> None:
    from cnipam.core.ecs_config import parse_ecs
    from cnipam.core.leases import Owner
    from cnipam.store.etcd import EtcdStore
    from cnipam.store.opening import open_etcd
    from cnipam.store.settings import EtcdSettings
    from cnipam.store.sqlite import SQLiteStore

    engine, where, host, lock_dir = settings
    pools = parse_ecs({"ipv4-subnet": "10.67.0.0/16"}).pools
    store = (
        SQLiteStore(where, 60.0)
        if engine == "sqlite"
        else open_etcd(EtcdSettings((where,), "/throughput/", host, lock_dir=lock_dir), 60.0)
    )
    latencies = []
    for n in range(count):
        started = time.perf_counter()
        store.allocate(Owner.for_request(None, "bench", f"{host}-{os.getpid()}-{n}", "eth0"), pools)
        latencies.append(time.perf_counter() - started)
    out.put(
        {"latencies": latencies, "retries": store.retries if isinstance(store, EtcdStore) else 0}
    )  # cold recomputes only
    store.close()


def throughput(engine: str, where: str, folder: Path, plan: EtcdPlan) -> tuple[float, float, list[float]]:
    """Allocations per second of HOSTS x WORKERS_PER_HOST processes started together,
    retries per allocation, and every allocation's latency."""
    queue: multiprocessing.Queue[object] = multiprocessing.Queue()
    workers = []
    for host in range(HOSTS):
        for _ in range(WORKERS_PER_HOST):
            settings = (engine, where, f"host-{host}", str(folder / f"lock-{host}"))
            workers.append(multiprocessing.Process(target=allocate_worker, args=(settings, plan.allocations, queue)))
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    reports = [queue.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    latencies = [value for report in reports for value in report["latencies"]]  # type: ignore[index]
    retries = sum(report["retries"] for report in reports)  # type: ignore[index]
    return len(latencies) / elapsed, retries / len(latencies), latencies


def measure_etcd(plan: EtcdPlan, folder: Path, scripts: Path, progress: Callable[[str], None] = print) -> list[Row]:
    """`scripts`: the folder holding the installed `cnipam` and `cnipamd`."""
    exe = str(scripts / "cnipam")
    floor = CommandBench("bare interpreter", [*launcher_argv(exe), "-c", "pass"])
    with EtcdServer("bench") as server, _Stopping(RunningAgent(scripts / "cnipamd", folder / "agent")) as agent:
        endpoint = server.endpoint

        def etcd_store(prefix: str) -> dict[str, object]:
            return {
                "type": "etcd",
                "endpoints": [endpoint],
                "prefix": prefix,
                "host": "bench-host",
                "lockDir": str(folder / "lock"),
            }

        progress(f"etcd bench: populating {plan.populated:,} leases")
        populate(endpoint, "/populated/", plan.populated)
        sqlite = PluginBench("ADD on SQLite", exe, config(None), {"IPAM_DB_PATH": str(folder / "ipam.db")})
        etcd = PluginBench("ADD on etcd", exe, config(etcd_store("/empty/")), {})
        full = PluginBench(f"ADD on etcd, {plan.populated:,} leases", exe, config(etcd_store("/populated/")), {})
        via = PluginBench(
            "ADD on etcd via cnipamd",
            exe,
            config(etcd_store("/agent/")),
            {"CNIPAM_AGENT": "on", "CNIPAM_AGENT_SOCKET": str(agent.socket)},
        )
        progress("etcd bench: single ADD")
        before = agent.calls()
        samples = interleave([floor, sqlite, etcd, full, via], plan, progress)
        if agent.calls() == before:
            raise RuntimeError("cnipamd answered no call: the forward path was not taken")
        progress("etcd bench: 4 hosts x 4 workers")
        etcd_rate, etcd_retries, etcd_latencies = throughput("etcd", endpoint, folder, plan)
        sqlite_rate, _, sqlite_latencies = throughput("sqlite", str(folder / "throughput.db"), folder, plan)
    rate = Sample("etcd", [etcd_rate], [etcd_rate])
    sqlite_sample = Sample("sqlite", [sqlite_rate], [sqlite_rate])

    def ms(values: list[float], q: int) -> str:
        return f"{statistics.quantiles(values, n=100)[q - 1] * 1000:.1f} ms"

    return [
        Row("E1", "one ADD process on etcd", "the same ADD on SQLite", ratio(samples[etcd.name], samples[sqlite.name]),
            Target("<=", 1.5),
            f"medians {samples[etcd.name].median * 1000:.1f} vs {samples[sqlite.name].median * 1000:.1f} ms; "
            f"bare interpreter {samples[floor.name].median * 1000:.1f} ms"),
        Row("E1b", "one ADD on etcd through cnipamd", "bare interpreter", ratio(samples[via.name], samples[floor.name]),
            Target("<=", 1.3), f"median {samples[via.name].median * 1000:.1f} ms"),
        Row("E2", f"ADD on etcd with {plan.populated:,} leases in the pool", "ADD on etcd, empty pool",
            ratio(samples[full.name], samples[etcd.name]), Target("<=", 1.2),
            f"median {samples[full.name].median * 1000:.1f} ms"),
        Row("E3", f"{HOSTS} hosts x {WORKERS_PER_HOST} workers on etcd: allocations/s",
            f"{HOSTS * WORKERS_PER_HOST} workers on one SQLite file", ratio(rate, sqlite_sample), None,
            f"{etcd_rate:,.0f} vs {sqlite_rate:,.0f}/s; p50/p99 {ms(etcd_latencies, 50)}/{ms(etcd_latencies, 99)} vs "
            f"{ms(sqlite_latencies, 50)}/{ms(sqlite_latencies, 99)}; {plan.allocations} allocations per worker"),
        Row("E4", "Txns computed again per allocation (4 x 4 on etcd)", "allocations", _single(etcd_retries),
            Target("<=", 0.05), f"{etcd_retries:.4f}"),
    ]  # fmt: skip


AUTH_PASSWORD = "bench-Pa55word"


def measure_auth(plan: EtcdPlan, folder: Path, scripts: Path, progress: Callable[[str], None] = print) -> list[Row]:
    """What a password costs a fresh plugin process on a three-member cluster (etcd checks
    it with bcrypt and puts the token through raft), and what the host's shared token
    (store/etcd_token.py) leaves of that cost. Auth is turned off and on again between the
    benches of every round, so all three are measured on the same cluster, interleaved."""
    exe = str(scripts / "cnipam")
    secret = folder / "etcd-password"
    secret.write_text(AUTH_PASSWORD)
    secret.chmod(0o600)
    with EtcdCluster(3, "auth") as cluster:
        endpoint = cluster.endpoints[0]

        def store(lock_dir: str | None, user: bool = True) -> dict[str, object]:
            credentials = {"username": "root", "passwordFile": str(secret)} if user else {}
            return {
                "type": "etcd", "endpoints": cluster.endpoints, "prefix": "/auth/", "host": "bench-host",
                "lockDir": lock_dir, **credentials, "allowInsecure": True,  # loopback: nothing crosses a network
            }  # fmt: skip

        plain = PluginBench("ADD, no auth", exe, config(store(str(folder / "lock-plain"), user=False)), {})
        every = PluginBench("ADD, password checked by every process", exe, config(store(None)), {})
        reused = PluginBench("ADD, the host's token reused", exe, config(store(str(folder / "lock-auth"))), {})
        enable_auth(endpoint, AUTH_PASSWORD)
        gateway_post(endpoint, "/v3/auth/disable", {}, _root_token(endpoint))
        samples = {bench.name: Sample(bench.name) for bench in (plain, every, reused)}
        progress("etcd bench: auth on 3 members")
        for round_number in range(plan.rounds):
            for bench in (plain, every, reused):
                times = [bench.once() for _ in range(plan.add_runs)]
                samples[bench.name].values.extend(times)
                samples[bench.name].round_medians.append(statistics.median(times))
                if bench is plain:
                    gateway_post(endpoint, "/v3/auth/enable", {})
            gateway_post(endpoint, "/v3/auth/disable", {}, _root_token(endpoint))
            progress(f"  round {round_number + 1}/{plan.rounds}")
    cost = (samples[every.name].median - samples[plain.name].median) * 1000
    return [
        Row("E5", "one ADD with a password, 3 members, every process checked", "the same ADD without auth",
            ratio(samples[every.name], samples[plain.name]), None,
            f"medians {samples[every.name].median * 1000:.1f} vs {samples[plain.name].median * 1000:.1f} ms: "
            f"{cost:.0f} ms per process"),
        Row("E6", "one ADD with a password, 3 members, the host's token reused", "the same ADD without auth",
            ratio(samples[reused.name], samples[plain.name]), Target("<=", 1.1),
            f"median {samples[reused.name].median * 1000:.1f} ms"),
    ]  # fmt: skip


def _root_token(endpoint: str) -> str:
    return str(gateway_post(endpoint, "/v3/auth/authenticate", {"name": "root", "password": AUTH_PASSWORD})["token"])


class _Stopping:
    def __init__(self, agent: RunningAgent) -> None:
        self.agent = agent

    def __enter__(self) -> RunningAgent:
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()


def _single(value: float) -> Ratio:
    return Ratio(value, value, value, value)


def section(rows: Sequence[Row], plan: EtcdPlan) -> str:
    method = (
        f"`bench/etcd_cluster.py`: a private etcd 3.4 on loopback (data on tmpfs), sharing the 2 cores with the "
        f"benchmark. E1-E2: {plan.rounds} rounds x {plan.add_runs} fresh `cnipam` processes per row, interleaved, "
        "each an ADD of one IPv4 address (then an untimed DEL). E3-E4: long-lived worker processes started "
        f"together, {plan.allocations} allocations each from one /16, each host with its own identity and lock. "
        f"E5-E6: a three-member cluster, {plan.rounds} rounds x {plan.add_runs} ADD processes per row, auth "
        "turned off for the first row of each round and on for the other two; a password in a passwordFile."
    )
    return results_section("etcd cluster engine", method, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--auth", action="store_true", help="only what a password costs (E5, E6)")
    args = parser.parse_args(argv)
    if etcd_binary() is None:
        raise SystemExit("bench: etcd is not installed (Debian: apt-get install etcd-server)")
    plan = QUICK if args.quick else FULL
    scripts = Path(sysconfig.get_path("scripts"))

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def measure(folder: Path) -> list[Row]:
        auth = measure_auth(plan, folder, scripts, progress)
        return auth if args.auth else [*measure_etcd(plan, folder, scripts, progress), *auth]

    rows = in_temp_folder("cnipam-etcd-bench-", measure)
    print(section(rows, plan))  # alone on stdout: bench/run.py reads it from there
    return 0


if __name__ == "__main__":
    sys.exit(main())
