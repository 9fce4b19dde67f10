"""Running the installed `cnipamctl` (and the plugin that fills its store) as an operator
does: every call checked for a traceback, every refusal for its one line and status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

SCRIPTS = sysconfig.get_path("scripts")
CTL = os.path.join(SCRIPTS, "cnipamctl")
PLUGIN = os.path.join(SCRIPTS, "cnipam")
BASE_ENV = {"PATH": "/usr/bin:/bin", "CNI_NETNS": "/var/run/netns/test", "CNI_PATH": "/opt/cni/bin", "LANG": "C.UTF-8"}


class Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code, self.out, self.err = done.returncode, done.stdout, done.stderr

    def json(self) -> Any:
        return json.loads(self.out)


def call(*args: str, stdin: str | None = None, cwd: Path | None = None, **env: str) -> Run:
    done = subprocess.run(
        [CTL, *args], input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, env={**BASE_ENV, **env}, cwd=cwd, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return Run(done)


def ok(*args: str, **kwargs: Any) -> Run:
    run = call(*args, **kwargs)
    assert run.code == 0, run.err
    return run


def refused(run: Run, status: int = 1, says: str = "") -> str:
    """Exactly one stderr line, prefixed, with the expected status; returns the message."""
    assert run.code == status, (run.code, run.out, run.err)
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnipamctl: "), run.err
    assert says in lines[0], lines[0]
    return lines[0]


def plugin(
    command: str, config: dict[str, Any], container: str, ifname: str = "eth0", db: Path | None = None
) -> dict[str, Any]:
    env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname}
    if db is not None:
        env["IPAM_DB_PATH"] = str(db)
    done = subprocess.run([PLUGIN], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stdout
    return json.loads(done.stdout) if done.stdout.strip() else {}
