#!/usr/bin/env python3
"""Crash campaign: kill -9 the plugin and the Docker driver at random moments, then prove
nothing was lost, duplicated or half-written.

A CNI plugin can die at any instruction (OOM killer, node shutdown, a runtime's timeout)
and a driver can be killed while dockerd waits on it. The promise is: a printed result or
a 200 answer is durable, an interrupted change is all or nothing, and the store stays
consistent. This file is the one implementation of that proof, in two sizes: the tests
(tests/test_crash.py) run it short in CI, and an operator runs it long:

    python campaigns/crash.py --runs 3000 --engine sqlite     # or etcd, or docker

Plugin campaigns (sqlite, etcd) run waves of concurrent plugin processes (ADD single- and
dual-stack, by id and by attachment; DEL; GC) and SIGKILL about half of them: a third
after a delay drawn from [0, 1.25 x the slowest recent run], the rest near a measured run
time of the same verb (run times are measured on this machine, not assumed), so kills land
in start-up, in the lock queue, inside the store transaction and after the result is
printed. After every wave (no process running) the store is read back and each
operation's outcome is checked against what it may have done; the observed state then
becomes the model for the next wave. The Docker campaign hammers a
real `cnipam-docker` with concurrent RequestPool/RequestAddress/ReleaseAddress clients,
SIGKILLs it at random moments, checks the store while it is down, restarts it on the same
store and continues.

It needs the installed package (`pip install .`): the executables next to this Python.
The etcd campaign starts a private etcd (tests/etcd_process.py) unless --etcd is given.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnipam.core.leases import LEASE
from cnipam.store.base import Store
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from cnipam.store.sqlite import SQLiteStore

SCRIPTS = sysconfig.get_path("scripts")
NETWORK = "crash"
V4, V6 = "10.40.0.0/22", "2001:db8:40::/64"
KILL_SHARE = 0.5  # of the processes of a wave
KILL_SPAN = 1.25  # kill delays are drawn from [0, KILL_SPAN x the slowest calibration run]: some land after exit
WAVE = 12  # concurrent plugin processes
RECENT = 200  # runs the kill delays are calibrated on
LIVE_TARGET = 60  # handles kept alive on average: DEL and GC have something to release
WAIT = 120.0  # seconds any single process may take before the campaign calls it a hang


class CampaignFailure(AssertionError):
    """A broken promise: the message names the operation and what the store holds."""


def executable(name: str) -> str:
    path = os.path.join(SCRIPTS, name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} is missing: run `pip install .` first")
    return path


# -- the plugin campaigns (sqlite, etcd) -------------------------------------------------


@dataclass
class Target:
    """Where the plugin's store lives: the ipam.store object (None: SQLite at db)."""

    db: Path
    store: dict[str, Any] | None = None

    def open(self) -> Store:
        if self.store is None:
            return SQLiteStore(str(self.db), timeout=5.0)
        lock_dir = str(self.db.parent / "inspector-lock")
        return open_etcd(
            EtcdSettings(tuple(self.store["endpoints"]), self.store["prefix"], "inspector", lock_dir=lock_dir), 10.0
        )

    def ctl_args(self) -> list[str]:
        if self.store is None:
            return ["--db", str(self.db)]
        return [
            "--store",
            json.dumps({**self.store, "host": "inspector", "lockDir": str(self.db.parent / "inspector-lock")}),
        ]


@dataclass
class Op:
    kind: str  # ADD, DEL, GC
    handle: str  # ADD/DEL: the owner; GC: ""
    process: subprocess.Popen[bytes]
    out: Path
    families: tuple[int, ...] = ()
    garbage: tuple[str, ...] = ()  # GC: the handles it must release
    kill_at: float | None = None
    killed: bool = False
    started: float = field(default_factory=time.monotonic)


