"""Latency under concurrency: p50 and p99 of one ADD and one DEL with 1, 8 and 64 callers
at once, directly and through cnipamd, on SQLite and on etcd, host-local beside them.

Usage: python3 bench/concurrency.py [--quick] [--host-local PATH] [--plot-job FILE]

Run it with the interpreter of the venv cnipam is installed in (bench/run.py does): it
starts a private etcd (Debian's etcd-server, data on tmpfs) through cnipam.testing, a
`cnipamd` from the same venv, and the venv's `cnipam` once per call, as a runtime does.

Each caller is a thread of this process that runs calls one after another: an ADD of a
container of its own, then the DEL of it, each timed from the spawn of its process to its
exit, so every row pays the same cost of spawning it. All callers start together and run
the same number of pairs; with 64 callers on this machine's 2 cores, 64 processes share
them, so the latency shows the queue in front of the CPU as well as the call. Every ADD
must succeed, and no two callers may hold one address at once (checked on the outputs).
Configurations and caller counts are measured in rounds, interleaved, the order reversed
every other round; percentiles are over every call of every round. Nobody else publishes
such figures for an IPAM plugin (their figures are "pods to Running"), so the peer is
host-local, the plugin runtimes ship, measured the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent import RunningAgent
from tooling import in_temp_folder

from cnipam.testing.etcd_server import EtcdServer, etcd_binary

CALLERS = (1, 8, 64)
SUBNET = "10.70.0.0/16"
HOST_LOCAL = Path("/usr/lib/cni/host-local")


@dataclass(frozen=True)
class ConcurrencyPlan:
    rounds: int
    pairs: dict[int, int]  # callers -> ADD+DEL pairs per caller per round


FULL = ConcurrencyPlan(rounds=2, pairs={1: 40, 8: 8, 64: 2})
QUICK = ConcurrencyPlan(rounds=1, pairs={1: 6, 8: 2, 64: 1})
# The direct calls' wait for the SQLite store's lock: 64 callers on a loaded machine queue
# past the default 5 s, and this section measures that wait rather than refusing it.
LOCK_TIMEOUT = "60s"


@dataclass(frozen=True)
class Setup:
    """One configuration: a plugin, its config and environment."""

    label: str
    exe: str
    config: bytes
    env: dict[str, str]


@dataclass
class Timings:
    add: list[float] = field(default_factory=list)
    delete: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)  # per round: wall time of all its calls
    calls: list[int] = field(default_factory=list)
    error: str | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_callers(setup: Setup, callers: int, pairs: int, tag: str) -> tuple[list[float], list[float], float]:
    """`callers` threads, each `pairs` ADD+DEL pairs: (ADD latencies, DEL latencies, elapsed)."""
    adds: list[float] = []
    deletes: list[float] = []
    problems: list[str] = []
    held: dict[str, str] = {}  # address -> container, while its ADD has answered and its DEL has not
    guard = threading.Lock()
    start = threading.Barrier(callers + 1)

    def call(command: str, container: str) -> tuple[float, str]:
        env = {**setup.env, "CNI_COMMAND": command, "CNI_CONTAINERID": container}
        began = time.perf_counter()
        done = subprocess.run([setup.exe], input=setup.config, env=env, capture_output=True, check=False)
        took = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"{setup.label}: {command} exited {done.returncode}: {done.stdout[-300:]!r}")
        return took, done.stdout.decode()

    def caller(number: int) -> None:
        start.wait()
        try:
            for index in range(pairs):
                container = f"{tag}-{number}-{index}"
                took, out = call("ADD", container)
                address = json.loads(out)["ips"][0]["address"]
                with guard:
                    if address in held:
                        problems.append(f"{setup.label}: {address} held by {held[address]} and {container}")
                    held[address] = container
                    adds.append(took)
                with guard:
                    del held[address]
                took, _ = call("DEL", container)
                with guard:
                    deletes.append(took)
        except Exception as exc:  # reported by the caller of run_callers
            with guard:
                problems.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=caller, args=(number,)) for number in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if problems:
        raise RuntimeError(problems[0])
    return adds, deletes, elapsed


def measure(
    setups: Sequence[Setup], plan: ConcurrencyPlan, progress: Callable[[str], None]
) -> dict[tuple[str, int], Timings]:
    results = {(setup.label, callers): Timings() for setup in setups for callers in CALLERS}
    jobs = [(setup, callers) for callers in CALLERS for setup in setups]
    for round_number in range(plan.rounds):
        for setup, callers in jobs if round_number % 2 == 0 else list(reversed(jobs)):
            timings = results[setup.label, callers]
            if timings.error is not None:
                continue
            progress(f"  concurrency round {round_number + 1}/{plan.rounds}: {setup.label}, {callers} callers")
            try:
                adds, deletes, elapsed = run_callers(setup, callers, plan.pairs[callers], f"r{round_number}c{callers}")
            except RuntimeError as exc:
                timings.error = str(exc)[:300]
                progress(f"  !! {timings.error}")
                continue
            timings.add += adds
            timings.delete += deletes
            timings.elapsed.append(elapsed)
            timings.calls.append(len(adds) + len(deletes))
    return results


def setups(
    folder: Path, exe: str, agent_socket: Path, etcd_endpoint: str | None, host_local: Path | None
) -> list[Setup]:
    base = {"PATH": "/usr/bin:/bin", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/bench", "CNI_PATH": "/x"}
    direct = {**base, "CNIPAM_AGENT": "off", "IPAM_DB_CONNECTION_TIMEOUT": LOCK_TIMEOUT}
    through = {**base, "CNIPAM_AGENT_SOCKET": str(agent_socket)}

    def cnipam(store: dict[str, object] | None, name: str) -> bytes:
        ipam: dict[str, object] = {"type": "cnipam", "ipv4-subnet": SUBNET}
        if store is not None:
            ipam["store"] = store
        return json.dumps({"cniVersion": "1.0.0", "name": name, "ipam": ipam}).encode()

    found = []
    if host_local is not None:
        ipam = {"type": "host-local", "subnet": SUBNET, "dataDir": str(folder / "host-local")}
        config = json.dumps({"cniVersion": "1.0.0", "name": "hl", "ipam": ipam}).encode()
        found.append(Setup("host-local", str(host_local), config, base))
    for label, env, name in (("SQLite, direct", direct, "direct"), ("SQLite, cnipamd", through, "agent")):
        found.append(Setup(label, exe, cnipam({"type": "sqlite", "path": str(folder / f"{name}.db")}, name), env))
    if etcd_endpoint is not None:
        for label, env, name in (("etcd, direct", direct, "direct"), ("etcd, cnipamd", through, "agent")):
            store: dict[str, object] = {
                "type": "etcd",
                "endpoints": [etcd_endpoint],
                "prefix": f"/{name}/",
                "lockDir": str(folder / "lock"),
            }
            found.append(Setup(label, exe, cnipam(store, name), env))
    return found


def section(results: dict[tuple[str, int], Timings], plan: ConcurrencyPlan, missing: Sequence[str]) -> str:
    def ms(value: float) -> str:
        return f"{value * 1e3:.1f}"

    lines = [
        "## Latency under concurrency",
        "",
        "`bench/concurrency.py`: N callers at once, each a thread running plugin processes one after another "
        "(an ADD of its own container, then its DEL), every call timed from spawn to exit; "
        f"{plan.rounds} rounds, configurations and caller counts interleaved; "
        + ", ".join(f"{plan.pairs[n]} pairs per caller per round with {n}" for n in CALLERS)
        + ". Percentiles over every call; calls/s is all calls over the wall time of the round (median of the "
        "rounds). Latency with 64 callers includes the wait for one of the 2 cores, and a direct call's the wait "
        f"for the store's lock (its timeout raised to {LOCK_TIMEOUT}). host-local runs directly "
        "(it has no agent); it has no etcd.",
        "",
        "| configuration | callers | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms | calls/s | calls |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (label, callers), timings in results.items():
        if timings.error is not None or not timings.add:
            lines.append(f"| {label} | {callers} | — | — | — | — | — | {timings.error or 'not measured'} |")
            continue
        rate = statistics.median(calls / elapsed for calls, elapsed in zip(timings.calls, timings.elapsed, strict=True))
        lines.append(
            f"| {label} | {callers} | {ms(percentile(timings.add, 0.5))} | {ms(percentile(timings.add, 0.99))} "
            f"| {ms(percentile(timings.delete, 0.5))} | {ms(percentile(timings.delete, 0.99))} | {rate:,.0f} "
            f"| {len(timings.add) + len(timings.delete):,} |"
        )
    lines += [f"* {reason}" for reason in missing]
    return "\n".join(lines) + "\n"


def plot_job(results: dict[tuple[str, int], Timings]) -> dict[str, object]:
    """A bench/plots.py `concurrency` job (without its path): p50 and p99 by callers, per verb."""
    labels = list(dict.fromkeys(label for label, _ in results))
    panels: dict[str, list[dict[str, object]]] = {"ADD": [], "DEL": []}
    for verb in panels:
        for label in labels:
            points = [
                (callers, results[label, callers].add if verb == "ADD" else results[label, callers].delete)
                for callers in CALLERS
                if results[label, callers].error is None and results[label, callers].add
            ]
            if points:
                panels[verb].append(
                    {
                        "label": label,
                        "x": [n for n, _ in points],
                        "p50": [percentile(values, 0.5) * 1e3 for _, values in points],
                        "p99": [percentile(values, 0.99) * 1e3 for _, values in points],
                    }
                )
    return {"plot": "concurrency", "panels": panels}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few calls, for a smoke test")
    parser.add_argument("--host-local", type=Path, default=HOST_LOCAL, help="host-local's executable")
    parser.add_argument("--plot-job", type=Path, help="write the plot's job (bench/plots.py) here as JSON")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    scripts = Path(sysconfig.get_path("scripts"))

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def run(folder: Path) -> str:
        missing = []
        host_local = args.host_local if args.host_local.exists() else None
        if host_local is None:
            missing.append(f"host-local not measured: {args.host_local} is not installed")
        server = EtcdServer("bench-concurrency") if etcd_binary() else None
        if server is None:
            missing.append("etcd not measured: etcd is not installed (Debian: apt-get install etcd-server)")
        agent = None
        try:
            if server is not None:
                server.start()
            agent = RunningAgent(scripts / "cnipamd", folder / "agent")
            endpoint = None if server is None else server.endpoint
            found = setups(folder, str(scripts / "cnipam"), agent.socket, endpoint, host_local)
            results = measure(found, plan, progress)
        finally:
            if agent is not None:
                agent.stop()
            if server is not None:
                server.remove()
        if args.plot_job is not None:
            args.plot_job.write_text(json.dumps(plot_job(results)))
        return section(results, plan, missing)

    print(in_temp_folder("cnipam-concurrency-bench-", run))  # alone on stdout: bench/run.py reads it
    return 0


if __name__ == "__main__":
    sys.exit(main())
