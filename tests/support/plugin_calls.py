"""Running the installed executables as a CNI runtime runs them: environment + stdin in,
stdout out, and every output checked for a traceback.

The plugin is always the *installed* executable (`pip install .`), found next to the
interpreter, never through PATH (PATH holds pyenv shims, which are slow bash scripts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

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