@dataclass
class PluginCampaign:
    exe: str
    target: Target
    workdir: Path
    rng: random.Random
    live: dict[str, frozenset[str]] = field(default_factory=dict)  # handle -> addresses it holds now
    attachment: dict[str, str] = field(default_factory=dict)  # handle -> its container id
    outcomes: Counter[str] = field(default_factory=Counter)
    serial: int = 0
    runs: int = 0
    kills: int = 0
    span: float = 0.0
    durations: dict[str, list[float]] = field(
        default_factory=dict
    )  # calibration: start to exit of recent runs, per verb
    timeout: str = "60s"  # survivors wait out the lock queue: only kills interrupt a run

    def ipam(self, dual: bool) -> dict[str, Any]:
        ipam: dict[str, Any] = {"type": "cnipam", "ipv4-subnet": V4}
        if dual:
            ipam["ipv6-subnet"] = V6
        if self.target.store is not None:
            ipam["store"] = self.target.store
        return ipam

    def env(self, command: str, container: str | None) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "CNI_COMMAND": command,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/crash",
            "CNI_PATH": "/opt/cni/bin",
            "IPAM_DB_PATH": str(self.target.db),
            "IPAM_DB_CONNECTION_TIMEOUT": self.timeout,
        }
        if container:
            env["CNI_CONTAINERID"] = container
        return env

    def start(
        self, kind: str, config: dict[str, Any], container: str | None, tag: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        stdin, out = self.workdir / f"{tag}.in", self.workdir / f"{tag}.out"
        stdin.write_text(json.dumps(config))
        with open(stdin, "rb") as source, open(out, "wb") as sink:
            process = subprocess.Popen(
                [self.exe],
                stdin=source,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env(kind, container),
                cwd=self.workdir,
            )
        self.runs += 1
        return process, out

    def new_add(self) -> Op:
        """A fresh owner: by ipam.id (ecs style) or by attachment, single- or dual-stack.
        Every one records a container, so GC can see it."""
        self.serial += 1
        n, dual, by_id = self.serial, self.rng.random() < 0.5, self.rng.random() < 0.5
        container = f"ctr-{n}"
        ipam = self.ipam(dual)
        handle = f"cni:{NETWORK}/{container}/eth0"
        if by_id:
            ipam["id"] = f"task-{n}"
            handle = f"id:task-{n}"
        self.attachment[handle] = container
        process, out = self.start("ADD", {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}, container, f"add{n}")
        return Op("ADD", handle, process, out, (4, 6) if dual else (4,))

    def new_del(self, handle: str) -> Op:
        ipam = self.ipam(dual=True)
        if handle.startswith("id:"):
            ipam["id"] = handle[3:]
        self.serial += 1
        process, out = self.start(
            "DEL", {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}, self.attachment[handle], f"del{self.serial}"
        )
        return Op("DEL", handle, process, out)

    def new_gc(self, garbage: list[str], keep: list[str]) -> Op:
        """GC as libcni sends it: every attachment still alive (including those being
        added right now) is valid; `garbage` are the ones the runtime forgot."""
        valid = [{"containerID": self.attachment[handle], "ifname": "eth0"} for handle in keep]
        config = {
            "cniVersion": "1.1.0",
            "name": NETWORK,
            "ipam": self.ipam(dual=True),
            "cni.dev/valid-attachments": valid,
        }
        self.serial += 1
        process, out = self.start("GC", config, None, f"gc{self.serial}")
        return Op("GC", "", process, out, garbage=tuple(garbage))

    def launch(self, size: int, kill_share: float) -> list[Op]:
        """Start `size` processes on disjoint owners and schedule kills for some; the kills
        before the last start are sent on the way. A GC, when there is one, starts last, so
        its list of valid attachments includes every ADD of the wave (as a runtime's does)."""
        busy: set[str] = set()
        ops: list[Op] = []
        gc_due = self.rng.random() < 0.4 and len(self.live) > 4
        for index in range(size):
            deleting = self.live and self.rng.random() < len(self.live) / (2 * LIVE_TARGET)
            if gc_due and index == size - 1:
                free = [handle for handle in self.live if handle not in busy]
                garbage = self.rng.sample(free, min(len(free), self.rng.choice((1, 3, 8, 20))))
                in_flight = [op.handle for op in ops if op.kind == "ADD"]
                keep = [handle for handle in self.live if handle not in garbage] + in_flight
                ops.append(self.new_gc(garbage, keep))
            elif deleting and (choices := [handle for handle in self.live if handle not in busy]):
                handle = self.rng.choice(choices)
                busy.add(handle)
                ops.append(self.new_del(handle))
            else:
                ops.append(self.new_add())
            if self.rng.random() < kill_share:
                ops[-1].kill_at = time.monotonic() + self.kill_delay(ops[-1].kind)
            self.kill_due(ops, time.monotonic())
        return ops

    def kill_delay(self, kind: str) -> float:
        """A third of the kills anywhere in [0, span] (start-up, lock queue, after exit);
        the rest near a measured run's end, where the transaction commits and the result
        is printed: that window is a few milliseconds, and uniform kills rarely find it."""
        measured = self.durations.get(kind)
        if not measured or self.rng.random() < 1 / 3:
            return self.rng.uniform(0.0, self.span)
        return self.rng.choice(measured) * self.rng.uniform(0.75, 1.05)

    def wave(self, size: int, kill_share: float) -> list[Op]:
        """One wave: launched, every kill sent at its moment, every process waited for.
        The runs that were not killed feed the calibration, so the kill delays follow the
        machine's load as it changes."""
        ops = self.launch(size, kill_share)
        running = list(ops)
        deadline = time.monotonic() + WAIT
        while running:
            self.kill_due(ops, time.monotonic())
            for op in [op for op in running if op.process.poll() is not None]:
                running.remove(op)
                if op.process.returncode == -signal.SIGKILL:
                    op.killed = True
                    self.kills += 1
                else:
                    self.durations.setdefault(op.kind, []).append(time.monotonic() - op.started)
            if time.monotonic() > deadline:
                raise CampaignFailure(f"a run hangs: {[(op.kind, op.handle) for op in running]}")
            time.sleep(0.0005)
        for measured in self.durations.values():
            del measured[:-RECENT]
        self.span = KILL_SPAN * max((max(measured) for measured in self.durations.values()), default=self.span)
        return ops

    def kill_due(self, ops: list[Op], until: float) -> None:
        """SIGKILL the processes whose moment has come (each is reaped by `wave`, which
        tells a kill that landed from one that came after the exit)."""
        for op in ops:
            if op.kill_at is not None and op.kill_at <= until:
                op.kill_at = None
                op.process.send_signal(signal.SIGKILL)  # a no-op once the process is reaped

    def calibrate(self) -> float:
        """Two kill-free waves of ADDs and DELs: the first creates the store, the second
        measures how long a run takes here (machine, engine, wave size), rather than
        assuming it. Later waves keep the measure current."""
        self.settle(self.wave(WAVE, kill_share=0.0))
        self.durations.clear()
        self.settle(self.wave(WAVE, kill_share=0.0))
        return self.span

    def settle(self, ops: list[Op]) -> None:
        """Read the store back (no process is running) and check each operation's outcome."""
        held = self.observe()
        for op in ops:
            printed = printed_json(op.out)
            code = op.process.returncode
            if not op.killed and code != 0:
                raise CampaignFailure(f"{op.kind} {op.handle} failed without being killed: exit {code}, {printed}")
            if op.kind == "ADD":
                self.settle_add(op, printed, held.get(op.handle, frozenset()))
            elif op.kind == "DEL":
                self.settle_del(op, held.get(op.handle, frozenset()))
            else:
                self.settle_gc(op, held)
        touched = {op.handle for op in ops} | {handle for op in ops for handle in op.garbage}
        for handle, before in self.live.items():
            if handle not in touched and held.get(handle, frozenset()) != before:
                raise CampaignFailure(
                    f"{handle} changed without being asked: held {sorted(before)}, now {sorted(held.get(handle, ()))}"
                )
        strangers = set(held) - set(self.live) - touched
        if strangers:
            raise CampaignFailure(f"leases nobody asked for: {sorted(strangers)}")
        self.live = {handle: ips for handle, ips in held.items() if ips}

    def settle_add(self, op: Op, printed: Any, now: frozenset[str]) -> None:
        result = printed if isinstance(printed, dict) and "ips" in printed else None
        if result is not None:  # printed success, even if killed afterwards: durable
            promised = frozenset(entry["address"].split("/")[0] for entry in result["ips"])
            if now != promised:
                raise CampaignFailure(f"ADD {op.handle} printed {sorted(promised)} but the store holds {sorted(now)}")
            self.outcomes["ADD killed after printing" if op.killed else "ADD succeeded"] += 1
            return
        if not op.killed:
            raise CampaignFailure(f"ADD {op.handle} exited 0 without a result: {printed}")
        families = sorted(6 if ":" in ip else 4 for ip in now)
        if now and families != list(op.families):
            raise CampaignFailure(
                f"interrupted ADD {op.handle} of families {op.families} holds {sorted(now)}: half an ADD"
            )
        self.outcomes["ADD killed after commit, before printing" if now else "ADD killed before commit"] += 1

    def settle_del(self, op: Op, now: frozenset[str]) -> None:
        before = self.live[op.handle]
        if not op.killed:
            if now:
                raise CampaignFailure(f"DEL {op.handle} succeeded but the store still holds {sorted(now)}")
            self.outcomes["DEL succeeded"] += 1
        elif now not in (before, frozenset()):
            raise CampaignFailure(f"interrupted DEL {op.handle} left {sorted(now)} of {sorted(before)}: half a DEL")
        else:
            self.outcomes["DEL killed after commit" if not now else "DEL killed before commit"] += 1

    def settle_gc(self, op: Op, held: dict[str, frozenset[str]]) -> None:
        kept = [handle for handle in op.garbage if held.get(handle)]
        for handle in kept:
            if held[handle] != self.live[handle]:
                raise CampaignFailure(
                    f"GC left {sorted(held[handle])} of {handle}'s {sorted(self.live[handle])}: half an attachment"
                )
        if not op.killed:
            if kept:
                raise CampaignFailure(f"GC succeeded but kept the garbage {kept}")
            self.outcomes["GC succeeded"] += 1
        elif not kept:
            self.outcomes["GC killed after commit"] += 1
        elif len(kept) == len(op.garbage):
            self.outcomes["GC killed before commit"] += 1
        else:
            self.outcomes["GC killed between its transactions"] += 1

    def observe(self) -> dict[str, frozenset[str]]:
        """Every owner's addresses, after the store's own check and the no-duplicate check."""
        store = self.target.open()
        try:
            problems = store.problems()
            if problems:
                raise CampaignFailure(f"store check failed: {problems}")
            leases = store.leases()
        finally:
            store.close()
        seen: Counter[tuple[int, int]] = Counter((lease.family, lease.address) for lease in leases)
        twice = [pair for pair, count in seen.items() if count > 1]
        if twice:
            raise CampaignFailure(f"addresses held twice: {twice}")
        held: dict[str, set[str]] = {}
        for lease in leases:
            if lease.kind == LEASE:
                if lease.handle is None:
                    raise CampaignFailure(f"an anonymous lease appeared: {lease}")
                held.setdefault(lease.handle, set()).add(lease.ip)
        return {handle: frozenset(ips) for handle, ips in held.items()}

    def finish(self) -> None:
        """`cnipamctl check` agrees, and the store still serves at once (no stale lock)."""
        ctl = subprocess.run(
            [executable("cnipamctl"), *self.target.ctl_args(), "check"], capture_output=True, text=True, timeout=WAIT
        )
        if ctl.returncode != 0 or ctl.stdout.strip() != "ok":
            raise CampaignFailure(f"cnipamctl check: exit {ctl.returncode}: {ctl.stdout}{ctl.stderr}")
        self.timeout = "3s"  # a lock left behind by a killed process would make this ADD fail with code 11
        self.settle(self.wave(1, kill_share=0.0))


def printed_json(path: Path) -> Any:
    """What a process printed before it exited or was killed; None when nothing (or a
    truncated write, which a reader sees as no answer)."""
    raw = path.read_bytes()
    if not raw.strip():
        return None
    if b"Traceback" in raw:
        raise CampaignFailure(f"a traceback was printed: {raw.decode('utf-8', 'replace')}")
    try:
        return json.loads(raw)
    except ValueError:
        return None


def run_plugin_campaign(
    exe: str, target: Target, workdir: Path, runs: int, seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    campaign = PluginCampaign(exe, target, workdir, random.Random(seed))
    span = campaign.calibrate()
    measured = sorted(run for runs in campaign.durations.values() for run in runs)
    log(
        f"calibrated on a {WAVE}-process wave: runs took {measured[0] * 1000:.0f}-{measured[-1] * 1000:.0f} ms; "
        f"kill delays in [0, {span * 1000:.0f}] ms"
    )
    waves = 0
    while campaign.runs < runs:
        campaign.settle(campaign.wave(WAVE, KILL_SHARE))
        waves += 1
        if waves % 25 == 0:
            log(f"{campaign.runs} runs, {campaign.kills} kills, {len(campaign.live)} owners hold leases")
    campaign.finish()
    return {
        "runs": campaign.runs,
        "kills": campaign.kills,
        "waves": waves,
        "kill_span_ms": round(span * 1000),
        "calibrated_run_ms": [round(measured[0] * 1000), round(measured[-1] * 1000)],
        "outcomes": campaign.outcomes,
    }


# -- the Docker driver campaign ------------------------------------------------------------


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


class Interrupted(Exception):
    """The driver went away before answering: the request may or may not have happened."""


class DriverProcess:
    """The real `cnipam-docker` on a UNIX socket; started again on the same store after a kill."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = str(folder / "run" / "cnipam.sock")
        self.db = folder / "driver.db"
        self.log_path = folder / "driver.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        command = [
            executable("cnipam-docker"),
            "--socket",
            self.socket,
            "--spec-dir",
            str(self.folder / "spec"),
            "--db",
            str(self.db),
        ]
        command += ["-v4", "10.96.0.0/16", "-v4ab", "26", "-v6", "fd96::/48", "-v6ab", "120"]
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while b'"listening"' not in self.log_path.read_bytes()[seen:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CampaignFailure(f"the driver did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.01)
        self.starts += 1

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        if self.process.wait(WAIT) != 0:
            raise CampaignFailure(f"the driver did not stop cleanly: {self.log_path.read_text()[-2000:]}")

    def call(self, method: str, fields: dict[str, object]) -> tuple[int, dict[str, Any]]:
        connection = UnixConnection(self.socket)
        try:
            connection.request("POST", "/IpamDriver." + method, body=json.dumps(fields).encode())
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, closed mid-answer
            raise Interrupted(str(exc)) from None
        finally:
            connection.close()


@dataclass
class PoolModel:
    """One client's pool: what must hold, and what an interrupted request may have done."""

    id: str
    cidr: str
    held: set[str] = field(default_factory=set)  # got 200 (or seen in the store at a check)
    asked: set[str] = field(default_factory=set)  # RequestAddress of this address interrupted: held or not
    releasing: set[str] = field(default_factory=set)  # ReleaseAddress interrupted: held or not
    unnamed: int = 0  # dynamic RequestAddress interrupted: each may hold an address nobody knows

    def unsure(self) -> set[str]:
        return self.asked | self.releasing


@dataclass
class DockerCampaign:
    driver: DriverProcess
    rng: random.Random
    clients: int
    pools: dict[str, PoolModel] = field(default_factory=dict)
    released_pools: set[str] = field(default_factory=set)
    lost_pool_requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)

    def client(self, number: int, budget: Callable[[], bool], gate: Gate) -> None:
        """One dockerd-like client on pools of its own (so its model is exact), until the budget is spent."""
        rng = random.Random(self.rng.random())
        mine: list[PoolModel] = []
        while budget():
            generation = gate.generation
            with gate.working():
                answered = self.one_request(rng, mine)
            if not answered:  # the driver is down: wait for its restart, as dockerd retries later
                gate.wait_restart(generation)

    def one_request(self, rng: random.Random, mine: list[PoolModel]) -> bool:
        """One request on this client's pools; False when the driver did not answer."""
        roll = rng.random()
        try:
            if not mine or (roll < 0.06 and len(mine) < 3):
                self.request_pool(rng, mine)
            elif roll < 0.09 and len(mine) > 1:
                self.release_pool(mine.pop(rng.randrange(len(mine))))
            else:
                pool = rng.choice(mine)
                if pool.held and (roll < 0.45 or len(pool.held) + pool.unnamed > 40):
                    self.release_address(pool, rng.choice(sorted(pool.held)))
                else:
                    self.request_address(rng, pool)
        except Interrupted:
            return False
        return True

    def timed(self, method: str, fields: dict[str, object]) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        try:
            answer = self.driver.call(method, fields)
        except Interrupted:
            with self.lock:
                self.requests += 1
            raise
        with self.lock:
            self.requests += 1
            self.latencies.append(time.monotonic() - started)
        return answer

    def request_pool(self, rng: random.Random, mine: list[PoolModel]) -> None:
        fields: dict[str, object] = {"AddressSpace": "CnipamLocal", "Pool": "", "Options": {}, "V6": rng.random() < 0.3}
        try:
            status, reply = self.timed("RequestPool", fields)
        except Interrupted:
            with self.lock:
                self.lost_pool_requests += 1
                self.outcomes["RequestPool interrupted"] += 1
            raise
        expect(status == 200, f"RequestPool: {status} {reply}")
        pool = PoolModel(str(reply["PoolID"]), str(reply["Pool"]))
        with self.lock:
            self.pools[pool.id] = pool
            self.outcomes["RequestPool 200"] += 1
        mine.append(pool)

    def release_pool(self, pool: PoolModel) -> None:
        try:
            status, reply = self.timed("ReleasePool", {"PoolID": pool.id})
        except Interrupted:
            with self.lock:
                self.outcomes["ReleasePool interrupted"] += 1
                self.pools.pop(pool.id)
                self.released_pools.add(pool.id)  # may or may not exist afterwards; nobody uses it again
            raise
        expect(status == 200, f"ReleasePool {pool.id}: {status} {reply}")
        with self.lock:
            self.outcomes["ReleasePool 200"] += 1
            self.pools.pop(pool.id)
            self.released_pools.add(pool.id)

    def request_address(self, rng: random.Random, pool: PoolModel) -> None:
        fields: dict[str, object] = {"PoolID": pool.id, "Address": ""}
        wanted = ""
        if rng.random() < 0.4:  # `--ip`: an address the model says is free
            candidates = [ip for ip in pool_addresses(pool.cidr, 40) if ip not in pool.held and ip not in pool.unsure()]
            wanted = rng.choice(candidates) if candidates else ""
            fields["Address"] = wanted
        elif rng.random() < 0.1:
            fields["Options"] = {"RequestAddressType": "com.docker.network.gateway"}
        try:
            status, reply = self.timed("RequestAddress", fields)
        except Interrupted:
            with self.lock:
                if wanted:
                    pool.asked.add(wanted)
                else:
                    pool.unnamed += 1
                self.outcomes["RequestAddress interrupted"] += 1
            raise
        if status == 503 and "no free address" in str(
            reply.get("Err")
        ):  # unknown leftovers filled a small pool: documented
            with self.lock:
                self.outcomes["RequestAddress 503 pool full"] += 1
            return
        expect(status == 200, f"RequestAddress {fields}: {status} {reply}")
        address = str(reply["Address"]).split("/")[0]
        expect(not wanted or address == wanted, f"asked for {wanted}, got {address}")
        with self.lock:
            expect(address not in pool.held, f"{address} handed out twice in {pool.id}")
            pool.held.add(address)
            pool.asked.discard(address)
            pool.releasing.discard(address)
            self.outcomes["RequestAddress 200"] += 1

    def release_address(self, pool: PoolModel, address: str) -> None:
        try:
            status, reply = self.timed("ReleaseAddress", {"PoolID": pool.id, "Address": address})
        except Interrupted:
            with self.lock:
                pool.held.discard(address)
                pool.releasing.add(address)
                self.outcomes["ReleaseAddress interrupted"] += 1
            raise
        expect(status == 200, f"ReleaseAddress {address}: {status} {reply}")
        with self.lock:
            pool.held.discard(address)
            self.outcomes["ReleaseAddress 200"] += 1

    def check(self) -> None:
        """With the driver down: the store's own check, every promised pool and address
        is there, nothing is held twice, and what interrupted requests left is bounded by
        their number. Then the model adopts what the store holds."""
        store = SQLiteStore(str(self.driver.db), timeout=5.0)
        try:
            problems = store.problems()
            pools = {pool.id: pool for pool in store.docker_pools()}
            leases = store.leases()
        finally:
            store.close()
        expect(problems == [], f"store check failed: {problems}")
        seen = Counter((lease.family, lease.address) for lease in leases)
        expect(all(count == 1 for count in seen.values()), "an address is held twice")
        by_pool: dict[str, set[str]] = {}
        for lease in leases:
            by_pool.setdefault(lease.network, set()).add(lease.ip)
        unknown_pools = set(pools) - set(self.pools) - self.released_pools
        expect(len(unknown_pools) <= self.lost_pool_requests, f"pools nobody asked for: {unknown_pools}")
        self.outcomes["RequestPool interrupted, pool created"] += len(unknown_pools)
        self.released_pools |= unknown_pools  # never used by a client: left as they are
        self.lost_pool_requests = 0
        for pool in self.pools.values():
            expect(pool.id in pools, f"pool {pool.id} got a 200 and is gone")
            now = by_pool.get("docker:" + pool.id, set())
            missing = pool.held - now
            expect(not missing, f"pool {pool.id}: {sorted(missing)} got a 200 and are gone")
            extra = now - pool.held - pool.unsure()
            expect(len(extra) <= pool.unnamed, f"pool {pool.id}: {sorted(extra)} held though nobody asked")
            self.outcomes["RequestAddress interrupted, leased"] += len(extra) + len(pool.asked & now)
            self.outcomes["RequestAddress interrupted, not leased"] += pool.unnamed - len(extra) + len(pool.asked - now)
            self.outcomes["ReleaseAddress interrupted, released"] += len(pool.releasing - now)
            self.outcomes["ReleaseAddress interrupted, kept"] += len(pool.releasing & now)
            pool.held, pool.asked, pool.releasing, pool.unnamed = now, set(), set(), 0


class Gate:
    """Lets the killer stop every client between requests, and wait until none is inside one."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.open = True
        self.inside = 0
        self.generation = 0  # driver starts so far

    def wait_restart(self, generation: int) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.generation != generation, timeout=WAIT)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        with self.condition:
            self.condition.wait_for(lambda: self.open)
            self.inside += 1
        try:
            yield
        finally:
            with self.condition:
                self.inside -= 1
                self.condition.notify_all()

    def close(self) -> None:
        with self.condition:
            self.open = False
            self.condition.wait_for(lambda: self.inside == 0)

    def reopen(self) -> None:
        with self.condition:
            self.open = True
            self.generation += 1
            self.condition.notify_all()


def pool_addresses(cidr: str, count: int) -> list[str]:
    """The first `count` host addresses of a pool (explicit requests pick among them)."""
    import ipaddress

    network = ipaddress.ip_network(cidr)
    first = int(network.network_address) + 1
    return [str(ipaddress.ip_address(first + n)) for n in range(min(count, network.num_addresses - 2))]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CampaignFailure(message)


def run_docker_campaign(
    folder: Path, runs: int, seed: int, log: Callable[[str], None], clients: int = 4
) -> dict[str, Any]:
    """`runs` requests from `clients` concurrent clients; the driver is SIGKILLed after a
    random number of answered requests (1-60) plus a delay drawn from [0, 2 x the median
    request latency], so kills land between requests and inside them."""
    driver = DriverProcess(folder)
    driver.start()
    campaign = DockerCampaign(driver, random.Random(seed), clients)
    rng = random.Random(seed + 1)
    gate = Gate()
    failures: list[BaseException] = []

    def budget() -> bool:
        return campaign.requests < runs and not failures

    def client(number: int) -> None:
        try:
            campaign.client(number, budget, gate)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    kills = 0
    try:
        while budget():
            goal, stuck = campaign.requests + rng.randint(1, 60), time.monotonic() + WAIT
            while campaign.requests < goal and budget():
                expect(time.monotonic() < stuck, "the driver stopped answering")
                time.sleep(0.001)
            with campaign.lock:
                latency = sorted(campaign.latencies)[len(campaign.latencies) // 2] if campaign.latencies else 0.005
            time.sleep(rng.uniform(0.0, 2 * latency))
            driver.kill()
            kills += 1
            gate.close()
            campaign.check()
            driver.start()
            gate.reopen()
        for thread in threads:
            thread.join(WAIT)
        if failures:
            raise failures[0]
        driver.stop()
        campaign.check()
    finally:
        if driver.process is not None and driver.process.poll() is None:
            driver.kill()
    ctl = subprocess.run(
        [executable("cnipamctl"), "--db", str(driver.db), "check"], capture_output=True, text=True, timeout=WAIT
    )
    expect(ctl.returncode == 0 and ctl.stdout.strip() == "ok", f"cnipamctl check: {ctl.stdout}{ctl.stderr}")
    median = sorted(campaign.latencies)[len(campaign.latencies) // 2]
    log(f"median request latency {median * 1000:.1f} ms")
    return {
        "requests": campaign.requests,
        "kills": kills,
        "clients": clients,
        "median_ms": round(median * 1000, 1),
        "outcomes": campaign.outcomes,
    }


# -- the command ---------------------------------------------------------------------------


@contextlib.contextmanager
def etcd_store(endpoint: str | None, workdir: Path) -> Iterator[dict[str, Any]]:
    """The ipam.store object of an etcd: the one given, or a private one started here."""
    prefix = f"/cnipam-crash/{os.getpid()}-{time.time_ns()}/"
    if endpoint:
        yield {
            "type": "etcd",
            "endpoints": [endpoint],
            "prefix": prefix,
            "host": "node-1",
            "lockDir": str(workdir / "lock"),
        }
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from etcd_process import EtcdServer  # type: ignore[import-not-found]  # tests/, put on the path above: the tests' private etcd

    with EtcdServer("crash") as server:
        yield {
            "type": "etcd",
            "endpoints": [server.endpoint],
            "prefix": prefix,
            "host": "node-1",
            "lockDir": str(workdir / "lock"),
        }


def run(
    engine: str, runs: int, seed: int, workdir: Path, etcd: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    started = time.monotonic()
    if engine == "docker":
        report = run_docker_campaign(workdir, runs, seed, log)
    elif engine == "sqlite":
        report = run_plugin_campaign(
            executable("cnipam"), Target(workdir / "store" / "ipam.db"), workdir, runs, seed, log
        )
    else:
        with etcd_store(etcd, workdir) as store:
            report = run_plugin_campaign(
                executable("cnipam"), Target(workdir / "unused.db", store), workdir, runs, seed, log
            )
    report["engine"] = engine
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "etcd", "docker"), required=True)
    parser.add_argument(
        "--runs", type=int, default=3000, help="plugin processes (sqlite, etcd) or driver requests (docker)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--etcd", help="an etcd endpoint to use instead of starting a private one")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, outputs) for inspection")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=f"cnipam-crash-{args.engine}-"))
    try:
        report = run(
            args.engine,
            args.runs,
            args.seed,
            workdir,
            args.etcd,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except CampaignFailure as failure:
        print(f"DEFECT: {failure} (work folder kept: {workdir})", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
