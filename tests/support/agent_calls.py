"""Plugin calls through a real `cnipamd` or directly, as the agent's tests make them: the
installed `cnipam` pointed at the agent's socket with CNIPAM_AGENT_SOCKET (or told to
run on its own), its exact exit status and output, and the agent started on a socket in
a test's folder.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cnipam.testing.agent_process import AgentProcess
from tests.support.plugin_calls import CALL_TIMEOUT, as_stdin, installed, plugin_env

NET = "agentnet"
V4 = {"ipv4-subnet": "10.9.0.0/24"}
DUAL = {**V4, "ipv6-subnet": "2001:db8:9::/64"}


def ecs(ipam: Mapping[str, Any], version: str = "1.0.0", name: str = NET) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "type": "ecs-bridge", "ipam": {"type": "ecs-ipam", **ipam}}


def host_local(ipam: Mapping[str, Any], version: str = "1.1.0", name: str = NET) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "type": "bridge", "ipam": {"type": "cnipam", **ipam}}


class Raw:
    """One plugin process's exit status and exact output."""

    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr.decode("utf-8", "replace")
        assert "Traceback" not in self.stdout.decode("utf-8", "replace") + self.stderr, self

    @property
    def out(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def __repr__(self) -> str:
        return f"Raw(code={self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def call(
    command: str,
    config: Mapping[str, Any] | bytes,
    db: Path | str,
    cwd: Path,
    agent: Path | None,
    env: Mapping[str, str | None] | None = None,
) -> Raw:
    """One plugin call through the agent listening on `agent`, or directly (agent None)."""
    extra: dict[str, str | None] = {"CNI_CONTAINERID": "c1"}
    extra.update({"CNIPAM_AGENT_SOCKET": str(agent)} if agent else {"CNIPAM_AGENT": "off"})
    extra.update(env or {})
    proc = subprocess.run(
        [installed("cnipam")],
        input=as_stdin(config),
        env=plugin_env(command, db, extra),
        capture_output=True,
        cwd=cwd,
        timeout=CALL_TIMEOUT,
    )
    return Raw(proc)


def start_agent(
    tmp: Path,
    *args: str,
    sock: Path | None = None,
    expect_listening: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> AgentProcess:
    agent = AgentProcess(
        installed("cnipamd"), sock or tmp / "run" / "cnipamd.sock", tmp, *args, env=env, preexec_fn=preexec_fn
    )
    try:
        agent.start(wait=expect_listening)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return agent
