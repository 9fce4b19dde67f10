"""What a plugin call imports: its start-up is most of its cost (docs/benchmarks.md), so
the standard library's heavier modules stay off the path, where nobody would notice them
coming back. Read with `-X importtime` from the installed launcher, run as a runtime runs it."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.support.ctl_calls import BASE_ENV, PLUGIN

# `os` brings _collections_abc, posixpath and stat (about a millisecond a call); the others
# bring `re`, `enum`, `typing` and more. An error path may import them; an ADD or DEL may not.
KEPT_OUT = {
    "os",
    "_collections_abc",
    "functools",
    "collections",
    "re",
    "enum",
    "typing",
    "json",
    "dataclasses",
    "signal",
}
CONFIG = {"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "cnipam", "ipv4-subnet": "10.9.0.0/24"}}


def imported(command: str, db: Path) -> set[str]:
    interpreter = shlex.split(Path(PLUGIN).read_text().split("\n", 1)[0][2:])
    env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    env.update(IPAM_DB_PATH=str(db), CNIPAM_AGENT="off")
    done = subprocess.run(
        [*interpreter, "-X", "importtime", PLUGIN], input=json.dumps(CONFIG), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_an_add_and_a_del_keep_the_heavier_standard_modules_out(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    for command in ("ADD", "DEL", "ADD"):  # the first creates the store; the others are any call's
        modules = imported(command, db)
        assert "cnipam.store.sqlite" in modules  # the profile is read
        assert not modules & KEPT_OUT, (command, sorted(modules & KEPT_OUT))
