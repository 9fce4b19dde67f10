"""The contention campaign: 64 plugin processes in flight at every moment, doing mixed
ADD / DEL / CHECK on one store for a fixed time, and what must hold afterwards.

Why: a runtime starting a burst of pods runs one plugin process per attachment, all at
once; the store's lock and (on etcd) its compare-and-swap are what keeps two of them
from handing out one address. This drives the *installed* `cnipam` executable the way a
runtime does (environment + stdin, a fresh process per call) from 64 threads, each
keeping one call running at all times, and checks while it runs that no address is
handed to an owner while another owner holds it, and after it that the store holds
exactly what the successful calls say (`cnipamctl leases`) and passes `cnipamctl check`.

The CI test (tests/test_contention_campaign.py) runs this for a few seconds; the full
campaign is the same code from the command line:

    python campaigns/contention.py --seconds 60 --store sqlite
    python campaigns/contention.py --seconds 60 --store etcd --hosts 4

Documented errors are the only ones tolerated: code 11 (the store stayed locked, or
etcd stayed unreachable or contended, past IPAM_DB_CONNECTION_TIMEOUT: try again). An
ADD or DEL answered 11 on etcd may or may not have been committed (the answer can be
lost after the commit), so its owner is "unknown" until its next DEL, which is
idempotent. On SQLite an 11 comes before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

DOCUMENTED = {11: "try again later: the store stayed locked or busy past the timeout"}
NETWORK = "net1"
SUBNETS = {"ipv4-subnet": "10.70.0.0/22", "ipv6-subnet": "fd70::/64"}
OWNERS_PER_WORKER = 3
CALL_TIMEOUT = 120.0  # a hung call becomes a failure, not a hung campaign
PERCENTILES = (50, 90, 99)


class Call(NamedTuple):
    verb: str
    seconds: float
    code: int | None  # the CNI error code, None on success


class Outcome(NamedTuple):
    """What a campaign saw: every call, the violations found, and the end state's checks."""

    calls: list[Call]
    violations: list[str]
    unexpected: list[str]
    leases: int
    check_ok: bool
    wall: float


class Target(NamedTuple):
    """Where the plugin keeps its leases: the environment and config that select it, and
    how cnipamctl reaches the same store."""

    store: str  # "sqlite" or "etcd"
    db: Path
    endpoint: str = ""
    prefix: str = ""
    hosts: int = 1
    folder: Path = Path()

    def store_object(self, worker: int) -> dict[str, Any] | None:
        if self.store != "etcd":
            return None
        host = f"host-{worker % self.hosts}"
        return {
            "type": "etcd",
            "endpoints": [self.endpoint],
            "prefix": self.prefix,
            "host": host,
            "lockDir": str(self.folder / host),
        }

    def ctl_args(self) -> list[str]:
        if self.store == "etcd":
            store = self.store_object(0)
            assert store is not None
            return ["--store", json.dumps({**store, "host": "inspector", "lockDir": str(self.folder / "inspector")})]
        return ["--db", str(self.db)]


def executable(name: str) -> str:
    """The installed executable next to this interpreter (never a PATH shim)."""
    path = os.path.join(sysconfig.get_path("scripts"), name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} is missing: run `pip install .` first")
    return path


class Owner:
    """One attachment (or ecs id) a worker drives; only its worker touches it, so its
    expected state is known exactly, except after a code 11 on etcd."""

    def __init__(self, worker: int, index: int) -> None:
        self.by_id = worker % 2 == 1  # half ecs-style (ipam.id), half runtime-style
        self.name = f"w{worker}-{index}"
        self.handle = f"id:task-{self.name}" if self.by_id else f"cni:{NETWORK}/ctr-{self.name}/eth0"
        self.state = "free"  # free, held, unknown
        self.result: dict[str, Any] | None = None
        self.addresses: list[str] = []


