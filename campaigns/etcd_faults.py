#!/usr/bin/env python3
"""etcd fault campaign: a three-member etcd cluster loses its leader, a member and its
quorum, and is restarted whole, while simulated hosts allocate and release through it.

Why: a real cluster store runs three or five members, and they fail. The promise is the
one the README makes for etcd: no address held twice, no committed lease lost, every
error while the cluster cannot serve is code 11 ("try again later") within the timeout
(IPAM_DB_CONNECTION_TIMEOUT, which bounds the whole call: lock, requests and retries),
never a hang and never 999, and allocations succeed again soon after the cluster is back.

Workers (threads) each keep one *installed* `cnipam` process running at a time, as a
runtime calls it, for owners of their own on one of several simulated hosts (own `host`
and `lockDir`); every config names all three members. Their results are the model: an
ADD answered 11 may or may not have committed (its owner is "unknown" until its next
DEL, which is idempotent). The faults, each followed by a steady spell and a check of the
store against the model (workers paused, `cnipamctl leases` and `check`):

* leader killed (SIGKILL), restarted after a while;
* a member hung (SIGSTOP), continued after a while (SIGCONT);
* quorum lost (two members SIGKILLed), both restarted: the time from their restart to the
  first allocation that succeeds is the recovery time;
* the whole cluster killed and restarted: recovery time likewise.

    python3 campaigns/etcd_faults.py --rounds 3

CI runs one short round (tests/campaigns/test_etcd_faults_campaign.py). Exit status 1
on any broken promise.
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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from campaign import WAIT, CampaignFailure, executable, expect

from cnipam.testing.etcd_server import EtcdCluster

IPAM = {"type": "cnipam", "ipv4-subnet": "10.88.0.0/20", "ipv6-subnet": "fd88::/64"}
TIMEOUT = 3.0  # the calls' IPAM_DB_CONNECTION_TIMEOUT, seconds
MARGIN = 1.0  # what a call may take beyond it: the plugin's own start and exit, on a loaded machine
RECOVERY = 60.0  # how long a phase after a fault waits at most for the first allocation to succeed


class Call(NamedTuple):
    verb: str
    owner: str
    phase: str
    started: float
    ended: float
    code: int | None  # the CNI error code, None on success


class Timing(NamedTuple):
    """Seconds for the steady spells and the faults (how long a fault lasts before repair)."""

    steady: float
    fault: float


FULL = Timing(steady=10.0, fault=8.0)
SHORT = Timing(steady=3.0, fault=3.0)


class Campaign:
    def __init__(self, rounds: int, hosts: int, workers: int, timing: Timing, seed: int, folder: Path) -> None:
        self.rounds = rounds
        self.hosts = hosts
        self.workers = workers
        self.timing = timing
        self.rng = random.Random(seed)
        self.seed = seed
        self.folder = folder
        self.plugin = executable("cnipam")
        self.ctl = executable("cnipamctl")
        self.prefix = f"/cnipam-faults/{os.getpid()}-{time.time_ns()}/"
        self.cluster = EtcdCluster(3, "fault")
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.holder: dict[str, str] = {}  # address -> owner, for owners whose ADD succeeded
        self.state: dict[str, str] = {}  # owner -> free, held, unknown
        self.addresses: dict[str, list[str]] = {}  # owner -> what its ADD returned
        self.violations: list[str] = []
        self.phase = "steady"
        self.stop = threading.Event()
        self.running = threading.Event()  # cleared: workers wait between calls
        self.idle = threading.Semaphore(0)
        self.recoveries: list[dict[str, Any]] = []
        self.log: Callable[[str], None] = print

    # -- the calls --------------------------------------------------------------------

    def store(self, host: int) -> dict[str, Any]:
        return {
            "type": "etcd", "endpoints": self.cluster.endpoints, "prefix": self.prefix, "host": f"host-{host}",
            "lockDir": str(self.folder / f"host-{host}"),
        }  # fmt: skip

    def cni(self, verb: str, owner: str, host: int) -> tuple[int | None, dict[str, Any]]:
        config = {"cniVersion": "1.0.0", "name": "faults", "ipam": {**IPAM, "store": self.store(host)}}
        env = {
            "PATH": "/usr/bin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": owner, "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/x", "CNI_PATH": "/opt/cni/bin",
            "IPAM_DB_CONNECTION_TIMEOUT": f"{TIMEOUT:g}s",
        }  # fmt: skip
        phase, started = self.phase, time.monotonic()
        done = subprocess.run(
            [self.plugin], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=WAIT
        )
        ended = time.monotonic()
        answer: dict[str, Any] = {}
        try:
            answer = json.loads(done.stdout) if done.stdout.strip() else {}
        except ValueError:
            self.violation(f"{verb} {owner}: stdout is not JSON: {done.stdout[:200]!r}")
        if "Traceback" in done.stdout + done.stderr:
            self.violation(f"{verb} {owner}: traceback: {done.stderr[-300:]}")
        code = None if done.returncode == 0 else answer.get("code", -1)
        if code not in (None, 11):
            self.violation(f"{verb} {owner} in phase {phase}: code {code}: {answer.get('msg')}")
        if ended - started > TIMEOUT + MARGIN:
            self.violation(f"{verb} {owner} in phase {phase} took {ended - started:.2f} s (timeout {TIMEOUT:g} s)")
        with self.lock:
            self.calls.append(Call(verb, owner, phase, started, ended, code))
        return code, answer

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    # -- the workers ------------------------------------------------------------------

    def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        host = index % self.hosts
        owners = [f"w{index}-{n}" for n in range(4)]
        for owner in owners:
            self.state[owner] = "free"
        while not self.stop.is_set():
            if not self.running.is_set():
                self.idle.release()
                self.running.wait()
                continue
            owner = rng.choice(owners)
            state = self.state[owner]
            if state == "free":
                self.add(owner, host)
            elif state == "unknown" or rng.random() < 0.6:
                self.delete(owner, host)
            else:
                code, _ = self.cni("CHECK", owner, host)
                if code not in (None, 11):
                    self.violation(f"CHECK {owner}: a committed lease is missing")

    def add(self, owner: str, host: int) -> None:
        code, answer = self.cni("ADD", owner, host)
        if code is not None:
            self.state[owner] = "unknown"  # the Txn may have landed before the answer was lost
            return
        got = sorted(entry["address"].split("/")[0] for entry in answer["ips"])
        with self.lock:
            for address in got:
                other = self.holder.get(address)
                if other is not None and other != owner:
                    self.violations.append(f"{address} handed to {owner} while {other} held it")
                self.holder[address] = owner
        self.state[owner], self.addresses[owner] = "held", got

    def delete(self, owner: str, host: int) -> None:
        code, _ = self.cni("DEL", owner, host)
        with self.lock:
            for address in self.addresses.pop(owner, []):
                if self.holder.get(address) == owner:
                    del self.holder[address]
        self.state[owner] = "free" if code is None else "unknown"

    def pause(self) -> None:
        """Every worker between two calls."""
        self.running.clear()
        for _ in range(self.workers):
            if not self.idle.acquire(timeout=WAIT):
                raise CampaignFailure("a worker did not finish its call")

    # -- the faults -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with self.cluster:
            threads = [threading.Thread(target=self.worker, args=(index,)) for index in range(self.workers)]
            self.running.set()
            for thread in threads:
                thread.start()
            try:
                self.spell("steady")
                for number in range(self.rounds):
                    self.fault("leader killed", self.kill_leader)
                    self.fault("member hung", self.hang_member)
                    self.fault("quorum lost", self.lose_quorum)
                    self.fault("cluster restarted", self.restart_cluster)
                    self.log(f"round {number + 1}/{self.rounds}: {self.summary()['calls']}")
            finally:
                self.stop.set()
                self.running.set()
                for thread in threads:
                    thread.join(WAIT)
            self.verify("the end")
        expect(not self.violations, "; ".join(self.violations[:10]))
        return {**self.summary(), "seconds": round(time.monotonic() - started, 1)}

    def spell(self, phase: str) -> None:
        self.phase = phase
        time.sleep(self.timing.steady)

    def fault(self, name: str, inject: Callable[[], float | None]) -> None:
        self.phase = name
        back = inject()
        self.phase = f"after {name}"
        time.sleep(self.timing.steady)
        self.settle(f"after {name}", back)
        if back is not None:
            self.recoveries.append({"fault": name, **self.recovery(back)})
        self.pause()
        try:
            self.verify(f"after {name}")
        finally:
            self.running.set()
        expect(not self.violations, "; ".join(self.violations[:10]))

    def kill_leader(self) -> None:
        leader = self.cluster.leader()
        leader.kill()
        time.sleep(self.timing.fault)
        leader.start(wait=False)

    def hang_member(self) -> None:
        member = self.rng.choice(self.cluster.members)
        member.pause()
        time.sleep(self.timing.fault)
        member.resume()

    def lose_quorum(self) -> float:
        down = self.rng.sample(self.cluster.members, 2)
        for member in down:
            member.kill()
        time.sleep(self.timing.fault)
        back = time.monotonic()
        for member in down:
            member.start(wait=False)
        return back

    def restart_cluster(self) -> float:
        for member in self.cluster.members:
            member.kill()
        back = time.monotonic()
        for member in self.cluster.members:
            member.start(wait=False)
        return back

    def settle(self, phase: str, back: float | None) -> None:
        """Go on past the steady spell, RECOVERY seconds at most, until an ADD made in
        `phase` (and begun after `back`) succeeded: on a loaded machine a restarted
        cluster may elect its leader after the spell is over, and the recovery time is
        then measured instead of cut off (what is judged is that allocations came back)."""
        deadline = time.monotonic() + RECOVERY
        while time.monotonic() < deadline:
            with self.lock:
                if any(
                    call.verb == "ADD" and call.code is None and call.phase == phase
                    and (back is None or call.started >= back)
                    for call in self.calls
                ):  # fmt: skip
                    return
            time.sleep(0.1)

    def recovery(self, back: float) -> dict[str, Any]:
        """Seconds from the members' restart to the end of the first ADD that started after
        it and succeeded."""
        with self.lock:
            firsts = [
                call.ended for call in self.calls if call.verb == "ADD" and call.code is None and call.started >= back
            ]
        return {"first allocation after": round(min(firsts) - back, 2) if firsts else None}

    # -- reading the store back -------------------------------------------------------

    def verify(self, when: str) -> None:
        store = json.dumps({**self.store(0), "host": "inspector", "lockDir": str(self.folder / "inspector")})
        done = self.cnipamctl("--store", store, "leases", "--json")
        held: dict[str, list[str]] = {}
        seen: set[str] = set()
        for lease in json.loads(done.stdout):
            expect(lease["ip"] not in seen, f"{when}: {lease['ip']} is held twice")
            seen.add(lease["ip"])
            if lease["kind"] == "lease":
                held.setdefault(lease["container_id"], []).append(lease["ip"])
        for owner, state in self.state.items():
            mine = sorted(held.get(owner, []))
            if state == "held":
                expect(
                    mine == self.addresses[owner], f"{when}: {owner} should hold {self.addresses[owner]}, holds {mine}"
                )
            elif state == "free":
                expect(not mine, f"{when}: {owner} was released but holds {mine}")
            else:
                expect(len(mine) in (0, 2), f"{when}: {owner} (outcome unknown) holds half a lease: {mine}")
        check = self.cnipamctl("--store", store, "check")
        expect(check.stdout.strip() == "ok", f"{when}: cnipamctl check: {check.stdout} {check.stderr}")

    def cnipamctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Retried while the cluster settles: an operator's read after a restart may meet a member without a leader."""
        for _ in range(20):
            done = subprocess.run([self.ctl, *args], capture_output=True, text=True, timeout=WAIT)
            expect("Traceback" not in done.stdout + done.stderr, f"cnipamctl: {done.stderr}")
            if done.returncode == 0 or "problem" in done.stderr:
                return done
            time.sleep(0.5)
        raise CampaignFailure(f"cnipamctl {args[-1]} kept failing: {done.stderr}")

    # -- the figures ------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        with self.lock:
            calls = list(self.calls)
        by_phase: dict[str, Counter[str]] = {}
        for call in calls:
            by_phase.setdefault(call.phase, Counter())[f"{call.verb} {'ok' if call.code is None else call.code}"] += 1
        busy = [call.ended - call.started for call in calls if call.code == 11]
        return {
            "calls": len(calls),
            "by phase": {phase: dict(sorted(counts.items())) for phase, counts in by_phase.items()},
            "code 11": len(busy),
            "slowest code 11 (s)": round(max(busy), 2) if busy else None,
            "slowest call (s)": round(max((call.ended - call.started for call in calls), default=0), 2),
            "timeout (s)": TIMEOUT,
            "recoveries": self.recoveries,
            "violations": len(self.violations),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8, help="plugin processes in flight, spread over the hosts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="the CI timings: 3 s spells")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnipam-etcd-faults-") as folder:
        campaign = Campaign(
            args.rounds, args.hosts, args.workers, SHORT if args.short else FULL, args.seed, Path(folder)
        )
        campaign.log = lambda line: print(line, file=sys.stderr, flush=True)
        try:
            report = campaign.run()
        except CampaignFailure as failure:
            print(f"DEFECT: {failure}", file=sys.stderr)
            return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
