"""The node agent `cnipamd` and the plugin's forward path, as real processes: the
installed `cnipamd` on a socket in tmp, the installed `cnipam` pointed at it with
CNIPAM_AGENT_SOCKET, real SQLite files. Nothing here imports cnipam.

What is proved: an answer through the agent is byte for byte the direct one (results
and errors alike); relative paths are the caller's; agent and direct calls mix safely
on one store; the plugin runs directly when no agent answers, and says "try again" (11)
instead of running a call twice when the agent dies holding it; SIGTERM cleans up; the
reconciler releases only what it should.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.testing.agent_process import AgentProcess, deleted_store_files
from tests.support.agent_calls import DUAL, NET, V4, call, ecs, host_local, start_agent
from tests.support.etcd import need_etcd, store_object
from tests.support.plugin_calls import CALL_TIMEOUT, as_stdin, installed, plugin_env
from tests.support.store_files import held


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    running = start_agent(tmp_path)
    yield running
    if running.alive():
        running.kill()


@pytest.fixture
def caller(tmp_path: Path) -> Path:
    folder = tmp_path / "caller"
    folder.mkdir()
    return folder


# -- the same answers -------------------------------------------------------------------------

SCRIPT: list[tuple[str, dict[str, Any] | bytes, dict[str, str | None]]] = [
    ("VERSION", ecs(V4, "0.4.0"), {}),
    ("ADD", ecs(DUAL), {}),
    ("ADD", ecs(DUAL), {}),  # the same attachment again: its lease
    ("CHECK", ecs(DUAL), {}),
    ("ADD", ecs({**V4, "id": "owner-a"}, "0.3.1"), {"CNI_CONTAINERID": "c2"}),
    ("ADD", ecs({**V4, "id": "owner-a"}, "0.3.1"), {"CNI_CONTAINERID": "c3"}),  # 100: the id holds an address
    ("ADD", ecs({**V4, "ipv4-address": "10.9.0.2/24"}, "0.2.0"), {"CNI_CONTAINERID": "c4"}),  # 100: taken
    ("ADD", host_local({"subnet": "10.9.1.0/24", "resolvConf": "resolv.conf"}), {"CNI_CONTAINERID": "c5"}),
    ("STATUS", host_local({"subnet": "10.9.1.0/30"}), {}),  # 50: c5 holds its one address
    ("ADD", b"{not json", {}),  # 6
    ("ADD", b"", {}),  # 6
    ("ADD", ecs(V4), {"CNI_IFNAME": None}),  # 4
    ("ADD", ecs({"ipv4-subnet": "10.9.0.0/33"}), {}),  # 7
    ("DEL", ecs({**V4, "id": "owner-a"}, "0.3.1"), {"CNI_CONTAINERID": "c2"}),
    ("DEL", ecs(DUAL), {}),
    ("DEL", ecs(DUAL), {}),  # idempotent
    ("CHECK", ecs(DUAL), {}),  # 102: nothing held
    ("GC", host_local({"subnet": "10.9.1.0/24"}) | {"cni.dev/valid-attachments": []}, {}),
    ("ADD", ecs(V4), {"IPAM_DB_CONNECTION_TIMEOUT": "forever"}),  # 4
]


def test_agent_answers_byte_for_byte_as_the_plugin_does(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    (caller / "resolv.conf").write_text("nameserver 192.0.2.53\nsearch example.test\n")
    served, direct = tmp_path / "served.db", tmp_path / "direct.db"
    for command, config, env in SCRIPT:
        through = call(command, config, served, caller, agent.socket, env)
        alone = call(command, config, direct, caller, None, env)
        assert (through.code, through.stdout) == (alone.code, alone.stdout), (command, config, env)
    codes = [call_event["status"] for call_event in agent.events("call")]
    assert len(codes) == len(SCRIPT), "every call went through the agent"
    errors = [json.loads(event["answer"])["code"] for event in agent.events("call") if event["status"]]
    assert errors == [100, 100, 50, 6, 6, 4, 7, 102, 4]
    assert held(served) == held(direct) == []  # DELs freed c1 and owner-a, GC freed c5


def test_relative_store_path_is_the_callers_not_the_agents(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    run = call("ADD", ecs(V4), "rel/store.db", caller, agent.socket)
    assert run.code == 0, run
    assert held(caller / "rel" / "store.db") == [("10.9.0.2", f"cni:{NET}/c1/eth0")]
    assert not (tmp_path / "agent-cwd" / "rel").exists()
    [logged] = agent.events("call")  # the network and the address, what an operator looks for in the log
    assert (logged["network"], logged["addresses"], logged["container"]) == (NET, ["10.9.0.2/24"], "c1")


def test_socket_is_0660_in_a_0750_folder(agent: AgentProcess) -> None:
    assert stat.S_ISSOCK(os.lstat(agent.socket).st_mode)
    assert stat.S_IMODE(os.lstat(agent.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(agent.socket.parent).st_mode) == 0o750


# -- mixing the two paths -----------------------------------------------------------------


def test_agent_and_direct_calls_in_parallel_on_one_store(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    """Eight processes, half through the agent and half direct: first each makes 12 ADDs,
    then each DELs every other one of its containers. No address is held twice, every
    answer's address is held by its container, and nothing else is held."""
    store = tmp_path / "mixed.db"
    workers, per_worker = 8, 12
    conf, out = tmp_path / "mixed.json", tmp_path / "out"
    conf.write_text(json.dumps(ecs({"ipv4-subnet": "10.9.0.0/22"})))
    out.mkdir()

    def in_parallel(script: str) -> None:
        procs = []
        for w in range(workers):
            path_env: dict[str, str | None] = (
                {"CNIPAM_AGENT_SOCKET": str(agent.socket)} if w % 2 else {"CNIPAM_AGENT": "off"}
            )
            extra = {
                **path_env,
                "EXE": installed("cnipam"),
                "CONF": str(conf),
                "OUT": str(out),
                "N": str(per_worker),
                "W": f"w{w}",
            }
            procs.append(subprocess.Popen(["sh", "-c", script], env=plugin_env("ADD", store, extra), cwd=caller))
        assert [proc.wait(120) for proc in procs] == [0] * workers

    in_parallel(
        'for i in $(seq 1 "$N"); do CNI_CONTAINERID="$W-$i" "$EXE" < "$CONF" > "$OUT/$W-$i.json" || exit 1; done'
    )
    answers = {
        result.stem: json.loads(result.read_text())["ips"][0]["address"].split("/")[0] for result in out.iterdir()
    }
    assert len(answers) == workers * per_worker
    assert len(set(answers.values())) == len(answers), "an address was handed out twice"
    assert sorted(held(store)) == sorted((ip, f"cni:{NET}/{name}/eth0") for name, ip in answers.items())

    in_parallel('for i in $(seq 1 2 "$N"); do CNI_COMMAND=DEL CNI_CONTAINERID="$W-$i" "$EXE" < "$CONF" || exit 1; done')
    kept = {f"w{w}-{i}" for w in range(workers) for i in range(2, per_worker + 1, 2)}
    assert sorted(held(store)) == sorted((answers[name], f"cni:{NET}/{name}/eth0") for name in kept)
    served = [event for event in agent.events("call") if event["status"] == 0]
    assert len(served) == (workers // 2) * (per_worker + per_worker // 2)


def a_reader_beside_leaves_the_agent_intact(agent: AgentProcess, store: Path) -> None:
    """cnipamctl reads the store in another process while the agent holds it: the agent
    must still hold no deleted -wal or -shm afterwards (issue 19)."""
    ctl = subprocess.run(
        [installed("cnipamctl"), "--db", str(store), "leases", "--json"], capture_output=True, timeout=CALL_TIMEOUT
    )
    assert ctl.returncode == 0, ctl.stderr
    assert deleted_store_files(agent.pid) == []


def test_two_spellings_of_one_store_and_a_direct_reader_leave_the_agent_locks_intact(
    agent: AgentProcess, tmp_path: Path, caller: Path
) -> None:
    """Issue 19's sequence: two calls through the agent that name one file under two
    timeouts made the agent open the file twice, and closing the second descriptor
    dropped the first connection's locks; a direct reader then deleted the WAL the agent
    still wrote into, and a direct ADD handed out the agent's last address again."""
    store = caller / "s.db"
    config = host_local({"subnet": "10.94.0.0/24"}, "1.0.0")
    first = call("ADD", config, store, caller, agent.socket, {"CNI_CONTAINERID": "e1"})
    (caller / "sub").mkdir()
    second = call(
        "ADD",
        config,
        "./sub/../s.db",
        caller,
        agent.socket,
        {"CNI_CONTAINERID": "e2", "IPAM_DB_CONNECTION_TIMEOUT": "3s"},
    )
    assert (first.code, second.code) == (0, 0), (first, second)
    a_reader_beside_leaves_the_agent_intact(agent, store)
    third = call("ADD", config, store, caller, agent.socket, {"CNI_CONTAINERID": "e3"})
    direct = call("ADD", config, store, caller, None, {"CNI_CONTAINERID": "d1"})
    addresses = [run.out["ips"][0]["address"] for run in (first, second, third, direct)]
    assert len(set(addresses)) == 4, addresses
    assert agent.stop() == 0
    handles = {handle for _, handle in held(store)}
    assert handles == {f"cni:{NET}/{name}/eth0" for name in ("e1", "e2", "e3", "d1")}
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_config_file_naming_a_held_store_is_refused(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    """A `resolvConf` that names the store (or its -shm) would make cnipamd open and
    close a descriptor of a database it holds, which drops the connection's locks just
    as issue 19's second open did: refused (code 5), and the agent's files stay intact."""
    store = caller / "s.db"
    config = host_local({"subnet": "10.94.0.0/24"}, "1.0.0")
    assert call("ADD", config, store, caller, agent.socket, {"CNI_CONTAINERID": "e1"}).code == 0
    for named in ("s.db", "./s.db-shm", str(store)):
        bad = host_local({"subnet": "10.94.0.0/24", "resolvConf": named}, "1.0.0")
        run = call("ADD", bad, store, caller, agent.socket, {"CNI_CONTAINERID": "e2"})
        assert run.code == 1 and run.out["code"] == 5 and "holds open" in run.out["msg"], run
    naming_the_store = host_local({"subnet": "10.94.0.0/24", "resolvConf": "s.db"}, "1.0.0")
    alone = call("ADD", naming_the_store, store, caller, None, {"CNI_CONTAINERID": "d0"})
    assert alone.code == 0, alone  # the plugin on its own reads it before it opens the store: harmless, and not refused
    a_reader_beside_leaves_the_agent_intact(agent, store)
    second = call("ADD", config, store, caller, agent.socket, {"CNI_CONTAINERID": "e3"})
    direct = call("ADD", config, store, caller, None, {"CNI_CONTAINERID": "d1"})
    assert second.out["ips"][0]["address"] != direct.out["ips"][0]["address"], (second, direct)
    assert agent.stop() == 0
    assert {handle for _, handle in held(store)} == {f"cni:{NET}/{name}/eth0" for name in ("e1", "d0", "e3", "d1")}


# -- when the agent is not there --------------------------------------------------------------


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed agent leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()


def test_stale_socket_means_direct_and_a_new_agent_replaces_it(tmp_path: Path, caller: Path) -> None:
    sock = tmp_path / "run" / "cnipamd.sock"
    stale_socket(sock)
    run = call("ADD", ecs(V4), tmp_path / "s.db", caller, sock)
    assert run.code == 0, run
    assert held(tmp_path / "s.db") == [("10.9.0.2", f"cni:{NET}/c1/eth0")]
    agent = start_agent(tmp_path, sock=sock)
    try:
        assert call("DEL", ecs(V4), tmp_path / "s.db", caller, sock).code == 0
        assert held(tmp_path / "s.db") == []
        assert [event["command"] for event in agent.events("call")] == ["DEL"]
    finally:
        assert agent.stop() == 0


def test_a_second_agent_on_a_live_socket_refuses_to_start(agent: AgentProcess, tmp_path: Path) -> None:
    second = start_agent(tmp_path, sock=agent.socket, expect_listening=False)
    assert second.process.wait(CALL_TIMEOUT) == 2
    assert "another cnipamd" in second.events("fatal")[0]["error"]
    assert stat.S_ISSOCK(os.lstat(agent.socket).st_mode)
    assert call("ADD", ecs(V4), tmp_path / "a.db", tmp_path, agent.socket).code == 0
    assert len(agent.events("call")) == 1


def test_agent_killed_mid_run_then_calls_go_direct(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    store = tmp_path / "k.db"
    assert call("ADD", ecs(V4), store, caller, agent.socket, {"CNI_CONTAINERID": "before"}).code == 0
    agent.process.kill()
    agent.process.wait(CALL_TIMEOUT)
    assert agent.socket.exists()  # SIGKILL leaves the socket file behind
    run = call("ADD", ecs(V4), store, caller, agent.socket, {"CNI_CONTAINERID": "after"})
    assert run.code == 0, run
    assert call("DEL", ecs(V4), store, caller, agent.socket, {"CNI_CONTAINERID": "before"}).code == 0
    assert held(store) == [("10.9.0.3", f"cni:{NET}/after/eth0")]


def test_agent_dying_with_the_request_sent_answers_try_again(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    """The plugin cannot know whether the call happened, so it neither runs it again nor
    claims success: CNI error 11, which runtimes retry."""
    store = tmp_path / "d.db"
    agent.process.send_signal(signal.SIGSTOP)  # accepts nothing, but the kernel queues the connection
    try:
        env = plugin_env("ADD", store, {"CNI_CONTAINERID": "c1", "CNIPAM_AGENT_SOCKET": str(agent.socket)})
        request = tmp_path / "request.json"
        request.write_bytes(as_stdin(ecs(V4)))
        with open(request, "rb") as stdin:
            pipe = subprocess.PIPE
            plugin = subprocess.Popen([installed("cnipam")], stdin=stdin, stdout=pipe, stderr=pipe, env=env, cwd=caller)
        time.sleep(1.0)  # it connects and sends, then waits for the answer
        assert plugin.poll() is None
    finally:
        agent.process.kill()
        agent.process.wait(CALL_TIMEOUT)
    out, err = plugin.communicate(timeout=CALL_TIMEOUT)
    assert plugin.returncode == 1, (out, err)
    answer = json.loads(out)
    assert answer["code"] == 11 and answer["cniVersion"] == "1.0.0" and "try again" in answer["msg"]
    assert held(store) is None or held(store) == []  # not run directly behind the agent's back


def test_forwarding_switched_off_never_touches_the_agent(agent: AgentProcess, tmp_path: Path, caller: Path) -> None:
    env: dict[str, str | None] = {"CNIPAM_AGENT_SOCKET": str(agent.socket), "CNIPAM_AGENT": "off"}
    assert call("ADD", ecs(V4), tmp_path / "o.db", caller, None, env).code == 0
    assert agent.events("call") == []


def test_sigterm_removes_the_socket(agent: AgentProcess) -> None:
    assert agent.stop() == 0
    assert not agent.socket.exists() and not Path(f"{agent.socket}.lock").exists()  # nothing left behind
    assert [event["event"] for event in agent.events()][-2:] == ["stopping", "stopped"]


def test_a_socket_in_a_missing_folder_tree_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    """Only the socket's own folder is made (/run/cnipam): a mistyped --socket is refused."""
    refused = start_agent(tmp_path, sock=tmp_path / "missing" / "dir" / "a.sock", expect_listening=False)
    assert refused.process.wait(CALL_TIMEOUT) == 2
    [fatal] = refused.events("fatal")
    assert "does not exist" in fatal["error"] and str(tmp_path / "missing") in fatal["error"]
    assert not (tmp_path / "missing").exists()


# -- the leak reconciler ------------------------------------------------------------------------


def cache_entry(cache_dir: Path, network: str, container: str, ifname: str = "eth0") -> None:
    """A libcni result cache entry, as a runtime writes it after an ADD."""
    results = cache_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    entry = {"kind": "cniCacheV1", "containerId": container, "config": "", "ifName": ifname, "networkName": network}
    (results / f"{network}-{container}-{ifname}").write_text(json.dumps(entry))


def test_reconciler_releases_a_lease_without_cache_entry_after_the_grace_period(tmp_path: Path, caller: Path) -> None:
    store, cache = tmp_path / "r.db", tmp_path / "cni-cache"
    grace = 2.0
    for container in ("alive", "gone"):
        assert call("ADD", ecs(V4), store, caller, None, {"CNI_CONTAINERID": container}).code == 0
    assert call("ADD", ecs({**V4, "id": "anonymous"}), store, caller, None, {"CNI_CONTAINERID": None}).code == 0
    assert call("ADD", ecs(V4, name="uncached"), store, caller, None, {"CNI_CONTAINERID": "other"}).code == 0
    cache_entry(cache, NET, "alive")
    added = time.monotonic()
    agent = start_agent(
        tmp_path,
        "--reconcile-interval=0.2s",
        f"--reconcile-grace={grace}",
        f"--cni-cache-dir={cache}",
        f"--db={store}",
    )
    try:
        assert len(held(store)) == 4
        deadline = time.monotonic() + 20
        while len(held(store)) == 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert time.monotonic() - added >= grace * 0.9, "released before the grace period was over"
        assert sorted(handle or "" for _, handle in held(store)) == [
            f"cni:{NET}/alive/eth0",
            "cni:uncached/other/eth0",
            "id:anonymous",
        ]
        released = agent.events("released-leak")
        assert [(event["network"], event["container"], event["ip"]) for event in released] == [
            (NET, "gone", "10.9.0.3")
        ]
    finally:
        assert agent.stop() == 0


def test_cnipamd_finishes_the_reboot_repair_at_its_start(tmp_path: Path, caller: Path) -> None:
    store = tmp_path / "rb.db"
    before = {}
    for container in ("a", "b"):
        run = call("ADD", ecs(V4), store, caller, None, {"CNI_CONTAINERID": container, "CNIPAM_BOOT_ID": "boot-before"})
        assert run.code == 0
        before[container] = json.loads(run.stdout)["ips"][0]["address"]
    agent = start_agent(tmp_path, f"--db={store}", env={"CNIPAM_BOOT_ID": "boot-after"})
    try:
        assert held(store) == []  # released before the first call came
        (event,) = agent.events("released-earlier-boots")
        assert (event["leases"], event["boot"]) == (2, "boot-after")
        again = call(
            "ADD", ecs(V4), store, caller, agent.socket, {"CNI_CONTAINERID": "b", "CNIPAM_BOOT_ID": "boot-after"}
        )
        assert (
            json.loads(again.stdout)["ips"][0]["address"] == before["b"]
        )  # the returning container gets its address back
    finally:
        assert agent.stop() == 0


def test_agent_serves_an_etcd_store_as_the_plugin_does(
    agent: AgentProcess, tmp_path: Path, caller: Path, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    """The agent keeps the etcd connection open; its answers and the leases it writes are
    the direct path's, and the two paths mixed on one etcd prefix hand out no address twice."""
    need_etcd()
    store = store_object(etcd_endpoint, etcd_prefix, str(tmp_path / "lk"))
    config = ecs(DUAL) | {"ipam": {**ecs(DUAL)["ipam"], "store": store}}
    answers = []
    for n in range(6):
        run = call(
            "ADD", config, tmp_path / "unused.db", caller, agent.socket if n % 2 else None, {"CNI_CONTAINERID": f"c{n}"}
        )
        assert run.code == 0, run
        answers.append(tuple(entry["address"] for entry in json.loads(run.stdout)["ips"]))
    assert len(set(answers)) == 6 and len({ip for pair in answers for ip in pair}) == 12
    assert len([event for event in agent.events("call") if event["status"] == 0]) == 3
    again = call("ADD", config, tmp_path / "unused.db", caller, agent.socket, {"CNI_CONTAINERID": "c0"})
    assert (
        tuple(entry["address"] for entry in json.loads(again.stdout)["ips"]) == answers[0]
    )  # made directly, found via the agent
    for n in range(6):
        assert (
            call(
                "DEL",
                config,
                tmp_path / "unused.db",
                caller,
                agent.socket if n % 2 == 0 else None,
                {"CNI_CONTAINERID": f"c{n}"},
            ).code
            == 0
        )
    assert not (tmp_path / "unused.db").exists()


def test_relative_etcd_files_are_the_callers_not_the_agents(
    agent: AgentProcess, tmp_path: Path, caller: Path, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    """`lockDir` and `passwordFile` name files the way `dataDir` does: relative to the
    runtime's working folder, whether the call is answered directly or by cnipamd."""
    need_etcd()
    store = store_object(etcd_endpoint, etcd_prefix, "lk")
    config = ecs(V4) | {"ipam": {**ecs(V4)["ipam"], "store": store}}
    assert call("ADD", config, tmp_path / "unused.db", caller, agent.socket).code == 0
    assert (caller / "lk" / "etcd.lock").exists() and not (tmp_path / "agent-cwd" / "lk").exists()
    secret = {**store, "username": "cni", "passwordFile": "no-such-secret", "allowInsecure": True}
    config = ecs(V4) | {"ipam": {**ecs(V4)["ipam"], "store": secret}}
    served, direct = (call("ADD", config, tmp_path / "unused.db", caller, socket) for socket in (agent.socket, None))
    assert served.code == direct.code != 0 and served.stdout == direct.stdout
    assert str(caller / "no-such-secret").encode() in served.stdout
