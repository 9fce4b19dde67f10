"""The contention campaign: 64 plugin processes in flight at every moment, doing mixed
ADD / DEL / CHECK on one store for a fixed time, and what must hold afterwards.

Why: a runtime starting a burst of pods runs one plugin process per attachment, all at
once; the store's lock and (on etcd) its compare-and-swap are what keeps two of them
from handing out one address. This drives the *installed* `cnipam` executable the way a
runtime does (environment + stdin, a fresh process per call) from 64 threads, each
keeping one call running at all times, and checks while it runs that no address is
handed to an owner while another owner holds it, and after it that the store holds
exactly what the successful calls say (`cnipamctl leases`) and passes `cnipamctl check`.

The CI test (tests/campaigns/test_contention_campaign.py) runs this for a few seconds; the full
campaign is the same code from the command line:

    python campaigns/contention.py --seconds 60 --store sqlite
    python campaigns/contention.py --seconds 60 --store etcd --hosts 4

Documented errors are the only ones tolerated: code 11 (the store stayed locked, or
etcd stayed unreachable or contended, past IPAM_DB_CONNECTION_TIMEOUT: try again). An
ADD or DEL answered 11 on etcd may or may not have been committed (the answer can be
lost after the commit), so its owner is "unknown" until its next DEL, which is
idempotent. On SQLite an 11 comes before anything is written.

With --agent a `cnipamd` serves the same store: each call goes through it or directly
at random, naming the store under a random spelling (absolute, relative, a `dir/../dir`
detour, a host-local dataDir) with a random timeout; the agent is SIGKILLed and started
again every few seconds (a call it was answering gets code 11 from its plugin, "may or
may not have been applied": its owner is unknown, as on etcd), and a cnipamctl reader
runs all along (leases, check, usage), after each of which the agent must hold no
deleted -wal or -shm (issue 19).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from campaign import etcd_endpoint, executable

from cnipam.testing.agent_process import (
    PATH_SPELLINGS,
    SPELLINGS,
    AgentProcess,
    Route,
    deleted_store_files,
    random_route,
    spell,
)

DOCUMENTED = {11: "try again later: the store stayed locked or busy past the timeout"}
LOST = -11  # agent mode: code 11 from a plugin whose agent died with the call (applied or not)
NETWORK = "net1"
SUBNETS = {"ipv4-subnet": "10.70.0.0/22", "ipv6-subnet": "fd70::/64"}
OWNERS_PER_WORKER = 3
CALL_TIMEOUT = 120.0  # a hung call becomes a failure, not a hung campaign
PERCENTILES = (50, 90, 99)
DIRECT_SHARE = 0.4  # agent mode: the calls that run directly
AGENT_LIFE = (0.5, 3.0)  # agent mode: seconds between two SIGKILLs of cnipamd
# agent mode: what cnipamctl reads beside the plugins. Not `check` on etcd: its reads are
# not one revision, so beside live writers it can see a lease before its index entry.
READERS = (["leases", "--json"], ["usage", "--json"], ["check"])


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
    agent: dict[str, int] | None = (
        None  # agent mode: kills, forwarded and direct calls, calls lost with the agent, readers
    )


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


class Owner:
    """One attachment (or ecs id) a worker drives; only its worker touches it, so its
    expected state is known exactly, except after a code 11 on etcd or from a plugin whose
    agent died. `host_local`: its network config is in host-local's dialect (agent mode,
    for the dataDir spellings; an owner keeps its dialect: a lease's slot is named by it)."""

    def __init__(self, worker: int, index: int, host_local: bool = False) -> None:
        self.by_id = worker % 2 == 1  # half ecs-style (ipam.id), half runtime-style
        self.host_local = host_local and not self.by_id and index % 2 == 0
        self.name = f"w{worker}-{index}"
        self.handle = f"id:task-{self.name}" if self.by_id else f"cni:{NETWORK}/ctr-{self.name}/eth0"
        self.state = "free"  # free, held, unknown
        self.result: dict[str, Any] | None = None
        self.addresses: list[str] = []


