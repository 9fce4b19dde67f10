"""cnipam-docker under load: RequestAddress + ReleaseAddress over its UNIX socket.

Usage: python3 bench/docker_driver.py [--quick] [--clients 1,16,64] [--exe PATH]

N client processes each keep one HTTP/1.1 connection open (as dockerd does) and repeat
RequestAddress then ReleaseAddress of the address they got, timing every request. The
driver runs on a real SQLite store in a mkdtemp() folder with its durable settings
(WAL, synchronous=FULL; each reply after the commit of the transaction holding its
change, which requests that arrived meanwhile share: group commit).

Every figure is a ratio against peers measured side by side in the same run, rounds
interleaved (driver, transport floor, driver, ...), because this shared machine drifts:
* the transport floor: the same clients, the same number of requests, against a
  standard-library HTTP server on a UNIX socket that answers `{}` and does nothing
  else. It is the most any Python HTTP server on this socket could do here;
* the single-commit rate: raw SQLite durable commits per second (WAL, synchronous=FULL,
  one small row per transaction, one writer) in the same folder: what one request per
  commit could reach at most; group commit lets several requests share one.

Targets (issue 17): at 16 and 64 clients, throughput at least 0.6x the transport floor's
and p99 at most 2x its p99. Issue 5's absolute targets (>= 1,000 durable requests/s,
p99 < 10 ms) are given in the notes. Runnable alone, and by bench/run.py,
which puts its rows in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from report import Row, Target, results_section
from timing import Sample, ratio
from tooling import in_temp_folder

TARGET_RATE = 1000.0  # durable address requests per second (issue 5)
TARGET_P99_MS = 10.0
MAIN_POOL = "10.80.0.0/16"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class DockerPlan:
    clients: tuple[int, ...]
    cycles: int  # RequestAddress + ReleaseAddress pairs per round, split among the clients
    rounds: int
    commits: int  # raw SQLite commits per round of the disk floor


FULL = DockerPlan(clients=(1, 16, 64), cycles=1000, rounds=5, commits=2000)
QUICK = DockerPlan(clients=(1, 16, 64), cycles=300, rounds=2, commits=600)
TARGETED = (16, 64)  # client counts with issue 17's targets


@dataclass
class Load:
    """One server under one client count: requests/s per round and every latency."""

    name: str
    rates: list[float] = field(default_factory=list)  # per round: requests per second
    latencies: list[float] = field(default_factory=list)  # seconds, every request of every round
    round_p99: list[float] = field(default_factory=list)
    error: str | None = None

    def rate_sample(self) -> Sample:
        return Sample(self.name, list(self.rates), list(self.rates), error=self.error)

    def p99_sample(self) -> Sample:
        return Sample(self.name, list(self.round_p99), list(self.round_p99), error=self.error)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --------------------------------------------------------------------------- servers


def floor_server(path: str) -> None:
    """The transport floor: the standard library's threading HTTP server on a UNIX
    socket, keep-alive, answering `{}` to every POST without looking at it."""
    import socketserver
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"{}\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True
        request_queue_size = 128

        def finish_request(self, request: object, client_address: object) -> None:
            Handler(request, ("unix", 0), self)  # type: ignore[arg-type]

    with Server(path, Handler) as server:
        print("listening", flush=True)
        server.serve_forever(poll_interval=0.2)


class Running:
    """A server process on a UNIX socket; stopped (SIGTERM, then kill) on close."""

    def __init__(self, argv: list[str], socket_path: str, log: Path) -> None:
        self.socket = socket_path
        self.log = log
        with open(log, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=err, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while b"listening" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-400:]}")
            time.sleep(0.02)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- clients


class Connection:
    """A minimal keep-alive HTTP/1.1 client over a UNIX socket: the same cost against
    every server, and small, so the clients take as little CPU from the servers as can be."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buffer = b""

    def post(self, path: str, fields: dict[str, object]) -> tuple[int, bytes]:
        body = json.dumps(fields).encode() + b"\n"
        head = f"POST {path} HTTP/1.1\r\nHost: \r\nContent-Length: {len(body)}\r\n\r\n".encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":")[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
        while len(self.buffer) < length:
            self._fill()
        reply, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, reply

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def client(path: str, pool_id: str, cycles: int, start: float, out: multiprocessing.Queue[object]) -> None:
    """One client: `cycles` RequestAddress + ReleaseAddress pairs; every request timed."""
    try:
        connection = Connection(path)
        latencies: list[float] = []
        while time.time() < start:
            time.sleep(0.0005)
        clock = time.perf_counter
        for _ in range(cycles):
            began = clock()
            status, reply = connection.post(
                "/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": {}}
            )
            middle = clock()
            if status != 200:
                raise RuntimeError(f"RequestAddress: {status} {reply!r}")
            answer = json.loads(reply)
            address = str(answer.get("Address", "10.80.0.1/16")).partition("/")[0]  # the floor answers {}
            status, reply = connection.post("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})
            if status != 200:
                raise RuntimeError(f"ReleaseAddress: {status} {reply!r}")
            latencies += (middle - began, clock() - middle)
        connection.close()
        out.put(latencies)
    except Exception as exc:  # reported by the parent, not a traceback per process
        out.put(f"{type(exc).__name__}: {exc}")


def drive(path: str, pool_id: str, clients: int, cycles: int) -> tuple[float, list[float]]:
    """All clients at once against one server: (requests per second, latencies)."""
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[object] = context.Queue()
    share = [cycles // clients + (1 if i < cycles % clients else 0) for i in range(clients)]
    start = time.time() + 0.3  # every process connected and waiting before the clock starts
    workers = [context.Process(target=client, args=(path, pool_id, n, start, results)) for n in share]
    for worker in workers:
        worker.start()
    collected = [results.get(timeout=300) for _ in workers]
    elapsed = time.time() - start
    for worker in workers:
        worker.join()
    errors = [item for item in collected if isinstance(item, str)]
    if errors:
        raise RuntimeError(errors[0])
    latencies = [value for item in collected if isinstance(item, list) for value in item]
    return len(latencies) / elapsed, latencies


def sqlite_commits(folder: Path, commits: int) -> float:
    """The disk floor: durable SQLite commits per second, one writer, one small row each."""
    path = folder / "floor.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
        began = time.perf_counter()
        for i in range(commits):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 256, os.urandom(16)))
            db.execute("COMMIT")
        return commits / (time.perf_counter() - began)
    finally:
        db.close()


