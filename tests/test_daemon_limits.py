"""Neither daemon can be starved: `cnipamd` and `cnipam-docker` as real processes, held by
idle and trickling connections and run out of file descriptors (docs/security.md,
"Connections").

Each caps the connections it serves at once and refuses the rest at once (the agent
with a decline, so the plugin runs the call itself; the driver with a 503), logging one
line when the cap is reached; a request must arrive whole within one deadline however
slowly it trickles; out of descriptors, the waiting connection is refused with a spare
one instead of being retried in a busy loop; and the agent closes stores nobody uses.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CALL_TIMEOUT, as_stdin, installed, plugin_env
from test_agent import V4, Agent, call, ecs, start_agent
from test_docker_server import Driver

LOW_LIMIT = 48  # open files; both daemons start with a dozen


def connect(path: Path | str, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(CALL_TIMEOUT)
        client.connect(str(path))
        clients.append(client)
    return clients


def close_all(clients: list[socket.socket]) -> None:
    for client in clients:
        client.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def busy_share(pid: int, seconds: float = 1.5) -> float:
    """The share of one core the process used over `seconds` of wall time."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, LOW_LIMIT))


def open_files(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return found


def plugin_through(sock: Path, db: Path, cwd: Path) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run(
        [installed("cnipam")],
        input=as_stdin(ecs(V4)),
        env=plugin_env("ADD", db, {"CNI_CONTAINERID": f"c{time.monotonic_ns()}", "CNIPAM_AGENT_SOCKET": str(sock)}),
        capture_output=True,
        cwd=cwd,
        timeout=CALL_TIMEOUT,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr.decode()


# -- cnipamd -----------------------------------------------------------------------------------------


@pytest.fixture
def limited_agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_agent(tmp_path, "--max-calls", "2", "--request-timeout", "30s")
    yield agent
    assert agent.stop() == 0


def test_agent_at_its_call_limit_declines_and_the_plugin_runs_directly(limited_agent: Agent, tmp_path: Path) -> None:
    idle = connect(limited_agent.socket, 2)  # two calls that never send their request
    try:
        for _ in range(3):
            code, out, err = plugin_through(limited_agent.socket, tmp_path / "s.db", tmp_path)
            assert code == 0 and "ips" in out, out
            assert "limit of 2 calls" in err and "running it directly" in err, err
        assert limited_agent.events("call") == []
        assert [event["state"] for event in limited_agent.events("call-limit")] == [
            "reached"
        ]  # one line, not one per call
    finally:
        close_all(idle)
    wait_for(lambda: len(limited_agent.events("dropped")) == 2, "the idle calls to end")
    code, _, err = plugin_through(limited_agent.socket, tmp_path / "s.db", tmp_path)
    assert code == 0 and err == ""
    assert len(limited_agent.events("call")) == 1
    assert [event["state"] for event in limited_agent.events("call-limit")] == ["reached", "over"]


def test_agent_drops_a_trickling_request_at_its_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s keeps a per-read timeout happy for ever; the deadline is for
    the whole request."""
    agent = start_agent(tmp_path, "--request-timeout", "1s")
    try:
        [client] = connect(agent.socket, 1)
        client.settimeout(0.2)
        started = time.monotonic()
        frame = (100000).to_bytes(4, "big") + b"Q" * 100000
        closed = False
        for byte in frame:
            try:
                client.send(bytes((byte,)))
                if client.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 20:
                break
        assert closed and time.monotonic() - started < 10
        assert "no whole request within 1 s" in agent.events("dropped")[0]["reason"]
        client.close()
    finally:
        assert agent.stop() == 0


def test_agent_out_of_descriptors_declines_without_spinning(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "--request-timeout", "60s", preexec_fn=low_file_limit)
    flood = connect(agent.socket, 2 * LOW_LIMIT)  # far more than it can accept
    try:
        wait_for(lambda: agent.events("out-of-descriptors"), "the agent to run out")
        assert busy_share(agent.proc.pid) < 0.3, "cnipamd spins on a failing accept"
        code, out, err = plugin_through(agent.socket, tmp_path / "s.db", tmp_path)
        assert code == 0 and "ips" in out, out
        assert "run out of file descriptors" in err, err
        assert [event["state"] for event in agent.events("out-of-descriptors")] == ["reached"]
        assert agent.events("accept-failed") == []
    finally:
        close_all(flood)
    wait_for(lambda: len(open_files(agent.proc.pid)) < LOW_LIMIT - 8, "the flood to be dropped")
    assert call("ADD", ecs(V4), tmp_path / "s.db", tmp_path, agent.socket).code == 0
    assert [event["state"] for event in agent.events("out-of-descriptors")] == ["reached", "over"]
    assert agent.stop() == 0


def test_agent_closes_stores_it_has_not_used(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "--store-idle", "1s", "--max-stores", "1")
    try:
        first, second = tmp_path / "a.db", tmp_path / "b.db"
        assert call("ADD", ecs(V4), first, tmp_path, agent.socket).code == 0
        assert str(first) in open_files(agent.proc.pid)
        assert call("ADD", ecs(V4), second, tmp_path, agent.socket).code == 0  # over --max-stores: the idle one goes
        files = open_files(agent.proc.pid)
        assert str(second) in files and str(first) not in files and str(first) + ".lock" not in files
        wait_for(lambda: str(second) not in open_files(agent.proc.pid), "the idle store to be closed")
        assert [event["store"] for event in agent.events("store-closed")] == [str(second)]
        assert call("DEL", ecs(V4), second, tmp_path, agent.socket).code == 0  # opened again when needed
        assert len(agent.events("call")) == 3
    finally:
        assert agent.stop() == 0


# -- cnipam-docker -----------------------------------------------------------------------------------


def exchange(sock: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(CALL_TIMEOUT)
        client.connect(sock)
        received = b""
        try:
            client.sendall(request)
        except BrokenPipeError:  # refused before it was read: the answer is waiting all the same
            pass
        try:
            while chunk := client.recv(4096):
                received += chunk
        except ConnectionResetError:  # refused unread: the answer came first, then the reset
            pass
    assert received, "no answer at all"
    return received


ACTIVATE = b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def driver_events(driver: Driver, kind: str) -> list[dict[str, object]]:
    lines = (driver.folder / "stderr.log").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def test_driver_at_its_connection_limit_answers_503(tmp_path: Path) -> None:
    driver = Driver(tmp_path, "--max-connections", "2")
    try:
        idle = connect(driver.socket, 2)
        time.sleep(0.3)  # accepted: each holds a thread
        for _ in range(3):
            answer = exchange(driver.socket, ACTIVATE)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert "limit of 2 connections" in json.loads(answer.partition(b"\r\n\r\n")[2])["Err"]
        assert [event["state"] for event in driver_events(driver, "connection-limit")] == ["reached"]
        close_all(idle)
        wait_for(lambda: exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200"), "the idle connections to end")
        assert [event["state"] for event in driver_events(driver, "connection-limit")] == ["reached", "over"]
    finally:
        assert driver.stop() == 0


def test_driver_drops_a_trickling_request_at_its_deadline(tmp_path: Path) -> None:
    driver = Driver(tmp_path, "--read-timeout", "30s", "--request-timeout", "1s")
    try:
        [client] = connect(driver.socket, 1)
        client.settimeout(0.2)
        started = time.monotonic()
        closed = False
        for byte in b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"p" * 1000:
            try:
                client.send(bytes((byte,)))
                if client.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 20:
                break
        assert closed and time.monotonic() - started < 10
        client.close()
        assert exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200")
    finally:
        assert driver.stop() == 0


def test_driver_out_of_descriptors_answers_503_without_spinning(tmp_path: Path) -> None:
    driver = Driver(tmp_path, "--read-timeout", "60s", preexec_fn=low_file_limit)
    flood = connect(driver.socket, 2 * LOW_LIMIT)
    try:
        wait_for(lambda: driver_events(driver, "out-of-descriptors"), "the driver to run out")
        assert busy_share(driver.process.pid) < 0.3, "cnipam-docker spins on a failing accept"
        answer = exchange(driver.socket, ACTIVATE)
        assert answer.startswith(b"HTTP/1.1 503") and b"file descriptors" in answer, answer
        assert [event["state"] for event in driver_events(driver, "out-of-descriptors")] == ["reached"]
    finally:
        close_all(flood)
    wait_for(lambda: exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200"), "the driver to recover")
    assert [event["state"] for event in driver_events(driver, "out-of-descriptors")] == ["reached", "over"]
    assert driver.stop() == 0