class Campaign:
    def __init__(self, target: Target, seconds: float, workers: int, seed: int, timeout: str) -> None:
        self.target = target
        self.seconds = seconds
        self.workers = workers
        self.seed = seed
        self.timeout = timeout
        self.exe = executable("cnipam")
        self.lock = threading.Lock()
        self.holder: dict[str, str] = {}  # address -> handle, for owners in state held
        self.releasing: set[str] = set()  # handles whose DEL has started
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.unexpected: list[str] = []
        self.owners = [[Owner(worker, index) for index in range(OWNERS_PER_WORKER)] for worker in range(workers)]

    def config(self, worker: int, owner: Owner, prev: dict[str, Any] | None = None) -> dict[str, Any]:
        ipam: dict[str, Any] = {"type": "cnipam", **SUBNETS}
        if owner.by_id:
            ipam["id"] = f"task-{owner.name}"
        store = self.target.store_object(worker)
        if store is not None:
            ipam["store"] = store
        config: dict[str, Any] = {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}
        if prev is not None:
            config["prevResult"] = prev
        return config

    def env(self, command: str, owner: Owner) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "CNI_COMMAND": command,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/campaign",
            "CNI_PATH": "/opt/cni/bin",
            "IPAM_DB_PATH": str(self.target.db),
            "IPAM_DB_CONNECTION_TIMEOUT": self.timeout,
        }
        if not owner.by_id:
            env["CNI_CONTAINERID"] = f"ctr-{owner.name}"
        return env

    def invoke(
        self, verb: str, worker: int, owner: Owner, prev: dict[str, Any] | None = None
    ) -> tuple[Any, int | None]:
        body = json.dumps(self.config(worker, owner, prev)).encode()
        started = time.monotonic()
        proc = subprocess.run(
            [self.exe], input=body, env=self.env(verb, owner), capture_output=True, timeout=CALL_TIMEOUT, check=False
        )
        elapsed = time.monotonic() - started
        text = proc.stdout.decode("utf-8", "replace")
        out: Any = None
        try:
            out = json.loads(text) if text.strip() else None
        except ValueError:
            self.note_unexpected(f"{verb} {owner.handle}: stdout is not JSON: {text[:200]!r}")
        if b"Traceback" in proc.stdout + proc.stderr:
            self.note_unexpected(f"{verb} {owner.handle}: traceback: {proc.stderr.decode('utf-8', 'replace')[-400:]}")
        code = None
        if proc.returncode != 0:
            code = out.get("code", -1) if isinstance(out, dict) else -1
            if code not in DOCUMENTED:
                self.note_unexpected(f"{verb} {owner.handle}: exit {proc.returncode}: {text.strip()[:300]}")
        with self.lock:
            self.calls.append(Call(verb, elapsed, code))
        return out, code

    def note_unexpected(self, message: str) -> None:
        with self.lock:
            self.unexpected.append(message)

    def step(self, worker: int, rng: random.Random) -> None:
        owner = rng.choice(self.owners[worker])
        if owner.state == "unknown":
            self.delete(worker, owner)
        elif owner.state == "free":
            self.add(worker, owner)
        else:
            pick = rng.random()
            if pick < 0.4:
                self.check(worker, owner)
            elif pick < 0.8 or owner.by_id:  # an id's second ADD is refused by design (code 100)
                self.delete(worker, owner)
            else:
                self.add(worker, owner)  # a repeated ADD for an attachment returns its lease

    def add(self, worker: int, owner: Owner) -> None:
        out, code = self.invoke("ADD", worker, owner)
        if code is not None:
            if owner.state == "free" and code in DOCUMENTED and self.target.store == "etcd":
                owner.state = "unknown"  # the commit may have happened before the answer was lost
            return
        addresses = sorted(entry["address"].split("/")[0] for entry in out["ips"])
        with self.lock:
            if owner.state == "held" and addresses != owner.addresses:
                self.violations.append(
                    f"repeated ADD for {owner.handle} returned {addresses}, it held {owner.addresses}"
                )
            for address in addresses:
                other = self.holder.get(address)
                if other is not None and other != owner.handle and other not in self.releasing:
                    self.violations.append(f"{address} handed to {owner.handle} while {other} held it")
                self.holder[address] = owner.handle
        owner.state, owner.result, owner.addresses = "held", out, addresses

    def delete(self, worker: int, owner: Owner) -> None:
        with self.lock:
            self.releasing.add(owner.handle)
        _, code = self.invoke("DEL", worker, owner)
        with self.lock:
            for address in owner.addresses:
                if self.holder.get(address) == owner.handle:
                    del self.holder[address]
            self.releasing.discard(owner.handle)
        owner.result, owner.addresses = None, []
        owner.state = "free" if code is None else "unknown"

    def check(self, worker: int, owner: Owner) -> None:
        self.invoke("CHECK", worker, owner, owner.result)

    def run_worker(self, worker: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        try:
            while time.monotonic() < deadline:
                self.step(worker, rng)
        except Exception as error:  # a campaign bug or a hung call: reported, not swallowed
            self.note_unexpected(f"worker {worker}: {type(error).__name__}: {error}")

    def run(self) -> Outcome:
        started = time.monotonic()
        deadline = started + self.seconds
        threads = [threading.Thread(target=self.run_worker, args=(worker, deadline)) for worker in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        leases = self.verify_store()
        check = subprocess.run(
            [executable("cnipamctl"), *self.target.ctl_args(), "check"], capture_output=True, check=False
        )
        if check.returncode != 0:
            self.violations.append(f"cnipamctl check failed: {check.stdout.decode()} {check.stderr.decode()}")
        return Outcome(self.calls, self.violations, self.unexpected, leases, check.returncode == 0, wall)

    def verify_store(self) -> int:
        """The store holds exactly what the successful calls say, and no address twice."""
        listed = subprocess.run(
            [executable("cnipamctl"), *self.target.ctl_args(), "leases", "--json"],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if listed.returncode != 0:
            self.violations.append(f"cnipamctl leases failed: {listed.stderr.decode()}")
            return 0
        rows = [row for row in json.loads(listed.stdout) if row["kind"] == "lease"]
        seen: dict[str, list[str]] = {}
        for row in rows:
            seen.setdefault(row["handle"], []).append(row["ip"])
        ips = [row["ip"] for row in rows]
        if len(ips) != len(set(ips)):
            self.violations.append("the store lists an address twice")
        for owner in (owner for mine in self.owners for owner in mine):
            held = sorted(seen.pop(owner.handle, []))
            if owner.state == "held" and held != owner.addresses:
                self.violations.append(f"{owner.handle}: its ADD returned {owner.addresses}, the store holds {held}")
            elif owner.state == "free" and held:
                self.violations.append(f"{owner.handle}: released, but the store holds {held}")
            elif owner.state == "unknown" and len(held) not in (0, len(SUBNETS)):
                self.violations.append(f"{owner.handle}: half a lease: {held}")
        if seen:
            self.violations.append(f"leases of owners nobody drove: {sorted(seen)[:5]}")
        return len(rows)


def percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * percent // 100))
    return sorted_values[int(rank) - 1]


def latency_table(calls: list[Call]) -> list[dict[str, Any]]:
    rows = []
    for verb in ("ADD", "DEL", "CHECK"):
        chosen = [call for call in calls if call.verb == verb]
        times = sorted(call.seconds * 1000 for call in chosen)
        row: dict[str, Any] = {
            "verb": verb,
            "calls": len(chosen),
            "code 11": sum(1 for call in chosen if call.code == 11),
        }
        for percent in PERCENTILES:
            row[f"p{percent} ms"] = round(percentile(times, percent), 1)
        row["max ms"] = round(times[-1], 1) if times else 0.0
        rows.append(row)
    return rows


def markdown(target: Target, outcome: Outcome, workers: int, seconds: float) -> str:
    rows = latency_table(outcome.calls)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[key]) for key in head) + " |" for row in rows]
    where = "SQLite (one file)" if target.store == "sqlite" else f"etcd ({target.hosts} simulated hosts)"
    codes = sorted({call.code for call in outcome.calls if call.code is not None})
    summary = [
        f"**{where}**: {workers} concurrent plugin processes for {seconds:g} s ({outcome.wall:.1f} s wall), "
        f"{len(outcome.calls)} calls ({len(outcome.calls) / outcome.wall:.1f}/s), {outcome.leases} leases at the end; "
        f"duplicates/violations: {len(outcome.violations)}, undocumented errors: {len(outcome.unexpected)}, "
        f"error codes seen: {codes or 'none'}, `cnipamctl check`: {'ok' if outcome.check_ok else 'FAILED'}.",
        "",
        *lines,
    ]
    return "\n".join(summary)


