#!/usr/bin/env python3
"""Crash campaign: kill -9 the plugin and the Docker driver at random moments, then prove
nothing was lost, duplicated or half-written.

A CNI plugin can die at any instruction (OOM killer, node shutdown, a runtime's timeout)
and a driver can be killed while dockerd waits on it. The promise is: a printed result or
a 200 answer is durable, an interrupted change is all or nothing, and the store stays
consistent. This file is the one implementation of that proof, in two sizes: the tests
(tests/campaigns/test_crash.py) run it short in CI, and an operator runs it long:

    python campaigns/crash.py --runs 3000 --engine sqlite     # or etcd, or docker

Plugin campaigns (sqlite, etcd) run waves of concurrent plugin processes (ADD single- and
dual-stack, by id and by attachment; DEL; GC) and SIGKILL about half of them: a third
after a delay drawn from [0, 1.25 x the slowest recent run], the rest near a measured run
time of the same verb (run times are measured on this machine, not assumed), so kills land
in start-up, in the lock queue, inside the store transaction and after the result is
printed. After every wave (no process running) the store is read back and each
operation's outcome is checked against what it may have done; the observed state then
becomes the model for the next wave. The Docker campaign hammers a
real `cnipam-docker` with concurrent RequestPool/RequestAddress/ReleaseAddress clients,
SIGKILLs it at random moments, checks the store while it is down, restarts it on the same
store and continues.

With --agent (sqlite, etcd) a `cnipamd` serves the same store: each plugin call goes
through it or directly at random, naming the store under a random spelling (absolute,
relative, a `dir/../dir` detour, a host-local dataDir) with a random timeout; the agent
is SIGKILLed and started again at random moments (a call it was answering then answers
code 11, "may or may not have been applied", and is judged like a killed process), and
cnipamctl readers run beside the plugins. After every wave the agent must hold no
deleted -wal or -shm (issue 19), and is then stopped with SIGTERM, which waits for the
calls it still holds: a plugin killed after it handed its call over does not stop the
call, which the agent finishes (and commits) after the plugin's death, so the store is
read back only once the agent is idle. It starts again with the next wave.

It needs the installed package (`pip install .`): the executables next to this Python.
The etcd campaign starts a private etcd (cnipam.testing.etcd_server) unless --etcd is given.
The two campaigns are crash_plugin.py and crash_docker.py; this file is their command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from campaign import CampaignFailure, etcd_endpoint, executable
from crash_docker import run_docker_campaign
from crash_plugin import Target, run_plugin_campaign


@contextlib.contextmanager
def etcd_store(endpoint: str | None, workdir: Path) -> Iterator[dict[str, Any]]:
    """The ipam.store object of an etcd: the one given, or a private one started here."""
    prefix = f"/cnipam-crash/{os.getpid()}-{time.time_ns()}/"
    with etcd_endpoint(endpoint, "crash") as url:
        yield {"type": "etcd", "endpoints": [url], "prefix": prefix, "host": "node-1", "lockDir": str(workdir / "lock")}


def run(
    engine: str,
    runs: int,
    seed: int,
    workdir: Path,
    etcd: str | None = None,
    log: Callable[[str], None] = print,
    agent: bool = False,
) -> dict[str, Any]:
    started = time.monotonic()
    if engine == "docker":
        report = run_docker_campaign(workdir, runs, seed, log)
    elif engine == "sqlite":
        db = workdir / "store" / ("cnipam.db" if agent else "ipam.db")  # cnipam.db: a dataDir names it too
        report = run_plugin_campaign(executable("cnipam"), Target(db), workdir, runs, seed, log, agent)
    else:
        with etcd_store(etcd, workdir) as store:
            report = run_plugin_campaign(
                executable("cnipam"), Target(workdir / "unused.db", store), workdir, runs, seed, log, agent
            )
    report["engine"] = engine + (" with cnipamd" if agent else "")
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "etcd", "docker"), required=True)
    parser.add_argument(
        "--runs", type=int, default=3000, help="plugin processes (sqlite, etcd) or driver requests (docker)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--etcd", help="an etcd endpoint to use instead of starting a private one")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, outputs) for inspection")
    parser.add_argument(
        "--agent", action="store_true", help="sqlite, etcd: a cnipamd beside the plugins, killed now and then"
    )
    args = parser.parse_args()
    if args.agent and args.engine == "docker":
        parser.error("--agent mixes cnipamd into the plugin campaigns (sqlite, etcd)")
    workdir = Path(tempfile.mkdtemp(prefix=f"cnipam-crash-{args.engine}-"))
    try:
        report = run(
            args.engine,
            args.runs,
            args.seed,
            workdir,
            args.etcd,
            lambda line: print(line, file=sys.stderr, flush=True),
            args.agent,
        )
    except CampaignFailure as failure:
        print(f"DEFECT: {failure} (work folder kept: {workdir})", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
