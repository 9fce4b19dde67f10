"""The implementations under test and how one CNI call of each is spelled.

cnipam and host-local differ only in their `ipam` config section and in how they are
told where their state lives; everything else (environment, stdin redirect, prepare
step, shell) is built by the same functions, so neither gets a friendlier method.
"""

from __future__ import annotations

import abc
import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETWORK_NAME = "benchnet"
CNI_BASE_ENV = {
    "CNI_NETNS": "/var/run/netns/none",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni",
}


@dataclass(frozen=True)
class Plugin(abc.ABC):
    """An IPAM plugin: an executable run directly, plus its config dialect."""

    name: str
    exe: Path

    @abc.abstractmethod
    def ipam(self, subnet: str, state: Path) -> dict[str, str]:
        raise NotImplementedError

    def state_env(self, state: Path) -> dict[str, str]:
        """Extra environment telling the plugin where its state lives."""
        return {}


class HostLocal(Plugin):
    """containernetworking's host-local: one file per lease under `dataDir`."""

    def ipam(self, subnet: str, state: Path) -> dict[str, str]:
        return {"type": "host-local", "subnet": subnet, "dataDir": str(state)}


class Cnipam(Plugin):
    """cnipam in its ecs-ipam dialect: a SQLite file named by IPAM_DB_PATH."""

    def ipam(self, subnet: str, state: Path) -> dict[str, str]:
        key = "ipv6-subnet" if ":" in subnet else "ipv4-subnet"
        return {"type": "cnipam", key: subnet}

    def state_env(self, state: Path) -> dict[str, str]:
        # CNIPAM_AGENT=off: these rows time the plugin on its own, even on a host where
        # a cnipamd listens on the default socket (bench/agent.py times the forward path).
        return {"IPAM_DB_PATH": str(self.db_path(state)), "CNIPAM_AGENT": "off"}

    @staticmethod
    def db_path(state: Path) -> Path:
        return state / "ipam.db"


@dataclass(frozen=True)
class Network:
    """One plugin on one subnet with its own private state folder under the temp dir.

    `state` is a folder for both plugins so that "reset to empty" is the same
    `rm -rf; mkdir` for both.
    """

    plugin: Plugin
    subnet: str
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def conf(self) -> Path:
        return self.root / "conf.json"

    def create(self) -> Network:
        """Write the config file and an empty state folder; return self for chaining."""
        self.state.mkdir(parents=True, exist_ok=True)
        body = {
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "bridge",
            "ipam": self.plugin.ipam(self.subnet, self.state),
        }
        self.conf.write_text(json.dumps(body))
        return self

    def env(self, command: str, container_id: str) -> dict[str, str]:
        """The per-call CNI environment (CNI_BASE_ENV is exported to every run)."""
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, **self.plugin.state_env(self.state)}

    def shell(self, command: str, container_id: str) -> str:
        """One call as a shell command line, stdout discarded (hyperfine needs a shell
        for the `<` redirect; it measures and subtracts the shell's own start-up)."""
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env(command, container_id).items())
        return f"{assigns} {shlex.quote(str(self.plugin.exe))} < {shlex.quote(str(self.conf))} > /dev/null"

    def reset_shell(self) -> str:
        """Shell line that empties the store: used between throughput runs."""
        state = shlex.quote(str(self.state))
        return f"rm -rf {state} && mkdir {state}"

    def call(self, command: str, container_id: str) -> subprocess.CompletedProcess[str]:
        """Run one call directly (no shell), for set-up and correctness checks."""
        with self.conf.open("rb") as stdin:
            return subprocess.run(
                [str(self.plugin.exe)],
                stdin=stdin,
                capture_output=True,
                text=True,
                env={**os.environ, **CNI_BASE_ENV, **self.env(command, container_id)},
                check=False,
            )


def floor_shell(interpreter: list[str], conf: Path) -> str:
    """The bare-interpreter floor (`<interpreter and flags> -c pass`), shaped exactly
    like a plugin call: same shell, same redirects."""
    argv = " ".join(shlex.quote(a) for a in [*interpreter, "-c", "pass"])
    return f"{argv} < {shlex.quote(str(conf))} > /dev/null"


def launcher_interpreter(launcher: Path) -> list[str]:
    """The `#!` line of a script as argv, e.g. ['/x/venv/bin/python3', '-I', '-S'].

    The bare-python floor and the import profile must use the very interpreter and
    flags the launcher uses, or the ratio compares different start-up paths.
    """
    first = launcher.read_bytes().split(b"\n", 1)[0].decode()
    if not first.startswith("#!"):
        raise ValueError(f"{launcher} has no #! line")
    return shlex.split(first[2:])