@contextmanager
def etcd_for_campaign(endpoint: str | None) -> Iterator[str]:
    """An etcd to run against: the given one, or a private one started here."""
    if endpoint:
        yield endpoint
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from etcd_process import EtcdServer  # type: ignore[import-not-found]  # tests/, put on the path above: the tests' private etcd

    with EtcdServer("contention") as server:
        yield server.endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--store", choices=("sqlite", "etcd"), default="sqlite")
    parser.add_argument("--hosts", type=int, default=4, help="simulated hosts sharing etcd")
    parser.add_argument("--etcd", help="an etcd endpoint to use instead of starting one")
    parser.add_argument(
        "--timeout", default="5s", help="IPAM_DB_CONNECTION_TIMEOUT of every call (default the plugin's 5s)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON instead of Markdown")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cnipam-contention-") as folder:
        if args.store == "etcd":
            with etcd_for_campaign(args.etcd) as endpoint:
                prefix = f"/cnipam-contention/{os.getpid()}-{time.time_ns()}/"
                target = Target("etcd", Path(folder) / "unused.db", endpoint, prefix, args.hosts, Path(folder))
                outcome = Campaign(target, args.seconds, args.workers, args.seed, args.timeout).run()
        else:
            target = Target("sqlite", Path(folder) / "store" / "ipam.db", folder=Path(folder))
            outcome = Campaign(target, args.seconds, args.workers, args.seed, args.timeout).run()
    if args.json:
        print(
            json.dumps(
                {
                    "latency": latency_table(outcome.calls),
                    "violations": outcome.violations,
                    "unexpected": outcome.unexpected,
                }
            )
        )
    else:
        print(markdown(target, outcome, args.workers, args.seconds))
        for problem in outcome.violations + outcome.unexpected:
            print(f"- {problem}")
    return 1 if outcome.violations or outcome.unexpected or not outcome.check_ok else 0


if __name__ == "__main__":
    sys.exit(main())
