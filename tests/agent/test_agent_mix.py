"""Issue 19's contract under a randomised mix on one SQLite file, all real processes: two
`cnipamd` on separate sockets, direct plugin calls, `cnipamctl` reading (leases, show,
usage, check) and releasing a lease it created for the purpose, and a real
`cnipam-docker` answering RequestPool, RequestAddress and ReleaseAddress from the same
file. Each agent is SIGKILLed and started again at random moments.

Every plugin call names the store under a random spelling (absolute, relative, a
`dir/../dir/` detour, a host-local dataDir under each) with a random timeout, so one
agent holds the file under several settings at once: what made it open the file twice.
Every answer is tracked while the mix runs, and the test requires:
* no address handed to an owner while another live owner held it;
* a forwarded call answers only what it may: its result, a documented refusal, or
  code 11 when its agent died holding it (applied or not: its owner is then unknown
  until its next DEL, which is idempotent);
* no agent and no driver ever holds a deleted -wal or -shm (/proc/PID/fd, looked at
  after every cnipamctl command and at the end);
* at the end, every lease a caller was promised (a printed ADD, a 200) is in the file
  and nothing else is, `PRAGMA integrity_check` and `cnipamctl check` pass.

It fails on the engine before the one-connection rule (docs/security.md says how that
was checked). `CNIPAM_MIX_SEED` picks another random sequence.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crash_docker import DriverProcess  # the campaign's driver process (campaigns/, on pytest's pythonpath)

from cnipam.testing.agent_process import (
    PATH_SPELLINGS,
    SPELLINGS,
    AgentProcess,
    Route,
    deleted_store_files,
    never_used,
    random_route,
    spell,
)
from tests.support.plugin_calls import CALL_TIMEOUT, installed, plugin_env

SECONDS = float(os.environ.get("CNIPAM_MIX_SECONDS", "12"))
SEED = int(os.environ.get("CNIPAM_MIX_SEED", "19"))
NET, SUBNET = "mix", "10.94.0.0/22"
WORKERS, CONTAINERS = 3, 4  # plugin threads, containers each drives
TIMEOUTS = (None, "3s", "10s", "4500ms", "1s", "0")  # None: IPAM_DB_CONNECTION_TIMEOUT unset (5 s)
DIRECT_SHARE = 0.4


class Mix:
    """The one model every actor reports to: who holds what, and what went wrong."""

    def __init__(self, folder: Path) -> None:
        self.caller = folder / "caller"  # every plugin and cnipamctl call runs here
        self.db = self.caller / "store" / "cnipam.db"
        self.db.parent.mkdir(parents=True)
        self.lock = threading.Lock()
        self.holder: dict[str, str] = {}  # address -> owner, for owners whose answer said so
        self.releasing: set[str] = set()  # owners whose DEL or release has started (and not settled)
        self.violations: list[str] = []
        self.tally: Counter[str] = Counter()
        self.agents: list[AgentProcess] = []
        self.driver: DriverProcess | None = None
        self.done = threading.Event()
        # what the actors leave for the final check
        self.plugin_owners: dict[str, tuple[str, str | None]] = {}  # owner -> (free, held or unknown; its address)
        self.unsettled: set[str] = set()  # cnipamctl's owners whose ADD was lost and whose DEL failed
        self.docker_held: set[str] = set()

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def count(self, what: str) -> None:
        with self.lock:
            self.tally[what] += 1

    def granted(self, owner: str, address: str) -> None:
        with self.lock:
            other = self.holder.get(address)
            if other is not None and other != owner and other not in self.releasing:
                self.violations.append(f"{address} handed to {owner} while {other} held it")
            self.holder[address] = owner

    def releasing_starts(self, owner: str) -> None:
        with self.lock:
            self.releasing.add(owner)

    def released(self, owner: str) -> None:
        with self.lock:
            for address in [address for address, holder in self.holder.items() if holder == owner]:
                del self.holder[address]
            self.releasing.discard(owner)

    def no_deleted_store_files(self, after: str) -> None:
        holders = [agent for agent in self.agents if agent.alive()]
        if self.driver is not None and self.driver.process is not None and self.driver.process.poll() is None:
            pids = [("cnipam-docker", self.driver.process.pid)]
        else:
            pids = []
        for name, pid in [(agent.socket.name, agent.pid) for agent in holders] + pids:
            found = deleted_store_files(pid)
            if found:
                self.violation(f"{name} holds deleted store files after {after}: {found}")

    def route(self, rng: random.Random) -> Route:
        return random_route(rng, self.db, self.caller, [agent.socket for agent in self.agents], TIMEOUTS, DIRECT_SHARE)


def plugin(mix: Mix, command: str, container: str, route: Route) -> tuple[int | None, Any]:
    """One plugin call: (None, result) on success, (code, error) on a refusal."""
    ipam: dict[str, Any] = {"type": "cnipam", "subnet": SUBNET}
    if route.data_dir is not None:
        ipam["dataDir"] = route.data_dir
    config = {"cniVersion": "1.0.0", "name": NET, "ipam": ipam}
    env = route.apply(plugin_env(command, mix.db, {"CNI_CONTAINERID": container}))
    done = subprocess.run([installed("cnipam")], input=json.dumps(config).encode(), env=env, cwd=mix.caller,
                          capture_output=True, timeout=CALL_TIMEOUT)  # fmt: skip
    text = done.stdout.decode("utf-8", "replace")
    if "Traceback" in text + done.stderr.decode("utf-8", "replace"):
        mix.violation(f"{command} {container} via {route.through}: a traceback: {done.stderr[-400:]!r}")
    out = json.loads(text) if text.strip() else None
    if done.returncode == 0:
        mix.count(f"{command} via {route.through}: ok")
        mix.count(f"spelling {route.spelling}: ok")
        return None, out
    code = out.get("code") if isinstance(out, dict) else None
    code = code if isinstance(code, int) else -1
    outcome = "lost with its agent" if lost_with_its_agent(route, code, out) else f"code {code}"
    mix.count(f"{command} via {route.through}: {outcome}")
    return code, out


def lost_with_its_agent(route: Route, code: int | None, out: Any) -> bool:
    """Code 11 from the forwarding plugin itself: its agent died holding the call."""
    return route.forwarded and code == 11 and str(out.get("msg", "")).startswith("cnipamd:")


def plugin_worker(mix: Mix, number: int, rng: random.Random) -> None:
    """Drives its own containers: ADD a free one; CHECK, DEL or ADD again a held one;
    DEL an unknown one (its last call was lost with its agent) until it settles."""
    state = {f"w{number}-{n}": "free" for n in range(CONTAINERS)}
    address: dict[str, str] = {}
    while not mix.done.is_set():
        container = rng.choice(sorted(state))
        owner, route = f"cni:{NET}/{container}/eth0", mix.route(rng)
        pick = rng.random()
        if state[container] == "free" or (state[container] == "held" and pick < 0.25):
            code, out = plugin(mix, "ADD", container, route)
            if code is None:
                ip = out["ips"][0]["address"].split("/")[0]
                if state[container] == "held" and ip != address[container]:
                    mix.violation(f"a repeated ADD of {container} answered {ip}, it holds {address[container]}")
                mix.granted(owner, ip)
                state[container], address[container] = "held", ip
            elif lost_with_its_agent(route, code, out) and state[container] == "free":
                state[container] = "unknown"
                mix.releasing_starts(owner)
            elif code != 11:
                mix.violation(f"ADD {container} via {route.through} ({route.spelling}): {out}")
        elif state[container] == "held" and pick < 0.45:
            code, out = plugin(mix, "CHECK", container, route)
            if code is not None and code != 11:
                mix.violation(f"CHECK {container} (holding {address[container]}) via {route.through}: {out}")
        else:
            mix.releasing_starts(owner)
            code, out = plugin(mix, "DEL", container, route)
            if code is None:
                mix.released(owner)
                state[container] = "free"
                address.pop(container, None)
            elif lost_with_its_agent(route, code, out):
                state[container] = "unknown"
            elif code != 11:
                mix.violation(f"DEL {container} via {route.through}: {out}")
    with mix.lock:
        mix.plugin_owners.update(
            {f"cni:{NET}/{container}/eth0": (state[container], address.get(container)) for container in state}
        )


def ctl(mix: Mix, rng: random.Random, *args: str) -> subprocess.CompletedProcess[str]:
    """cnipamctl on the store under a random spelling (--db, or IPAM_DB_PATH as the plugin)."""
    path, _ = spell(mix.db, mix.caller, rng.choice(PATH_SPELLINGS))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    where = ["--db", path] if rng.random() < 0.5 else []
    if not where:
        env["IPAM_DB_PATH"] = path
    done = subprocess.run([installed("cnipamctl"), *where, *args], capture_output=True, text=True, env=env,
                          cwd=mix.caller, timeout=CALL_TIMEOUT)  # fmt: skip
    mix.count(f"cnipamctl {args[0]}")
    if "Traceback" in done.stdout + done.stderr:
        mix.violation(f"cnipamctl {args}: a traceback: {done.stderr[-400:]}")
    mix.no_deleted_store_files(f"cnipamctl {' '.join(args)}")
    return done


def ctl_worker(mix: Mix, rng: random.Random) -> None:
    """Reads the store while everything else writes it, and now and then releases a lease
    it created for the purpose (a write by the operator's tool, on exactly that lease)."""
    serial = 0
    while not mix.done.is_set():
        pick = rng.random()
        if pick < 0.25:
            done = ctl(mix, rng, "leases", "--json")
            ips = [row["ip"] for row in json.loads(done.stdout)] if done.returncode == 0 else []
            if done.returncode != 0 or len(ips) != len(set(ips)):
                mix.violation(f"cnipamctl leases: exit {done.returncode}, {done.stderr.strip()} {ips}")
        elif pick < 0.45:
            done = ctl(mix, rng, "check")
            if (done.returncode, done.stdout) != (0, "ok\n"):
                mix.violation(f"cnipamctl check beside the writers: {done.stdout}{done.stderr}")
        elif pick < 0.6:
            done = ctl(mix, rng, "usage", "--json")
            if done.returncode != 0:
                mix.violation(f"cnipamctl usage: {done.stderr}")
        elif pick < 0.75:
            with mix.lock:
                held = sorted(mix.holder)
            if held:
                address = rng.choice(held)
                done = ctl(mix, rng, "show", address, "--json")
                if done.returncode != 0 and "is not leased" not in done.stderr:  # released meanwhile: fine
                    mix.violation(f"cnipamctl show {address}: {done.stderr}")
        else:
            serial += 1
            ctl_release(mix, rng, f"ctl-{serial}")


def ctl_release(mix: Mix, rng: random.Random, container: str) -> None:
    owner = f"cni:{NET}/{container}/eth0"
    route = mix.route(rng)
    code, out = plugin(mix, "ADD", container, route)
    if code is not None:
        if lost_with_its_agent(route, code, out):  # may hold an address: settled by a direct DEL
            mix.releasing_starts(owner)
            if plugin(mix, "DEL", container, Route("direct", {"CNIPAM_AGENT": "off"}, None, "absolute"))[0] is None:
                mix.released(owner)
            else:
                mix.unsettled.add(owner)
        elif code != 11:
            mix.violation(f"ADD {container} for cnipamctl release: {out}")
        return
    address = out["ips"][0]["address"].split("/")[0]
    mix.granted(owner, address)
    mix.releasing_starts(owner)
    done = ctl(mix, rng, "release", address, "--yes", "--force", "--json")  # the operator knows it is gone
    released = [(row["ip"], row["container_id"]) for row in json.loads(done.stdout)] if done.returncode == 0 else None
    if released != [(address, container)]:
        mix.violation(f"cnipamctl release {address} of {container}: exit {done.returncode}, {released}, {done.stderr}")
    else:
        mix.released(owner)


def docker_worker(mix: Mix, rng: random.Random) -> None:
    """dockerd's side: one pool, addresses requested and released at random. The driver
    is stopped between requests now and then and started again a moment later, so the
    file also goes through moments with fewer holders (with a driver always holding it,
    no other process could ever believe itself the last user: the WAL would never be
    deleted, and issue 19 would hide)."""
    assert mix.driver is not None
    status, reply = mix.driver.call(
        "RequestPool", {"AddressSpace": "CnipamLocal", "Pool": "", "Options": {}, "V6": False}
    )
    if status != 200:
        mix.violation(f"RequestPool: {status} {reply}")
        return
    pool = str(reply["PoolID"])
    mine: list[str] = []
    pause = time.monotonic() + rng.uniform(1.0, 2.5)
    while not mix.done.is_set():
        if time.monotonic() > pause:
            mix.driver.stop()
            if mix.done.wait(rng.uniform(0.3, 1.5)):
                return
            mix.driver.start()
            mix.count("docker restart")
            pause = time.monotonic() + rng.uniform(1.0, 2.5)
        if not mine or (len(mine) < 20 and rng.random() < 0.6):
            status, reply = mix.driver.call("RequestAddress", {"PoolID": pool, "Address": ""})
            if status != 200:
                mix.violation(f"RequestAddress: {status} {reply}")
                continue
            address = str(reply["Address"]).split("/")[0]
            mix.granted(f"docker {address}", address)
            mine.append(address)
        else:
            address = mine.pop(rng.randrange(len(mine)))
            mix.releasing_starts(f"docker {address}")
            status, reply = mix.driver.call("ReleaseAddress", {"PoolID": pool, "Address": address})
            if status != 200:
                mix.violation(f"ReleaseAddress {address}: {status} {reply}")
            mix.released(f"docker {address}")
        mix.count("docker request")
        with mix.lock:
            mix.docker_held = set(mine)
        time.sleep(0.005)  # dockerd asks now and then, not in a tight loop


def killer(mix: Mix, rng: random.Random) -> None:
    """SIGKILL an agent at a random moment; start it again a moment later (meanwhile its
    stale socket sends calls straight to the store)."""
    while not mix.done.wait(rng.uniform(0.5, 2.0)):
        agent = rng.choice(mix.agents)
        agent.kill()
        time.sleep(rng.uniform(0.0, 1.0))
        agent.start()


def run_actor(mix: Mix, actor: Callable[..., None], *args: object) -> threading.Thread:
    def guarded() -> None:
        try:
            actor(mix, *args)
        except Exception as exc:  # a test bug or a hung call: reported, not swallowed
            mix.violation(f"{actor.__name__}: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=guarded, name=actor.__name__)
    thread.start()
    return thread


def leases_in_file(db: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute(
            "SELECT ip, handle, network, container_id FROM leases WHERE kind = 'lease'"
        ).fetchall()


def test_agents_direct_calls_cnipamctl_and_the_driver_on_one_file(tmp_path: Path) -> None:
    mix = Mix(tmp_path)
    rng = random.Random(SEED)
    (tmp_path / "driver").mkdir()
    mix.driver = DriverProcess(tmp_path / "driver", mix.db)
    try:
        for name in ("a", "b"):
            mix.agents.append(AgentProcess(installed("cnipamd"), tmp_path / "run" / f"{name}.sock", tmp_path))
            mix.agents[-1].start()
        mix.driver.start()
        actors = [run_actor(mix, plugin_worker, n, random.Random(rng.random())) for n in range(WORKERS)]
        actors += [run_actor(mix, actor, random.Random(rng.random())) for actor in (ctl_worker, docker_worker, killer)]
        time.sleep(SECONDS)
        mix.done.set()
        for actor in actors:
            actor.join(CALL_TIMEOUT * 2)
        mix.no_deleted_store_files("the mix")
        assert [agent.stop() for agent in mix.agents] == [0, 0]
        mix.driver.stop()
    finally:
        mix.done.set()  # the actors stop after their current call, whatever failed
        for agent in mix.agents:
            if agent.alive():
                agent.kill()
        if mix.driver.process is not None and mix.driver.process.poll() is None:
            mix.driver.kill()
    print(
        f"seed {SEED}, {sum(agent.kills for agent in mix.agents)} agent kills:",
        json.dumps(dict(sorted(mix.tally.items()))),
    )
    assert not mix.violations, f"{len(mix.violations)} violations, the first ones:\n" + "\n".join(mix.violations[:25])

    found: dict[str, set[str]] = {}
    for ip, handle, network, _ in leases_in_file(mix.db):
        found.setdefault(
            handle if handle else f"docker {ip}" if network.startswith("docker:") else f"anonymous {ip}", set()
        ).add(ip)
    for owner, (state, address) in mix.plugin_owners.items():
        holds = found.pop(owner, set())
        if state == "held":
            assert holds == {address}, (owner, holds, address)
        elif state == "free":
            assert holds == set(), (owner, holds)
        else:
            assert len(holds) <= 1, (owner, holds)  # its lost call was applied, or not
    for address in mix.docker_held:
        assert found.pop(f"docker {address}", None) == {address}, (
            f"the driver answered 200 for {address}; the file lost it"
        )
    for owner in mix.unsettled:
        assert len(found.pop(owner, set())) <= 1
    assert found == {}, f"leases nobody holds: {found}"
    with sqlite3.connect(mix.db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check = subprocess.run(
        [installed("cnipamctl"), "--db", str(mix.db), "check"], capture_output=True, text=True, timeout=CALL_TIMEOUT
    )
    assert (check.returncode, check.stdout) == (0, "ok\n"), check.stderr
    assert not never_used(mix.caller).exists(), "a dataDir spelling was not used as the store"

    # It tested what it claims: every route, every spelling, kills, the driver and the operator's tool.
    assert sum(agent.kills for agent in mix.agents) >= 2
    for spelling in SPELLINGS:
        assert mix.tally[f"spelling {spelling}: ok"] > 0, spelling
    for route in ("direct", "a.sock", "b.sock"):
        assert mix.tally[f"ADD via {route}: ok"] > 0, route
    assert mix.tally["docker request"] > 0 and mix.tally["cnipamctl release"] > 0 and mix.tally["cnipamctl check"] > 0


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc to see what each process holds open"
)