# --------------------------------------------------------------------------- the figure


@dataclass
class Measured:
    """The section's rows and the raw loads behind them (for bench/plots.py)."""

    rows: list[Row]
    loads: dict[tuple[str, int], Load]
    disk: Load

    def plot_job(self, plan: DockerPlan) -> dict[str, object]:
        """A bench/plots.py docker_load job (without its path): requests/s and p99 by client count."""

        def line(label: str, name: str, values: Callable[[Load], list[float]], scale: float) -> dict[str, object]:
            points = [
                (n, [v * scale for v in values(self.loads[name, n])])
                for n in plan.clients
                if values(self.loads[name, n])
            ]
            return {
                "label": label,
                "x": [n for n, _ in points],
                "median": [statistics.median(v) for _, v in points],
                "low": [min(v) for _, v in points],
                "high": [max(v) for _, v in points],
            }

        names = (("cnipam-docker", "cnipam"), ("do-nothing HTTP server", "floor"))
        return {
            "plot": "docker_load",
            "throughput": [line(label, name, lambda load: load.rates, 1.0) for label, name in names],
            "p99": [line(label, name, lambda load: load.round_p99, 1e3) for label, name in names],
            "ceiling": statistics.median(self.disk.rates) if self.disk.rates else None,
            "p99_target": TARGET_P99_MS,
        }


def installed_driver() -> str:
    return os.path.join(sysconfig.get_path("scripts"), "cnipam-docker")


def measure_docker(exe: str, plan: DockerPlan, folder: Path, progress: Callable[[str], None] = print) -> Measured:
    """Start the driver and the transport floor, run every client count; the rows and loads."""
    driver_socket, floor_socket = str(folder / "cnipam.sock"), str(folder / "floor.sock")
    argv = [
        exe,
        "--socket",
        driver_socket,
        "--spec-dir",
        str(folder / "spec"),
        "--db",
        str(folder / "ipam.db"),
        "-v4",
        MAIN_POOL,
    ]
    driver = Running(argv, driver_socket, folder / "driver.log")
    floor = None
    try:
        floor = Running([sys.executable, __file__, "--floor-server", floor_socket], floor_socket, folder / "floor.log")
        setup = Connection(driver_socket)
        status, reply = setup.post(
            "/IpamDriver.RequestPool", {"AddressSpace": "", "Pool": "", "SubPool": "", "Options": {}, "V6": False}
        )
        setup.close()
        if status != 200:
            raise RuntimeError(f"RequestPool: {status} {reply!r}")
        pool_id = str(json.loads(reply)["PoolID"])
        disk = Load("sqlite")
        loads: dict[tuple[str, int], Load] = {}
        for clients in plan.clients:
            for name in ("cnipam", "floor"):
                loads[name, clients] = Load(name)
        for round_number in range(plan.rounds):
            progress(f"  docker round {round_number + 1}/{plan.rounds}")
            disk.rates.append(sqlite_commits(folder, plan.commits))
            for clients in plan.clients:
                for name, path in (("cnipam", driver_socket), ("floor", floor_socket)):
                    load = loads[name, clients]
                    rate, latencies = drive(path, pool_id, clients, plan.cycles)
                    load.rates.append(rate)
                    load.latencies += latencies
                    load.round_p99.append(sorted(latencies)[int(0.99 * len(latencies))])
        return Measured(rows(loads, disk, plan), loads, disk)
    finally:
        if floor is not None:
            floor.close()
        driver.close()
        log = (folder / "driver.log").read_text(errors="replace")
        if '"fatal"' in log:
            progress(f"  driver log: {log[-400:]}")


