"""Shared fixtures: the installed plugin executables, a store path in tmp, and a helper
that runs the plugin the way a CNI runtime does (environment + stdin in, stdout out).
The etcd fixtures (`etcd_endpoint`, `etcd_prefix`) live in etcd_server.py and are
imported here so every module can use them.

The plugin is always the *installed* executable (`pip install .`), found next to the
interpreter, never through PATH (PATH holds pyenv shims, which are slow bash scripts).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from etcd_server import etcd_endpoint, etcd_prefix  # noqa: F401 - the etcd fixtures, for every test module

SCRIPTS = sysconfig.get_path("scripts")
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
CALL_TIMEOUT = 30.0  # a single plugin call; generous, only to turn a hang into a failure


class PluginRun(NamedTuple):
    code: int  # exit status
    out: Any  # stdout parsed as JSON, or None when stdout was empty
    err: str  # stderr


def installed(name: str) -> str:
    path = os.path.join(SCRIPTS, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `pip install .` first")
    return path


def plugin_env(command: str, db_path: Path | str, env_extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment a runtime gives the plugin; a value of None in env_extra removes that variable."""
    env = dict(BASE_ENV)
    env.update(
        CNI_COMMAND=command,
        CNI_IFNAME="eth0",
        CNI_NETNS="/var/run/netns/test",
        CNI_PATH="/opt/cni/bin",
        IPAM_DB_PATH=str(db_path),
    )
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def as_stdin(config: Mapping[str, Any] | bytes) -> bytes:
    return config if isinstance(config, bytes) else json.dumps(config).encode()


def parse_output(stdout: bytes, stderr: bytes) -> tuple[Any, str]:
    """Every call's output must be clean: no traceback, and stdout empty or one JSON document."""
    text, err = stdout.decode("utf-8"), stderr.decode("utf-8", "replace")
    assert "Traceback" not in text + err, f"traceback printed:\nstdout={text}\nstderr={err}"
    return (json.loads(text) if text.strip() else None), err


def dump_leases(db_path: Path | str) -> list[tuple[Any, ...]] | None:
    """Every row of the leases table (None when the store file does not exist)."""
    if not os.path.exists(db_path):
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        has_table = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'leases'").fetchone()
        if not has_table:
            return []
        return db.execute(
            "SELECT family, ip, kind, pool, slot, handle, network, container_id, ifname, created FROM leases ORDER BY family, address"
        ).fetchall()
    finally:
        db.close()


def snapshot(db_path: Path | str) -> dict[str, list[tuple[Any, ...]]] | None:
    """The whole store's contents (leases, free intervals, round-robin cursors), to compare before/after."""
    if not os.path.exists(db_path):
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(db.execute(f"SELECT * FROM {name}").fetchall()) for name in tables}
    finally:
        db.close()


def held(db_path: Path | str) -> list[tuple[str, str | None]]:
    """(ip, handle) of every held lease (gateway reservations left out)."""
    return [(row[1], row[5]) for row in dump_leases(db_path) or [] if row[2] == "lease"]


RunPlugin = Callable[..., PluginRun]


class Spawned(NamedTuple):
    """A plugin process started in the background, its stdin/stdout/stderr in files."""

    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    def finish(self, timeout: float = CALL_TIMEOUT) -> PluginRun:
        code = self.proc.wait(timeout)
        out, err = parse_output(self.out_path.read_bytes(), self.err_path.read_bytes())
        return PluginRun(code, out, err)


def spawn(
    exe: str,
    command: str,
    config: Mapping[str, Any] | bytes,
    db_path: Path | str,
    workdir: Path,
    tag: str,
    env_extra: Mapping[str, str | None] | None = None,
) -> Spawned:
    """Start one plugin call without waiting for it (files, not pipes: no reader needed)."""
    stdin_path, out_path, err_path = (workdir / f"{tag}.{suffix}" for suffix in ("in", "out", "err"))
    stdin_path.write_bytes(as_stdin(config))
    with open(stdin_path, "rb") as stdin, open(out_path, "wb") as stdout, open(err_path, "wb") as stderr:
        proc = subprocess.Popen(
            [exe], stdin=stdin, stdout=stdout, stderr=stderr, env=plugin_env(command, db_path, env_extra), cwd=workdir
        )
    return Spawned(proc, out_path, err_path)


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
