"""Shared fixtures: the installed plugin executables, a store path in tmp, a helper that
runs the plugin the way a CNI runtime does (tests/support/plugin_calls.py), and the etcd
fixtures of tests/support/etcd.py, imported here so every module can use them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import auth_etcd, etcd_endpoint, etcd_prefix, private_etcd  # noqa: F401 - fixtures for every module
from tests.support.plugin_calls import CALL_TIMEOUT, PluginRun, RunPlugin, as_stdin, installed, parse_output, plugin_env


@pytest.fixture(scope="session")
def plugin_exe() -> str:
    return installed("cnipam")


@pytest.fixture(scope="session")
def ecs_exe() -> str:
    return installed("ecs-ipam")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "ipam.db"


@pytest.fixture
def run_plugin(plugin_exe: str, db_path: Path, tmp_path: Path) -> RunPlugin:
    def run(
        command: str,
        config: Mapping[str, Any] | bytes,
        env_extra: Mapping[str, str | None] | None = None,
        exe: str | None = None,
    ) -> PluginRun:
        proc = subprocess.run(
            [exe or plugin_exe],
            input=as_stdin(config),
            env=plugin_env(command, db_path, env_extra),
            capture_output=True,
            cwd=tmp_path,
            timeout=CALL_TIMEOUT,
        )
        out, err = parse_output(proc.stdout, proc.stderr)
        return PluginRun(proc.returncode, out, err)

    return run