def rows(loads: dict[tuple[str, int], Load], disk: Load, plan: DockerPlan) -> list[Row]:
    result: list[Row] = []

    def rate(value: float) -> str:
        return f"{value:,.0f} req/s"

    def ms(value: float) -> str:
        return f"{value * 1e3:.2f} ms"

    disk_rate = statistics.median(disk.rates)
    for clients in plan.clients:
        ours, floor = loads["cnipam", clients], loads["floor", clients]
        figure = f"D. {clients} client{'s' if clients > 1 else ''}, RequestAddress+ReleaseAddress"
        ours_rate = statistics.median(ours.rates)
        p50, p99 = ours.percentile(0.5), ours.percentile(0.99)
        verdict = (
            f"issue targets: {'met' if ours_rate >= TARGET_RATE else 'MISSED'} ≥ {TARGET_RATE:,.0f} req/s, "
            f"{'met' if p99 * 1e3 < TARGET_P99_MS else 'MISSED'} p99 < {TARGET_P99_MS:g} ms "
            f"(p50 {ms(p50)}, p99 {ms(p99)}; floor p50 {ms(floor.percentile(0.5))}, p99 {ms(floor.percentile(0.99))})"
        )
        targeted = clients in TARGETED
        result.append(
            Row(
                figure + ", throughput",
                f"cnipam-docker: {rate(ours_rate)}",
                f"do-nothing HTTP server: {rate(statistics.median(floor.rates))}",
                ratio(ours.rate_sample(), floor.rate_sample()),
                Target(">=", 0.6) if targeted else None,
                note=verdict,
            )
        )
        result.append(
            Row(
                figure + ", throughput",
                f"cnipam-docker: {rate(ours_rate)}",
                f"raw SQLite durable commits: {disk_rate:,.0f}/s",
                ratio(ours.rate_sample(), disk.rate_sample()),
                note="one request per commit could reach 1x at most; group commit shares commits",
            )
        )
        result.append(
            Row(
                figure + ", p99 latency",
                f"cnipam-docker: {ms(p99)}",
                f"do-nothing HTTP server: {ms(floor.percentile(0.99))}",
                ratio(ours.p99_sample(), floor.p99_sample()),
                Target("<=", 2.0) if targeted else None,
            )
        )
    return result


def section(result: Sequence[Row], plan: DockerPlan) -> str:
    """The Markdown section of docs/benchmarks.md."""
    method = (
        f"`bench/docker_driver.py`: {plan.cycles:,} RequestAddress + ReleaseAddress pairs per round "
        f"({2 * plan.cycles:,} requests, each answered after the durable commit holding it; requests that "
        "arrive during a commit share the next one), split among "
        f"N client processes with one keep-alive connection each, over the UNIX socket of a running "
        f"`cnipam-docker`; {plan.rounds} rounds, interleaved with the same load against a standard-library "
        "HTTP server that answers `{}` (the transport floor) and with raw durable SQLite commits in the same "
        "folder (the disk floor). Throughput is requests per second (median of the rounds); latency is per "
        "request, over every request of every round. Clients and servers share the machine's cores."
    )
    return results_section("Docker driver", method, result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--clients", help="client counts, comma-separated (default 1,16,64)")
    parser.add_argument(
        "--exe", default=installed_driver(), help="the cnipam-docker executable (default: next to this Python)"
    )
    parser.add_argument("--floor-server", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server:
        floor_server(args.floor_server)
        return 0
    plan = QUICK if args.quick else FULL
    if args.clients:
        plan = DockerPlan(tuple(int(n) for n in args.clients.split(",")), plan.cycles, plan.rounds, plan.commits)
    if not os.access(args.exe, os.X_OK):
        raise SystemExit(f"bench: {args.exe} is not executable; pip install . first, or pass --exe")
    result = in_temp_folder("cnipam-docker-bench-", lambda folder: measure_docker(args.exe, plan, folder))
    print(section(result.rows, plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