class Campaign:
    def __init__(
        self, target: Target, seconds: float, workers: int, seed: int, timeout: str, agent: bool = False
    ) -> None:
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
        host_local = agent and target.store == "sqlite"
        self.owners = [
            [Owner(worker, index, host_local) for index in range(OWNERS_PER_WORKER)] for worker in range(workers)
        ]
        self.agent = (
            AgentProcess(executable("cnipamd"), target.folder / "run" / "cnipamd.sock", target.folder)
            if agent
            else None
        )
        self.agent_kills: list[tuple[float, float]] = []  # (signal sent, process reaped), monotonic
        self.tally: dict[str, int] = {}  # agent mode: forwarded, direct, lost with the agent, readers

    def config(
        self, worker: int, owner: Owner, prev: dict[str, Any] | None = None, route: Route | None = None
    ) -> dict[str, Any]:
        """The owner's dialect: ecs, or host-local's on the same subnets with the route's dataDir."""
        if owner.host_local:
            ipam: dict[str, Any] = {
                "type": "cnipam",
                "ranges": [[{"subnet": SUBNETS["ipv4-subnet"]}], [{"subnet": SUBNETS["ipv6-subnet"]}]],
            }
            if route is not None and route.data_dir is not None:
                ipam["dataDir"] = route.data_dir
        else:
            ipam = {"type": "cnipam", **SUBNETS}
        if owner.by_id:
            ipam["id"] = f"task-{owner.name}"
        store = self.target.store_object(worker)
        if store is not None:
            ipam["store"] = store
        config: dict[str, Any] = {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}
        if prev is not None:
            config["prevResult"] = prev
        return config

    def route(self, rng: random.Random, owner: Owner) -> Route | None:
        """Agent mode: through the agent or directly, a spelling of the store (a dataDir
        needs host-local's dialect; on etcd the config names the store), a timeout."""
        if self.agent is None:
            return None
        spellings = ("absolute",) if self.target.store == "etcd" else SPELLINGS if owner.host_local else PATH_SPELLINGS
        timeouts = (self.timeout, None, "4s", "6s")
        route: Route = random_route(
            rng, self.target.db, self.target.folder, [self.agent.socket], timeouts, DIRECT_SHARE, spellings
        )
        self.count("forwarded" if route.forwarded else "direct")
        return route

    def count(self, what: str) -> None:
        with self.lock:
            self.tally[what] = self.tally.get(what, 0) + 1

    def lost_with_its_agent(self, route: Route | None, out: Any, started: float, ended: float) -> bool:
        """Code 11 from a forwarding plugin whose agent died with the call: applied or not.
        Only a SIGKILL of the agent explains it; without one it is a defect of the agent."""
        if route is None or not route.forwarded or not isinstance(out, dict) or out.get("code") != 11:
            return False
        if not str(out.get("msg", "")).startswith("cnipamd:"):
            return False
        with self.lock:
            killed = any(started <= reaped and sent <= ended for sent, reaped in self.agent_kills)
        if not killed:
            self.note_unexpected(f"cnipamd lost a call although nobody killed it: {out}")
        self.count("lost with the agent")
        return True

    def env(self, command: str, owner: Owner, route: Route | None = None) -> dict[str, str]:
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
        return env if route is None else route.apply(env)

    def invoke(
        self, verb: str, worker: int, owner: Owner, prev: dict[str, Any] | None = None, route: Route | None = None
    ) -> tuple[Any, int | None]:
        body = json.dumps(self.config(worker, owner, prev, route)).encode()
        started = time.monotonic()
        proc = subprocess.run(
            [self.exe], input=body, env=self.env(verb, owner, route), capture_output=True, timeout=CALL_TIMEOUT,
            check=False, cwd=self.target.folder,
        )  # fmt: skip
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
        if self.lost_with_its_agent(route, out, started, started + elapsed):
            return out, LOST
        return out, code

    def note_unexpected(self, message: str) -> None:
        with self.lock:
            self.unexpected.append(message)

    def step(self, worker: int, rng: random.Random) -> None:
        owner = rng.choice(self.owners[worker])
        route = self.route(rng, owner)
        if owner.state == "unknown":
            self.delete(worker, owner, route)
        elif owner.state == "free":
            self.add(worker, owner, route)
        else:
            pick = rng.random()
            if pick < 0.4:
                self.check(worker, owner, route)
            elif pick < 0.8 or owner.by_id:  # an id's second ADD is refused by design (code 100)
                self.delete(worker, owner, route)
            else:
                self.add(worker, owner, route)  # a repeated ADD for an attachment returns its lease

    def add(self, worker: int, owner: Owner, route: Route | None = None) -> None:
        out, code = self.invoke("ADD", worker, owner, None, route)
        if code is not None:
            maybe_applied = code == LOST or (code in DOCUMENTED and self.target.store == "etcd")
            if owner.state == "free" and maybe_applied:
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

    def delete(self, worker: int, owner: Owner, route: Route | None = None) -> None:
        with self.lock:
            self.releasing.add(owner.handle)
        _, code = self.invoke("DEL", worker, owner, None, route)
        with self.lock:
            for address in owner.addresses:
                if self.holder.get(address) == owner.handle:
                    del self.holder[address]
            self.releasing.discard(owner.handle)
        owner.result, owner.addresses = None, []
        owner.state = "free" if code is None else "unknown"

    def check(self, worker: int, owner: Owner, route: Route | None = None) -> None:
        self.invoke("CHECK", worker, owner, owner.result, route)

    def run_worker(self, worker: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        try:
            while time.monotonic() < deadline:
                self.step(worker, rng)
        except Exception as error:  # a campaign bug or a hung call: reported, not swallowed
            self.note_unexpected(f"worker {worker}: {type(error).__name__}: {error}")

    def run(self) -> Outcome:
        if self.agent is not None:
            self.agent.start()
        try:
            started = time.monotonic()
            deadline = started + self.seconds
            threads = []
            if self.agent is not None:  # started first: behind 64 workers' forks, a loaded machine could start
                # the killer too late for even one kill before the deadline (a 5 s CI run saw none)
                threads += [
                    threading.Thread(target=self.guarded, args=(job, deadline))
                    for job in (self.kill_agent, self.read_store)
                ]
            threads += [
                threading.Thread(target=self.run_worker, args=(worker, deadline)) for worker in range(self.workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.monotonic() - started
            if self.agent is not None:
                self.no_deleted_store_files("the campaign")
                if self.agent.stop() != 0:
                    self.violations.append(f"cnipamd did not stop cleanly: {self.agent.log_path.read_text()[-1000:]}")
        finally:
            if self.agent is not None and self.agent.alive():
                self.agent.kill()
        leases = self.verify_store()
        check = subprocess.run(
            [executable("cnipamctl"), *self.target.ctl_args(), "check"], capture_output=True, check=False
        )
        if check.returncode != 0:
            self.violations.append(f"cnipamctl check failed: {check.stdout.decode()} {check.stderr.decode()}")
        agent = None if self.agent is None else {"kills": len(self.agent_kills), **self.tally}
        return Outcome(self.calls, self.violations, self.unexpected, leases, check.returncode == 0, wall, agent)

    def guarded(self, job: Callable[[float], None], deadline: float) -> None:
        try:
            job(deadline)
        except Exception as error:  # a campaign bug or a hung call: reported, not swallowed
            self.note_unexpected(f"{job.__name__}: {type(error).__name__}: {error}")

    def kill_agent(self, deadline: float) -> None:
        """SIGKILL cnipamd every few seconds and start it again at once (until it listens,
        calls find its stale socket and run directly)."""
        assert self.agent is not None
        rng = random.Random(self.seed + 1)
        while time.monotonic() + AGENT_LIFE[1] < deadline:
            time.sleep(rng.uniform(*AGENT_LIFE))
            with self.lock:  # before the signal: a call it cuts may end before kill() has reaped the agent
                self.agent_kills.append((time.monotonic(), float("inf")))
            self.agent.kill()
            with self.lock:
                self.agent_kills[-1] = (self.agent_kills[-1][0], time.monotonic())  # a call it cut overlaps this span
            self.agent.start()

    def read_store(self, deadline: float) -> None:
        """A cnipamctl reader all along: a direct process that opens the store and closes
        it, the very thing that deleted a WAL cnipamd still wrote into (issue 19)."""
        rng = random.Random(self.seed + 2)
        while time.monotonic() < deadline:
            command = rng.choice(READERS if self.target.store == "sqlite" else READERS[:2])
            where = self.target.ctl_args()
            if self.target.store != "etcd":
                where = ["--db", spell(self.target.db, self.target.folder, rng.choice(PATH_SPELLINGS))[0]]
            done = subprocess.run(
                [executable("cnipamctl"), *where, *command],
                capture_output=True,
                text=True,
                cwd=self.target.folder,
                timeout=CALL_TIMEOUT,
            )
            self.count("cnipamctl readers")
            if done.returncode != 0 or (command[0] == "check" and done.stdout != "ok\n"):
                self.violations.append(
                    f"cnipamctl {' '.join(command)} beside the plugins: "
                    f"exit {done.returncode}: {done.stdout}{done.stderr}"
                )
            elif command[0] == "leases":
                ips = [row["ip"] for row in json.loads(done.stdout)]
                if len(ips) != len(set(ips)):
                    self.violations.append(f"cnipamctl leases listed an address twice: {sorted(ips)}")
            self.no_deleted_store_files(f"cnipamctl {' '.join(command)}")
            time.sleep(rng.uniform(0.0, 0.3))

    def no_deleted_store_files(self, after: str) -> None:
        if self.agent is not None and self.agent.alive() and self.target.store != "etcd":
            deleted = deleted_store_files(self.agent.pid)
            if deleted:
                with self.lock:
                    self.violations.append(f"cnipamd holds deleted store files after {after}: {deleted}")

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
    if outcome.agent is not None:
        where += f" with cnipamd (SIGKILLed {outcome.agent['kills']} times)"
    codes = sorted({call.code for call in outcome.calls if call.code is not None})
    summary = [
        f"**{where}**: {workers} concurrent plugin processes for {seconds:g} s ({outcome.wall:.1f} s wall), "
        f"{len(outcome.calls)} calls ({len(outcome.calls) / outcome.wall:.1f}/s), {outcome.leases} leases at the end; "
        f"duplicates/violations: {len(outcome.violations)}, undocumented errors: {len(outcome.unexpected)}, "
        f"error codes seen: {codes or 'none'}, `cnipamctl check`: {'ok' if outcome.check_ok else 'FAILED'}.",
        *([f"Agent mode: {json.dumps(outcome.agent, sort_keys=True)}."] if outcome.agent is not None else []),
        "",
        *lines,
    ]
    return "\n".join(summary)


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
    parser.add_argument(
        "--agent", action="store_true", help="a cnipamd beside the plugins, SIGKILLed every few seconds"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cnipam-contention-") as folder:
        if args.store == "etcd":
            with etcd_endpoint(args.etcd, "contention") as endpoint:
                prefix = f"/cnipam-contention/{os.getpid()}-{time.time_ns()}/"
                target = Target("etcd", Path(folder) / "unused.db", endpoint, prefix, args.hosts, Path(folder))
                outcome = Campaign(target, args.seconds, args.workers, args.seed, args.timeout, args.agent).run()
        else:
            db = (
                Path(folder) / "store" / ("cnipam.db" if args.agent else "ipam.db")
            )  # cnipam.db: a dataDir names it too
            target = Target("sqlite", db, folder=Path(folder))
            outcome = Campaign(target, args.seconds, args.workers, args.seed, args.timeout, args.agent).run()
    if args.json:
        report = {
            "latency": latency_table(outcome.calls),
            "violations": outcome.violations,
            "unexpected": outcome.unexpected,
        }
        print(json.dumps({**report, "agent": outcome.agent}))
    else:
        print(markdown(target, outcome, args.workers, args.seconds))
        for problem in outcome.violations + outcome.unexpected:
            print(f"- {problem}")
    return 1 if outcome.violations or outcome.unexpected or not outcome.check_ok else 0


if __name__ == "__main__":
    sys.exit(main())
