"""The crash campaign of the Docker driver: concurrent RequestPool/RequestAddress/
ReleaseAddress clients hammer a real `cnipam-docker`, which is SIGKILLed at random
moments; the store is checked while the driver is down, then the driver is started again
on the same store and the clients go on.

campaigns/crash.py runs it (`--engine docker`); tests/campaigns/test_crash.py runs it short.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign import WAIT, CampaignFailure, executable, expect

from cnipam.store.sqlite import SQLiteStore
from cnipam.testing.unix_http import UnixConnection


class Interrupted(Exception):
    """The driver went away before answering: the request may or may not have happened."""


class DriverProcess:
    """The real `cnipam-docker` on a UNIX socket; started again on the same store after a kill."""

    def __init__(self, folder: Path, db: Path | None = None) -> None:
        self.folder = folder
        self.socket = str(folder / "run" / "cnipam.sock")
        self.db = db or folder / "driver.db"
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
