"""The crash campaign of the plugin (SQLite and etcd engines): waves of concurrent plugin
processes (ADD single- and dual-stack, by id and by attachment; DEL; GC), about half of
them SIGKILLed: a third after a delay drawn from [0, 1.25 x the slowest recent run], the
rest near a measured run time of the same verb (run times are measured on this machine,
not assumed), so kills land in start-up, in the lock queue, inside the store transaction
and after the result is printed. After every wave (no process running) the store is read
back and each operation's outcome is checked against what it may have done; the observed
state then becomes the model for the next wave. In agent mode a `cnipamd` serves the same
store beside the plugins (campaigns/crash.py says how).

campaigns/crash.py runs it (`--engine sqlite|etcd [--agent]`); tests/campaigns/test_crash.py
runs it short.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign import WAIT, CampaignFailure, executable

from cnipam.core.leases import LEASE
from cnipam.store.base import Store
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from cnipam.store.sqlite import SQLiteStore
from cnipam.testing.agent_process import (
    PATH_SPELLINGS,
    SPELLINGS,
    AgentProcess,
    Route,
    deleted_store_files,
    random_route,
    spell,
)

NETWORK = "crash"
V4, V6 = "10.40.0.0/22", "2001:db8:40::/64"
KILL_SHARE = 0.5  # of the processes of a wave
KILL_SPAN = 1.25  # kill delays are drawn from [0, KILL_SPAN x the slowest calibration run]: some land after exit
WAVE = 12  # concurrent plugin processes
RECENT = 200  # runs the kill delays are calibrated on
LIVE_TARGET = 60  # handles kept alive on average: DEL and GC have something to release
AGENT_KILL_SHARE = 0.3  # agent mode: the waves in which cnipamd is SIGKILLed once, at a random moment
READER_SHARE = 0.5  # agent mode: the waves with a cnipamctl reader beside the plugins
DIRECT_SHARE = 0.4  # agent mode: the calls that run directly
LONG_TIMEOUTS = ("60s", "1m", "59s", "90000ms")  # survivors outwait the lock queue, whatever the route
# agent mode: what cnipamctl reads beside the plugins. Not `check` on etcd: its reads are
# not one revision, so beside live writers it can see a lease before its index entry.
READERS = (["leases", "--json"], ["usage", "--json"], ["check"])


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
    ended: float = 0.0
    route: Route | None = None  # agent mode: how the call reached the store
    how: str = "killed"  # or "lost with its agent": code 11 from a plugin whose agent died holding the call


@dataclass
class AgentMix:
    """The agent mode: the cnipamd beside the plugins, when it was killed, and the
    cnipamctl readers of the current wave."""

    agent: AgentProcess
    rng: random.Random
    kill_at: float | None = None
    kills: list[tuple[float, float]] = field(default_factory=list)  # each SIGKILL: (sent, process reaped), monotonic
    readers: list[tuple[list[str], subprocess.Popen[bytes], Path]] = field(default_factory=list)
    tally: Counter[str] = field(default_factory=Counter)


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
    mix: AgentMix | None = None
    host_local: set[str] = field(default_factory=set)  # agent mode: owners whose config is in host-local's dialect

    def ipam(self, dual: bool, host_local: bool = False, route: Route | None = None) -> dict[str, Any]:
        """The ecs dialect, or host-local's on the same subnets with the route's dataDir
        (an owner keeps its dialect: a lease's slot is named by it)."""
        if host_local:
            ranges = [[{"subnet": V4}], [{"subnet": V6}]] if dual else [[{"subnet": V4}]]
            hl: dict[str, Any] = {"type": "cnipam", "ranges": ranges}
            if route is not None and route.data_dir is not None:
                hl["dataDir"] = route.data_dir
            return hl
        ipam: dict[str, Any] = {"type": "cnipam", "ipv4-subnet": V4}
        if dual:
            ipam["ipv6-subnet"] = V6
        if self.target.store is not None:
            ipam["store"] = self.target.store
        return ipam

    def route(self, host_local: bool) -> Route | None:
        """Agent mode: through the agent or directly, a spelling of the store, a timeout.
        A dataDir needs host-local's dialect; on etcd the config names the store."""
        if self.mix is None:
            return None
        spellings = ("absolute",) if self.target.store is not None else SPELLINGS if host_local else PATH_SPELLINGS
        timeouts = (
            LONG_TIMEOUTS if self.timeout == LONG_TIMEOUTS[0] else (self.timeout,)
        )  # finish() shortens it for all
        route: Route = random_route(
            self.mix.rng, self.target.db, self.workdir, [self.mix.agent.socket], timeouts, DIRECT_SHARE, spellings
        )
        self.mix.tally[f"{route.through if route.forwarded else 'direct'} ({route.spelling})"] += 1
        return route

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
        self, kind: str, config: dict[str, Any], container: str | None, tag: str, route: Route | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        stdin, out = self.workdir / f"{tag}.in", self.workdir / f"{tag}.out"
        stdin.write_text(json.dumps(config))
        env = self.env(kind, container) if route is None else route.apply(self.env(kind, container))
        with open(stdin, "rb") as source, open(out, "wb") as sink:
            process = subprocess.Popen(
                [self.exe], stdin=source, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        self.runs += 1
        return process, out

    def new_add(self) -> Op:
        """A fresh owner: by ipam.id (ecs style) or by attachment, single- or dual-stack.
        Every one records a container, so GC can see it."""
        self.serial += 1
        n, dual, by_id = self.serial, self.rng.random() < 0.5, self.rng.random() < 0.5
        container = f"ctr-{n}"
        handle = f"id:task-{n}" if by_id else f"cni:{NETWORK}/{container}/eth0"
        if self.mix is not None and self.target.store is None and not by_id and self.mix.rng.random() < 0.5:
            self.host_local.add(handle)
        route = self.route(handle in self.host_local)
        ipam = self.ipam(dual, handle in self.host_local, route)
        if by_id:
            ipam["id"] = f"task-{n}"
        self.attachment[handle] = container
        process, out = self.start(
            "ADD", {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}, container, f"add{n}", route
        )
        return Op("ADD", handle, process, out, (4, 6) if dual else (4,), route=route)

    def new_del(self, handle: str) -> Op:
        route = self.route(handle in self.host_local)
        ipam = self.ipam(True, handle in self.host_local, route)
        if handle.startswith("id:"):
            ipam["id"] = handle[3:]
        self.serial += 1
        config = {"cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam}
        process, out = self.start("DEL", config, self.attachment[handle], f"del{self.serial}", route)
        return Op("DEL", handle, process, out, route=route)

    def new_gc(self, garbage: list[str], keep: list[str]) -> Op:
        """GC as libcni sends it: every attachment still alive (including those being
        added right now) is valid; `garbage` are the ones the runtime forgot."""
        valid = [{"containerID": self.attachment[handle], "ifname": "eth0"} for handle in keep]
        host_local = (
            self.mix is not None and self.target.store is None and self.mix.rng.random() < 0.5
        )  # GC goes by network
        route = self.route(host_local)
        config = {
            "cniVersion": "1.1.0",
            "name": NETWORK,
            "ipam": self.ipam(True, host_local, route),
            "cni.dev/valid-attachments": valid,
        }
        self.serial += 1
        process, out = self.start("GC", config, None, f"gc{self.serial}", route)
        return Op("GC", "", process, out, garbage=tuple(garbage), route=route)

    def launch(self, size: int, kill_share: float) -> list[Op]:
        """Start `size` processes on disjoint owners and schedule kills for some; the kills
        before the last start are sent on the way. A GC, when there is one, starts last, so
        its list of valid attachments includes every ADD of the wave (as a runtime's does)."""
        busy: set[str] = set()
        ops: list[Op] = []
        gc_due = self.rng.random() < 0.4 and len(self.live) > 4
        if self.mix is not None:
            self.mix.agent.start(wait=False)  # until it listens, calls find no socket and run directly
            if kill_share and self.mix.rng.random() < READER_SHARE:
                self.start_reader(self.mix)
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
        if self.mix is not None and kill_share and self.mix.rng.random() < AGENT_KILL_SHARE:
            self.schedule_agent_kill(self.mix, ops)
        return ops

    def schedule_agent_kill(self, mix: AgentMix, ops: list[Op]) -> None:
        """Like a plugin's kill: a third anywhere in the wave, the rest near the measured
        end of a forwarded call, when the agent is inside its transaction or answering
        (a forwarded call spends only milliseconds in the agent: uniform kills miss it)."""
        forwarded = [op for op in ops if op.route is not None and op.route.forwarded]
        if not forwarded or mix.rng.random() < 1 / 3:
            mix.kill_at = time.monotonic() + mix.rng.uniform(0.0, self.span)
            return
        op = mix.rng.choice(forwarded)
        measured = self.durations.get(op.kind) or [self.span]
        mix.kill_at = op.started + mix.rng.choice(measured) * mix.rng.uniform(0.75, 1.05)

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
                op.ended = time.monotonic()
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
        if self.mix is not None:
            self.mix.kill_at = None
            for command, reader, _ in self.mix.readers:
                if reader.wait(WAIT) is None:
                    raise CampaignFailure(f"cnipamctl {command} hangs")
            self.quiesce(self.mix)
        return ops

    def quiesce(self, mix: AgentMix) -> None:
        """One more direct reader, now that the agent may be the file's only other holder
        (had its locks been dropped, this close would delete the WAL under it); then the
        agent must hold no deleted store file, and stop cleanly: SIGTERM waits for the
        calls it still holds, those of plugins killed after they handed their call over."""
        if not mix.agent.events("listening"):
            mix.agent.wait_listening()  # restarted after a kill: judged like the one it replaced
        if self.target.store is None:
            reader = self.target.open()
            reader.leases()
            reader.close()
            deleted = deleted_store_files(mix.agent.pid)
            if deleted:
                raise CampaignFailure(f"cnipamd holds deleted store files: {deleted}")
        if mix.agent.stop() != 0:
            raise CampaignFailure(f"cnipamd did not stop cleanly: {mix.agent.log_path.read_text()[-2000:]}")

    def kill_due(self, ops: list[Op], until: float) -> None:
        """SIGKILL the processes whose moment has come (each is reaped by `wave`, which
        tells a kill that landed from one that came after the exit), and the agent when
        its moment has come: it is started again at once, and until it listens, calls
        find its stale socket and run directly."""
        for op in ops:
            if op.kill_at is not None and op.kill_at <= until:
                op.kill_at = None
                op.process.send_signal(signal.SIGKILL)  # a no-op once the process is reaped
        mix = self.mix
        if mix is not None and mix.kill_at is not None and mix.kill_at <= until:
            mix.kill_at = None
            sent = time.monotonic()
            mix.agent.kill()
            mix.kills.append((sent, time.monotonic()))  # a call it cut overlaps this span
            mix.agent.start(wait=False)

    def start_reader(self, mix: AgentMix) -> None:
        """A cnipamctl reader beside the plugins: a direct process that opens the store and
        closes it, the very thing that deleted a WAL cnipamd still wrote into (issue 19)."""
        command = mix.rng.choice(READERS if self.target.store is None else READERS[:2])
        where = self.target.ctl_args()
        if self.target.store is None:
            where = ["--db", spell(self.target.db, self.workdir, mix.rng.choice(PATH_SPELLINGS))[0]]
        out = self.workdir / f"reader{len(mix.readers)}-{self.serial}.out"
        with open(out, "wb") as sink:
            reader = subprocess.Popen(
                [executable("cnipamctl"), *where, *command], stdout=sink, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        mix.readers.append((command, reader, out))
        mix.tally[f"cnipamctl {command[0]}"] += 1

    def settle_readers(self, mix: AgentMix) -> None:
        """Every reader answered as it would on a quiet store."""
        for command, reader, out in mix.readers:
            text = out.read_text(errors="replace")
            if reader.returncode != 0 or "Traceback" in text:
                raise CampaignFailure(
                    f"cnipamctl {' '.join(command)} beside the plugins: exit {reader.returncode}: {text[-500:]}"
                )
            if command[0] == "check" and text != "ok\n":
                raise CampaignFailure(f"cnipamctl check beside the plugins: {text}")
            if command[0] == "leases":
                ips = [row["ip"] for row in json.loads(text)]
                if len(ips) != len(set(ips)):
                    raise CampaignFailure(f"cnipamctl leases listed an address twice: {sorted(ips)}")
        mix.readers.clear()

    def lost_with_its_agent(self, op: Op, printed: Any) -> bool:
        """Code 11 from a forwarding plugin whose agent was SIGKILLed while it waited."""
        if self.mix is None or op.route is None or not op.route.forwarded or not isinstance(printed, dict):
            return False
        if printed.get("code") != 11 or not str(printed.get("msg", "")).startswith("cnipamd:"):
            return False
        return any(op.started <= reaped and sent <= op.ended for sent, reaped in self.mix.kills)

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
        if self.mix is not None:
            self.settle_readers(self.mix)
        for op in ops:
            printed = printed_json(op.out)
            code = op.process.returncode
            if not op.killed and code != 0 and self.lost_with_its_agent(op, printed):
                op.killed, op.how = True, "lost with its agent"  # applied or not, as a killed process
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
            self.outcomes[f"ADD {op.how} after printing" if op.killed else "ADD succeeded"] += 1
            return
        if not op.killed:
            raise CampaignFailure(f"ADD {op.handle} exited 0 without a result: {printed}")
        families = sorted(6 if ":" in ip else 4 for ip in now)
        if now and families != list(op.families):
            raise CampaignFailure(
                f"interrupted ADD {op.handle} of families {op.families} holds {sorted(now)}: half an ADD"
            )
        self.outcomes[f"ADD {op.how} after commit, before printing" if now else f"ADD {op.how} before commit"] += 1

    def settle_del(self, op: Op, now: frozenset[str]) -> None:
        before = self.live[op.handle]
        if not op.killed:
            if now:
                raise CampaignFailure(f"DEL {op.handle} succeeded but the store still holds {sorted(now)}")
            self.outcomes["DEL succeeded"] += 1
        elif now not in (before, frozenset()):
            raise CampaignFailure(f"interrupted DEL {op.handle} left {sorted(now)} of {sorted(before)}: half a DEL")
        else:
            self.outcomes[f"DEL {op.how} after commit" if not now else f"DEL {op.how} before commit"] += 1

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
            self.outcomes[f"GC {op.how} after commit"] += 1
        elif len(kept) == len(op.garbage):
            self.outcomes[f"GC {op.how} before commit"] += 1
        else:
            self.outcomes[f"GC {op.how} between its transactions"] += 1

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
    exe: str, target: Target, workdir: Path, runs: int, seed: int, log: Callable[[str], None], agent: bool = False
) -> dict[str, Any]:
    mix = None
    if agent:
        mix = AgentMix(
            AgentProcess(executable("cnipamd"), workdir / "run" / "cnipamd.sock", workdir), random.Random(seed + 1)
        )
    campaign = PluginCampaign(exe, target, workdir, random.Random(seed), mix=mix)
    try:
        report = campaign_waves(campaign, runs, log)
    finally:
        if mix is not None and mix.agent.alive():
            mix.agent.kill()
    if mix is not None:
        report["agent"] = {"kills": len(mix.kills), "calls": dict(sorted(mix.tally.items()))}
    return report


def campaign_waves(campaign: PluginCampaign, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
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
            agent = f", {len(campaign.mix.kills)} agent kills" if campaign.mix is not None else ""
            log(f"{campaign.runs} runs, {campaign.kills} kills{agent}, {len(campaign.live)} owners hold leases")
    campaign.finish()
    return {
        "runs": campaign.runs,
        "kills": campaign.kills,
        "waves": waves,
        "kill_span_ms": round(span * 1000),
        "calibrated_run_ms": [round(measured[0] * 1000), round(measured[-1] * 1000)],
        "outcomes": campaign.outcomes,
    }
