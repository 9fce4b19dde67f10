"""`cnipamd` cannot be starved: a real agent held by idle and trickling connections and run
out of file descriptors (docs/security.md, fix 14).

It caps the calls it answers at once and declines the rest at once, so their plugins
run the calls themselves, logging one line when the cap is reached and one when it is
over; a request must arrive whole within one deadline however slowly it trickles; out
of descriptors, the waiting connection is declined with a spare descriptor instead of
being retried in a busy loop; and stores nobody uses are closed. Every agent a test
starts is stopped on every way out of it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cnipam.testing.agent_process import AgentProcess
from tests.support.agent_calls import V4, call, ecs, start_agent
from tests.support.daemon_load import (
    LOW_LIMIT,
    busy_share,
    close_all,
    connect,
    daemons_stopped_after,
    low_file_limit,
    open_files,
    trickle,
    wait_for,
)
from tests.support.plugin_calls import CALL_TIMEOUT, as_stdin, installed, plugin_env


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


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    yield from daemons_stopped_after(lambda *args, **options: start_agent(tmp_path, *args, **options))


def test_agent_at_its_call_limit_declines_and_the_plugin_runs_directly(
    agents: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = agents("--max-calls", "2", "--request-timeout", "30s")
    idle = connect(agent.socket, 2)  # two calls that never send their request
    try:
        for _ in range(3):
            code, out, err = plugin_through(agent.socket, tmp_path / "s.db", tmp_path)
            assert code == 0 and "ips" in out, out
            assert "limit of 2 calls" in err and "running it directly" in err, err
        assert agent.events("call") == []
        assert [event["state"] for event in agent.events("call-limit")] == ["reached"]  # one line, not one per call
    finally:
        close_all(idle)
    wait_for(lambda: len(agent.events("dropped")) == 2, "the idle calls to end")
    code, _, err = plugin_through(agent.socket, tmp_path / "s.db", tmp_path)
    assert code == 0 and err == ""
    assert len(agent.events("call")) == 1
    assert [event["state"] for event in agent.events("call-limit")] == ["reached", "over"]
    assert agent.stop() == 0


def test_agent_drops_a_trickling_request_at_its_deadline(agents: Callable[..., AgentProcess]) -> None:
    """One byte every 0.2 s keeps a per-read timeout happy for ever; the deadline is for
    the whole request."""
    agent = agents("--request-timeout", "1s")
    assert trickle(agent.socket, (100000).to_bytes(4, "big") + b"Q" * 100000) < 10
    assert "no whole request within 1 s" in agent.events("dropped")[0]["reason"]
    assert agent.stop() == 0


def test_agent_out_of_descriptors_declines_without_spinning(
    agents: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = agents("--request-timeout", "60s", preexec_fn=low_file_limit)
    flood = connect(agent.socket, 2 * LOW_LIMIT)  # far more than it can accept
    try:
        wait_for(lambda: agent.events("out-of-descriptors"), "the agent to run out")
        assert busy_share(agent.pid) < 0.3, "cnipamd spins on a failing accept"
        code, out, err = plugin_through(agent.socket, tmp_path / "s.db", tmp_path)
        assert code == 0 and "ips" in out, out
        assert "run out of file descriptors" in err, err
        assert [event["state"] for event in agent.events("out-of-descriptors")] == ["reached"]
        assert agent.events("accept-failed") == []
    finally:
        close_all(flood)
    wait_for(lambda: len(open_files(agent.pid)) < LOW_LIMIT - 8, "the flood to be dropped")
    assert call("ADD", ecs(V4), tmp_path / "s.db", tmp_path, agent.socket).code == 0
    assert [event["state"] for event in agent.events("out-of-descriptors")] == ["reached", "over"]
    assert agent.stop() == 0


def test_agent_closes_stores_it_has_not_used(agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = agents("--store-idle", "1s", "--max-stores", "1")
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert call("ADD", ecs(V4), first, tmp_path, agent.socket).code == 0
    assert str(first) in open_files(agent.pid)
    assert call("ADD", ecs(V4), second, tmp_path, agent.socket).code == 0  # over --max-stores: the idle one goes
    files = open_files(agent.pid)
    assert str(second) in files and str(first) not in files and str(first) + ".lock" not in files
    wait_for(lambda: str(second) not in open_files(agent.pid), "the idle store to be closed")
    assert [event["store"] for event in agent.events("store-closed")] == [str(second)]
    assert call("DEL", ecs(V4), second, tmp_path, agent.socket).code == 0  # opened again when needed
    assert len(agent.events("call")) == 3
    assert agent.stop() == 0
