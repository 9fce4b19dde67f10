"""cnipam vs host-local vs the bare interpreter, side by side, as ratios.

Usage: python3 bench/run.py [--quick] [--only agent|concurrency|disk|docker|etcd|reboot|config]
                            [--output PATH] [--python INTERPRETER] [--source CHECKOUT]

Installs what it needs (hyperfine, Debian's host-local, strace, a private cnipam venv),
measures the eight figures of docs/benchmarks.md, latency under concurrency
(concurrency.py), the Docker driver's section (docker_driver.py), the etcd engine's
(etcd_cluster.py), the reboot repair's (reboot.py) and the 8,000-range config's
(large_config.py) in one run, prints the Markdown and (full runs) writes it to
docs/benchmarks.md. All files live in one mkdtemp() folder, removed at exit.

Plots (bench/plots.py): PNGs of ADD latency against the leases in the store and of the
Docker driver's load, from the samples already measured, written to img/ next to the
document and linked from it; --quick and --only without --output write them to a kept
temp folder (printed) instead. They need matplotlib, which only draws and is never timed:
if the interpreter running this script cannot import it, the plots are drawn by
bench/plots.py in a venv of their own in the temp folder (`pip install matplotlib`);
if that fails too, the report is written without them and says so under Problems.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import ipaddress
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import CnipamViaAgent, RunningAgent
from docker_driver import FULL as DOCKER_FULL
from docker_driver import QUICK as DOCKER_QUICK
from docker_driver import measure_docker
from docker_driver import section as docker_section
from importprofile import ImportSummary, profile, summarise
from plots import make_plots
from plugins import CNI_BASE_ENV, NETWORK_NAME, Cnipam, HostLocal, Network, Plugin, floor_shell, launcher_interpreter
from populate import first_host, populate_cnipam, populate_host_local
from report import Row, Target, document, import_table
from syscalls import DiskWork, traced
from timing import Bench, Hyperfine, Probe, Sample, measure, measure_rss, ratio
from tooling import describe_machine, ensure_gnu_time, ensure_host_local, ensure_hyperfine, ensure_strace

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DOC = REPO / "docs" / "benchmarks.md"
CID = "benchadd"  # the container whose ADD is timed; the prepare step DELs it
SUBNET16, SUBNET8, SUBNET64 = "10.77.0.0/16", "10.0.0.0/8", "fd77::/64"
GROWTH_SIZES = (10_000, 50_000)
MILLION = 1_000_000
PAR_ADDS, PAR_WORKERS, PAR_BATCH = 500, 8, 50
DISK_ROUNDS, DISK_PAIRS = 4, 12  # figure 8: rounds of ADD+DEL pairs traced per tool
SOURCE_JUNK = (".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".venv", "venv")


@dataclass(frozen=True)
class Plan:
    """How many timed runs each figure gets; --quick shrinks them for a smoke test."""

    rounds: int
    add_runs: int  # per single-ADD row (figures 1-3, cnipam and host-local empty)
    hl_runs: dict[int, int]  # host-local rows with existing leases: size -> runs
    par_runs: int
    reps: int  # peak-memory and import-profile repetitions


FULL = Plan(rounds=8, add_runs=200, hl_runs={10_000: 24, 50_000: 8}, par_runs=8, reps=9)
QUICK = Plan(rounds=2, add_runs=16, hl_runs={10_000: 4, 50_000: 2}, par_runs=2, reps=3)


@dataclass
class Context:
    """What every figure needs: tools, plugins (None when unavailable) and the plan."""

    tmp: Path
    hyperfine: Hyperfine
    plan: Plan
    floor: list[str]  # interpreter + flags of the floor row
    cnipam: Cnipam | None
    cnipam_missing: str
    venv_python: Path | None
    host_local: HostLocal | None
    problems: list[str] = field(default_factory=list)
    add_seconds: float | None = None  # cnipam's empty-store ADD median, for the import share
    add_cpu_seconds: float | None = None  # and its CPU time
    floor_cpu: Sample | None = None  # a bare interpreter's CPU per start (figure 1), for the throughput limit
    # ADD wall time by leases already in the store, per plotted line: label -> [(leases, sample)]
    lease_curves: dict[str, list[tuple[int, Sample]]] = field(default_factory=dict)
    docker_plot: dict[str, Any] | None = None  # a plots.py docker_load job, without its path
    concurrency_plot: dict[str, Any] | None = None  # a plots.py concurrency job, without its path

    def network(self, plugin: Plugin, subnet: str, tag: str) -> Network:
        return Network(plugin, subnet, self.tmp / f"{plugin.name}-{tag}").create()

    def floor_conf(self) -> Path:
        """A config file for the floor rows to read as stdin, like the plugins do."""
        conf = self.tmp / "floor.json"
        if not conf.exists():
            conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": NETWORK_NAME, "type": "bridge", "ipam": {}}))
        return conf

    def missing(self, plugin_name: str) -> str:
        return self.cnipam_missing if plugin_name == "cnipam" else f"{plugin_name} not installed"


# --------------------------------------------------------------------------- set-up


def install_cnipam(interpreter: str, source: Path, tmp: Path) -> tuple[Cnipam | None, Path | None, str]:
    """Create a private venv and `pip install` the repo into it, as a user would.

    Returns (plugin, venv python, reason it is missing). The launcher pip generates is
    what is benchmarked, so its `#!` line (interpreter, -I -S) is part of the result.
    """
    venv, copy = tmp / "venv", tmp / "cnipam-src"
    # pip builds in the source tree (build/, *.egg-info): build from a copy instead, so
    # the bench writes nothing outside its temp folder.
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*SOURCE_JUNK))
    steps = [
        [interpreter, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(copy)],
    ]
    print("bench: installing cnipam into a private venv ...", flush=True)
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, None, "not available: `pip install` failed: " + " ".join(tail)
    launcher = venv / "bin" / "cnipam"
    if not launcher.exists():
        return None, None, "not available: the package installs no `cnipam` launcher"
    return Cnipam("cnipam", launcher), venv / "bin" / "python", ""


def check_add(net: Network, taken: range | None = None) -> str | None:
    """One untimed ADD+DEL, to fail loudly before timing a broken setup.

    With `taken`, the ADD must not return an address inside it (the pre-populated
    leases): that catches a populate step that silently wrote nothing.
    """
    add = net.call("ADD", CID)
    if add.returncode != 0:
        failed = f"{net.plugin.name} ADD on {net.subnet} failed (exit {add.returncode})"
        return f"{failed}: {add.stdout[-300:]} {add.stderr[-300:]}"
    try:
        address = json.loads(add.stdout)["ips"][0]["address"].split("/")[0]
    except (ValueError, KeyError, IndexError) as exc:
        return f"{net.plugin.name} ADD printed no address ({exc!r}): {add.stdout[:300]}"
    delete = net.call("DEL", CID)
    if delete.returncode != 0:
        return f"{net.plugin.name} DEL on {net.subnet} failed (exit {delete.returncode}): {delete.stdout[-300:]}"
    if taken is not None and int(ipaddress.ip_address(address)) in taken:
        return f"{net.plugin.name} ADD on a store with {len(taken)} leases returned {address}, which is already leased"
    return None


# --------------------------------------------------------------------------- helpers


def add_bench(net: Network, name: str, runs: int, warmup: int = 2) -> Bench:
    """Time one ADD; the prepare step DELs it again so every run sees the same store."""
    return Bench(name, net.shell("ADD", CID), prepare=net.shell("DEL", CID), runs=runs, warmup=warmup)


def side(sample: Sample, label: str, fmt: Callable[[float], str]) -> str:
    """'label: value', or 'label: —' when the sample is missing (the note says why)."""
    return f"{label}: {fmt(sample.median) if sample.ok else '—'}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def make_row(
    figure: str,
    samples: dict[str, Sample],
    num: tuple[str, str],
    den: tuple[str, str],
    target: Target | None = None,
    fmt: Callable[[float], str] = ms,
    note: str = "",
    inverse: bool = False,
) -> Row:
    """A results row for samples[num[0]] / samples[den[0]] (labels num[1], den[1]).

    `inverse` gives den/num instead, for rates: a throughput ratio is the ratio of
    the two wall times turned upside down.
    """
    missing = Sample("", error="not measured")
    a, b = samples.get(num[0], missing), samples.get(den[0], missing)
    errors = list(dict.fromkeys(s.error[:160] for s in (a, b) if s.error))
    return Row(
        figure,
        side(a, num[1], fmt),
        side(b, den[1], fmt),
        ratio(b, a) if inverse else ratio(a, b),
        target,
        "; ".join([note, *errors] if note else errors),
    )


def guarded(ctx: Context, samples: dict[str, Sample], name: str, error: str | None) -> bool:
    """Record a set-up failure as the sample's error; True when the bench may run."""
    if error is None:
        return True
    samples[name] = Sample(name, error=error)
    ctx.problems.append(error)
    return False


def available(
    ctx: Context, pre: dict[str, Sample], keys: Callable[[str], Sequence[str]] = lambda name: [name]
) -> list[Plugin]:
    """The installed plugins; each missing one gets an error Sample under each of its keys,
    so its rows say why they are empty instead of disappearing."""
    found: list[Plugin] = []
    for plugin, name in ((ctx.cnipam, "cnipam"), (ctx.host_local, "host-local")):
        if plugin is None:
            pre.update({key: Sample(key, error=ctx.missing(name)) for key in keys(name)})
        else:
            found.append(plugin)
    return found


def run_group(ctx: Context, benches: list[Bench], pre: dict[str, Sample], label: str) -> dict[str, Sample]:
    """Measure benches interleaved; merge with samples already failed during set-up."""
    return {**pre, **measure(ctx.hyperfine, benches, ctx.plan.rounds, label)}


# --------------------------------------------------------------------------- figures


def figure_startup(ctx: Context) -> list[Row]:
    """1. One ADD on an empty store vs the bare interpreter and vs host-local."""
    benches: list[Bench] = []
    pre: dict[str, Sample] = {}
    for plugin in available(ctx, pre):
        net = ctx.network(plugin, SUBNET16, "empty")
        if guarded(ctx, pre, plugin.name, check_add(net)):
            benches.append(add_bench(net, plugin.name, ctx.plan.add_runs))
    benches.append(Bench("floor", floor_shell(ctx.floor, ctx.floor_conf()), runs=ctx.plan.add_runs))
    s = run_group(ctx, benches, pre, "1 start-up")
    floor_label = "bare `" + shlex.join([Path(ctx.floor[0]).name, *ctx.floor[1:], "-c", "pass"]) + "`"
    cpu = {name: sample.cpu_sample() for name, sample in s.items()}
    if s.get("cnipam") and s["cnipam"].ok:
        ctx.add_seconds, ctx.add_cpu_seconds = s["cnipam"].median, cpu["cnipam"].median
    ctx.floor_cpu = cpu["floor"]
    return [
        make_row(
            "1. one ADD, empty /16",
            s,
            ("cnipam", "cnipam ADD"),
            ("floor", floor_label),
            Target("<=", 1.6, per_round=True),
        ),
        make_row(
            "1. one ADD, empty /16",
            s,
            ("cnipam", "cnipam ADD"),
            ("host-local", "host-local ADD"),
            note="baseline.md: host-local 3.83 ms",
        ),
        make_row("1. CPU (user+sys) of one ADD", cpu, ("cnipam", "cnipam"), ("floor", "bare interpreter")),
        make_row("1. CPU (user+sys) of one ADD", cpu, ("cnipam", "cnipam"), ("host-local", "host-local")),
    ]


def populated(ctx: Context, plugin: Plugin, subnet: str, n: int) -> tuple[Network, str | None]:
    """A network whose store already holds n leases (network+2 upwards), checked."""
    net = ctx.network(plugin, subnet, f"{n}-{subnet.replace('/', '_').replace(':', '')}")
    if n == 0:
        return net, check_add(net)
    started = time.monotonic()
    try:
        if isinstance(plugin, Cnipam):
            assert ctx.venv_python is not None
            populate_cnipam(ctx.venv_python, Cnipam.db_path(net.state), NETWORK_NAME, subnet, n)
        else:
            populate_host_local(net.state, NETWORK_NAME, subnet, n)
    except (RuntimeError, OSError) as exc:
        return net, f"populating {plugin.name} with {n:,} leases failed: {exc}"
    print(f"  populated {plugin.name} {subnet} with {n} leases in {time.monotonic() - started:.1f} s", flush=True)
    base = first_host(subnet)
    return net, check_add(net, range(base, base + n))


def figure_growth(ctx: Context) -> list[Row]:
    """2. ADD with 10,000 / 50,000 existing leases vs the same tool's empty-store ADD."""
    benches: list[Bench] = []
    pre: dict[str, Sample] = {}
    sizes = (0, *GROWTH_SIZES)
    for plugin in available(ctx, pre, lambda name: [f"{name}-{n}" for n in sizes]):
        for n in sizes:
            key = f"{plugin.name}-{n}"
            net, error = populated(ctx, plugin, SUBNET16, n)
            runs = ctx.plan.add_runs if (n == 0 or plugin is ctx.cnipam) else ctx.plan.hl_runs[n]
            if guarded(ctx, pre, key, error):
                benches.append(add_bench(net, key, runs, warmup=1 if runs < 20 else 2))
    s = run_group(ctx, benches, pre, "2 growth")
    for name in ("cnipam", "host-local"):
        ctx.lease_curves[f"{name}, IPv4 /16"] = [(n, s[f"{name}-{n}"]) for n in sizes if f"{name}-{n}" in s]
    rows = []
    baseline = {10_000: "131 ms", 50_000: "681 ms"}
    for n in GROWTH_SIZES:
        rows += [
            make_row(
                f"2. ADD, {n:,} leases",
                s,
                (f"cnipam-{n}", f"cnipam, {n:,} leases"),
                ("cnipam-0", "cnipam, empty"),
                Target("<=", 1.2),
            ),
            make_row(
                f"2. ADD, {n:,} leases",
                s,
                (f"host-local-{n}", f"host-local, {n:,} leases"),
                ("host-local-0", "host-local, empty"),
                note=f"baseline.md: host-local {baseline[n]}",
            ),
            make_row(f"2. ADD, {n:,} leases", s, (f"cnipam-{n}", "cnipam"), (f"host-local-{n}", "host-local")),
        ]
    return rows


def figure_million(ctx: Context) -> list[Row]:
    """3. ADD with 1,000,000 leases in an IPv4 /8 and an IPv6 /64 vs empty; cnipam only."""
    benches: list[Bench] = []
    pre: dict[str, Sample] = {}
    for subnet in (SUBNET8, SUBNET64):
        for n in (0, MILLION):
            key = f"{subnet}-{n}"
            if ctx.cnipam is None:
                pre[key] = Sample(key, error=ctx.missing("cnipam"))
                continue
            net, error = populated(ctx, ctx.cnipam, subnet, n)
            if guarded(ctx, pre, key, error):
                benches.append(add_bench(net, key, ctx.plan.add_runs))
    s = run_group(ctx, benches, pre, "3 million")
    for subnet, label in ((SUBNET8, "cnipam, IPv4 /8"), (SUBNET64, "cnipam, IPv6 /64")):
        ctx.lease_curves[label] = [(n, s[f"{subnet}-{n}"]) for n in (0, MILLION) if f"{subnet}-{n}" in s]
    return [
        make_row(
            f"3. ADD, 1,000,000 leases, {subnet}",
            s,
            (f"{subnet}-{MILLION}", "cnipam, 1M leases"),
            (f"{subnet}-0", f"cnipam, empty {subnet}"),
            Target("<=", 1.2),
            note="host-local not run at 1M: ~13 s per ADD and 10⁶ lease files",
        )
        for subnet in (SUBNET8, SUBNET64)
    ]


PAR_SCRIPT = """\
# 500 ADDs, distinct container ids, P workers of 50 ids each (shared/reference/baseline.md's par_add.sh).
# EXE, CONF, N, P and the CNI variables come from the environment; OUT, when set, keeps
# every result (for the untimed correctness check).
seq 1 "$N" | xargs -P "$P" -n {batch} sh -c '
  for i in "$@"; do
    out=/dev/null; [ -n "$OUT" ] && out="$OUT/$i.json"
    CNI_CONTAINERID=par$i "$EXE" < "$CONF" > "$out" || exit 255
  done' _
"""


def par_command(ctx: Context, net: Network, out: Path | None = None) -> str:
    """The parallel-ADD script invocation for one network (same script for both tools)."""
    script = ctx.tmp / "par_add.sh"
    if not script.exists():
        script.write_text(PAR_SCRIPT.format(batch=PAR_BATCH))
    env = {
        **net.env("ADD", "unused"),
        "EXE": str(net.plugin.exe),
        "CONF": str(net.conf),
        "N": str(PAR_ADDS),
        "P": str(PAR_WORKERS),
        "OUT": str(out or ""),
    }
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + f" sh {shlex.quote(str(script))}"


def check_parallel(ctx: Context, net: Network) -> str:
    """Untimed run keeping every output: did all 500 ADDs succeed, with distinct IPs?"""
    out = net.root / "par-out"
    out.mkdir()
    subprocess.run(net.reset_shell(), shell=True, check=True)
    done = subprocess.run(
        par_command(ctx, net, out),
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, **CNI_BASE_ENV},
        check=False,
    )
    addresses = set()
    for result in out.glob("*.json"):
        with contextlib.suppress(ValueError, KeyError, IndexError):
            addresses.add(json.loads(result.read_text())["ips"][0]["address"])
    verdict = f"{net.plugin.name} {len(addresses)}/{PAR_ADDS} distinct addresses"
    if done.returncode != 0 or len(addresses) != PAR_ADDS:
        problem = f"parallel ADD check: exit {done.returncode}, {verdict}: {done.stderr[-200:]}"
        ctx.problems.append(problem)
        return problem
    return verdict


def figure_parallel(ctx: Context) -> list[Row]:
    """4. 500 ADDs from 8 parallel workers, directly and through cnipamd: throughput against
    host-local's, and against the interpreter's own limit (cores ÷ CPU of a bare start,
    figure 1's floor): no process-per-call plugin in this language can go faster."""
    benches: list[Bench] = []
    pre: dict[str, Sample] = {}
    checks = []
    agent = None
    try:
        plugins = available(ctx, pre)
        if ctx.cnipam is not None and ctx.venv_python is not None:
            agent = RunningAgent(ctx.venv_python.parent / "cnipamd", ctx.tmp / "agent-parallel")
            plugins.append(CnipamViaAgent(VIA_AGENT, ctx.cnipam.exe, agent.socket))
        else:
            pre[VIA_AGENT] = Sample(VIA_AGENT, error=ctx.missing("cnipam"))
        for plugin in plugins:
            net = ctx.network(plugin, SUBNET16, "parallel")
            benches.append(
                Bench(plugin.name, par_command(ctx, net), prepare=net.reset_shell(), runs=ctx.plan.par_runs, warmup=0)
            )
            checks.append(check_parallel(ctx, net))
        s = run_group(ctx, benches, pre, "4 parallel")
    except RuntimeError as exc:  # cnipamd did not start
        ctx.problems.append(str(exc))
        s = {**pre, VIA_AGENT: Sample(VIA_AGENT, error=str(exc))}
    finally:
        if agent is not None:
            agent.stop()
    cores = len(os.sched_getaffinity(0))
    rates = {name: _rate(sample) for name, sample in s.items()}
    floor = ctx.floor_cpu
    if floor is not None and floor.ok:
        rates["limit"] = Sample("limit", [cores / cpu for cpu in floor.values], [cores / cpu for cpu in floor.values])
    else:
        rates["limit"] = Sample("limit", error="figure 1's bare interpreter was not measured")

    def per_second(rate: float) -> str:
        return f"{rate:.0f} ADD/s"

    figure = f"4. {PAR_ADDS} ADDs, {PAR_WORKERS} workers, throughput"
    limit = ("limit", f"the interpreter's limit ({cores} cores ÷ CPU of a bare start)")
    check = "check: " + ", ".join(checks)
    return [
        make_row(figure, rates, ("cnipam", "cnipam"), ("host-local", "host-local"), fmt=per_second, note=check),
        make_row(figure, rates, ("cnipam", "cnipam"), limit, Target(">=", 0.6), per_second),
        make_row(figure, rates, (VIA_AGENT, "cnipam through cnipamd"), limit, Target(">=", 0.9), per_second),
        make_row(figure, rates, (VIA_AGENT, "cnipam through cnipamd"), ("host-local", "host-local"), fmt=per_second),
    ]


VIA_AGENT = "cnipam-via-cnipamd"


def _rate(sample: Sample) -> Sample:
    """ADDs per second from the wall times of runs of PAR_ADDS ADDs."""
    return Sample(
        sample.name,
        [PAR_ADDS / seconds for seconds in sample.values],
        [PAR_ADDS / seconds for seconds in sample.round_medians],
        error=sample.error,
    )


def figure_memory(ctx: Context) -> list[Row]:
    """5. Peak RSS of one ADD process: cnipam vs host-local vs the bare interpreter."""
    probes: list[Probe] = []
    pre: dict[str, Sample] = {}
    for plugin in available(ctx, pre):
        net = ctx.network(plugin, SUBNET16, "memory")
        undo = functools.partial(net.call, "DEL", CID)
        probes.append(
            Probe(plugin.name, [str(plugin.exe)], net.conf, {**CNI_BASE_ENV, **net.env("ADD", CID)}, undo=undo)
        )
    probes.append(Probe("floor", [*ctx.floor, "-c", "pass"], ctx.floor_conf(), {}))
    print("  5 memory", flush=True)
    gnu_time = ensure_gnu_time()
    if gnu_time is None:
        probes = [p for p in probes if not guarded(ctx, pre, p.name, "GNU time (/usr/bin/time) not installed")]
    s = {**pre, **measure_rss(gnu_time or "", probes, ctx.plan.reps, ctx.tmp)}

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f} MiB"

    return [
        make_row("5. peak RSS of one ADD", s, ("cnipam", "cnipam"), ("floor", "bare interpreter"), fmt=mib),
        make_row("5. peak RSS of one ADD", s, ("cnipam", "cnipam"), ("host-local", "host-local"), fmt=mib),
    ]


def figure_imports(ctx: Context) -> ImportSummary | None:
    """6. `-X importtime` of one cnipam ADD, median per module over several runs."""
    if ctx.cnipam is None:
        return None
    net = ctx.network(ctx.cnipam, SUBNET16, "imports")
    argv = [*launcher_interpreter(ctx.cnipam.exe), "-X", "importtime", str(ctx.cnipam.exe)]
    print("  6 import profile", flush=True)
    runs = []
    try:
        for _ in range(ctx.plan.reps):
            runs.append(profile(argv, net.conf, {**CNI_BASE_ENV, **net.env("ADD", CID)}))
            net.call("DEL", CID)
    except RuntimeError as exc:
        ctx.problems.append(f"import profile: {exc}")
        return None
    return summarise(runs)


def figure_docker(ctx: Context) -> str:
    """D. cnipam-docker under N clients, against the transport and disk floors."""
    plan = DOCKER_QUICK if ctx.plan is QUICK else DOCKER_FULL
    exe = ctx.venv_python.parent / "cnipam-docker" if ctx.venv_python else None
    if exe is None or not exe.exists():
        ctx.problems.append("Docker driver not measured: cnipam-docker is not installed in the bench venv")
        return ""
    folder = ctx.tmp / "docker"
    folder.mkdir()
    try:
        measured = measure_docker(str(exe), plan, folder, progress=lambda text: print(text, flush=True))
    except RuntimeError as exc:
        ctx.problems.append(f"Docker driver: {exc}")
        return ""
    ctx.docker_plot = measured.plot_job(plan)
    return docker_section(measured.rows, plan)


def section_script(
    ctx: Context,
    what: str,
    name: str,
    args: Callable[[Path], Sequence[str]] = lambda scripts: (),
    quick: Sequence[str] = ("--quick",),
) -> str:
    """The Markdown a section script (bench/<name>) prints, run in the bench venv's
    interpreter: the sections import cnipam themselves, which the interpreter running this
    script may not have, or may have in another version. `args` gets the venv's scripts
    folder (the installed cnipam, cnipamctl). Empty when it could not run (the problem is
    noted; its progress and errors go to our stderr, the log)."""
    if ctx.venv_python is None:
        ctx.problems.append(f"{what} not measured: cnipam is not installed in the bench venv")
        return ""
    script = Path(__file__).resolve().parent / name
    argv = [str(ctx.venv_python), str(script), *args(ctx.venv_python.parent), *(quick if ctx.plan is QUICK else ())]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        ctx.problems.append(
            f"{what} not measured: `{shlex.join(argv[1:])}` exited {done.returncode} (its error is in the log)"
        )
        return ""
    return done.stdout.strip()


def figure_etcd(ctx: Context) -> str:
    """E. The etcd engine against SQLite, with 100,000 leases, 4 hosts x 4 workers, and via cnipamd."""
    return section_script(ctx, "etcd engine", "etcd_cluster.py")


def figure_concurrency(ctx: Context) -> str:
    """C. p50/p99 of ADD and DEL under 1, 8 and 64 callers: SQLite and etcd, directly and through cnipamd."""
    job = ctx.tmp / "concurrency-plot.json"
    done = section_script(ctx, "latency under concurrency", "concurrency.py", lambda scripts: ["--plot-job", str(job)])
    if done:
        ctx.concurrency_plot = json.loads(job.read_text())
    return done


def figure_reboot(ctx: Context) -> str:
    """R. The first ADD after a reboot against a normal one, 50,000 leases in the store."""
    etcd = ["--etcd"] if shutil.which("etcd") else []
    return section_script(
        ctx, "reboot repair", "reboot.py", lambda scripts: ["--exe", str(scripts / "cnipam"), *etcd],
        quick=("--quick", "--leases", "5000"),
    )  # fmt: skip


def figure_disk(ctx: Context) -> list[Row]:
    """8. What an ADD or DEL asks of the disk (strace): syncs, and files made or deleted."""
    pre: dict[str, Sample] = {}

    def names(name: str) -> list[str]:
        return [f"{name}-syncs", f"{name}-files"]

    tracer = ensure_strace()
    plugins = available(ctx, pre, names)
    print("  8 disk work per call", flush=True)
    nets = {plugin.name: ctx.network(plugin, SUBNET16, "disk") for plugin in plugins}
    for name, net in nets.items():
        # the store exists before the traced calls: the steady state is measured, not the creation
        error = "strace not installed" if tracer is None else check_add(net)
        if error is not None:
            ctx.problems.append(error)
            pre.update({key: Sample(key, error=error) for key in names(name)})
    s = {key: Sample(key) for name in nets for key in names(name) if key not in pre}
    most: dict[str, int] = {}
    counts: dict[str, list[int]] = {}  # every traced call's syncs, per tool
    late: dict[str, int] = {}  # calls that synced after they answered, per tool
    for round_number in range(DISK_ROUNDS):
        for name, net in nets.items():
            if f"{name}-syncs" not in s or tracer is None:
                continue
            works: list[DiskWork] = []
            for index in range(DISK_PAIRS):
                for command in ("ADD", "DEL"):
                    env = {**os.environ, **CNI_BASE_ENV, **net.env(command, f"disk{round_number}-{index}")}
                    works.append(traced([str(net.plugin.exe)], net.conf.read_bytes(), env, net.state, tracer))
            if any(work.status != 0 for work in works):
                s[f"{name}-syncs"].error = s[f"{name}-files"].error = f"{name}: a traced call failed"
                continue
            syncs = statistics.median(work.syncs for work in works)  # the steady state; the mean goes in the note
            files = sum(len(work.made) + len(work.deleted) for work in works) / len(works)
            most[name] = max(most.get(name, 0), *(work.syncs for work in works))
            counts.setdefault(name, []).extend(work.syncs for work in works)
            late[name] = late.get(name, 0) + sum(1 for work in works if not work.synced_before_answer)
            for key, value in ((f"{name}-syncs", syncs), (f"{name}-files", files)):
                s[key].values.append(value)
                s[key].round_medians.append(value)
    s.update(pre)
    floor = Sample("floor", [1.0] * DISK_ROUNDS, [1.0] * DISK_ROUNDS)  # one sync per durable change

    def per_call(value: float) -> str:
        return f"{value:.2f} a call"

    calls = f"{DISK_ROUNDS} rounds of {DISK_PAIRS} ADD+DEL pairs each, traced with strace"
    notes = {
        name: f"mean {statistics.fmean(counts[name]):.2f} a call, most in one call: {count}; "
        for name, count in most.items()
    }
    return [
        make_row(
            "8. syncs per ADD or DEL (median)",
            {**s, "floor": floor},
            ("cnipam-syncs", "cnipam"),
            ("floor", "one sync per durable change"),
            Target("<=", 1.0),
            per_call,
            note=f"{calls}; calls that synced after answering: {late.get('cnipam', 0)}; {notes.get('cnipam', '')}"
            "the WAL's checkpoint, every ~24 calls, and the next call's new WAL header",
        ),
        make_row(
            "8. syncs per ADD or DEL (median)",
            {**s, "floor": floor},
            ("host-local-syncs", "host-local"),
            ("floor", "one sync per durable change"),
            fmt=per_call,
            note=f"{notes.get('host-local', '')}host-local never syncs: a crash of the machine can lose any of it",
        ),
        make_row(
            "8. files made or deleted per ADD or DEL",
            s,
            ("cnipam-files", "cnipam"),
            ("host-local-files", "host-local"),
            fmt=per_call,
            note="host-local makes a lease file per ADD and deletes it at DEL; cnipam's -wal and -shm stay",
        ),
    ]


def figure_agent(ctx: Context) -> list[Row]:
    """7. One ADD (and one ADD+DEL) through cnipamd vs the plugin on its own vs the bare interpreter."""
    pre: dict[str, Sample] = {}
    names = ("agent", "direct", "agent-pair", "direct-pair")
    if ctx.cnipam is None or ctx.venv_python is None:
        pre.update({name: Sample(name, error=ctx.missing("cnipam")) for name in names})
        s = pre
    else:
        agent = None
        try:
            agent = RunningAgent(ctx.venv_python.parent / "cnipamd", ctx.tmp / "agent")
            via = CnipamViaAgent("cnipam", ctx.cnipam.exe, agent.socket)
            benches: list[Bench] = []
            for name, plugin in (("agent", via), ("direct", ctx.cnipam)):
                net = ctx.network(plugin, SUBNET16, f"{name}-agentfigure")
                if guarded(ctx, pre, name, check_add(net)):
                    benches.append(add_bench(net, name, ctx.plan.add_runs))
                    pair = f"{net.shell('ADD', CID)} && {net.shell('DEL', CID)}"
                    benches.append(Bench(f"{name}-pair", pair, runs=ctx.plan.add_runs))
            floor = floor_shell(ctx.floor, ctx.floor_conf())
            benches += [
                Bench("floor", floor, runs=ctx.plan.add_runs),
                Bench("floor-pair", f"{floor} && {floor}", runs=ctx.plan.add_runs),
            ]
            before = agent.calls()
            s = run_group(ctx, benches, pre, "7 agent")
            if agent.calls() == before:
                ctx.problems.append("agent rows: cnipamd answered no call; the forward path was not taken")
        except RuntimeError as exc:
            ctx.problems.append(str(exc))
            s = {**pre, **{name: Sample(name, error=str(exc)) for name in names}}
        finally:
            if agent is not None:
                agent.stop()
    floor_label = "bare `" + shlex.join([Path(ctx.floor[0]).name, *ctx.floor[1:], "-c", "pass"]) + "`"
    return [
        make_row(
            "7. one ADD through cnipamd", s, ("agent", "ADD via cnipamd"), ("floor", floor_label), Target("<=", 1.3)
        ),
        make_row("7. one ADD through cnipamd", s, ("direct", "ADD, plugin alone"), ("floor", floor_label)),
        make_row("7. one ADD through cnipamd", s, ("agent", "ADD via cnipamd"), ("direct", "ADD, plugin alone")),
        make_row("7. ADD then DEL", s, ("agent-pair", "ADD+DEL via cnipamd"), ("floor-pair", "two bare interpreters")),
        make_row(
            "7. ADD then DEL", s, ("direct-pair", "ADD+DEL, plugin alone"), ("floor-pair", "two bare interpreters")
        ),
    ]


def figure_config(ctx: Context) -> str:
    """L. One config of 8,000 ranges against one range: ADD, DEL, the store's size."""
    return section_script(
        ctx, "the 8,000-range config", "large_config.py", lambda scripts: ["--exe", str(scripts / "cnipam")]
    )


def figure_listing(ctx: Context) -> str:
    """C. `cnipamctl leases` on 20,000 and 1,000,000 leases, the table against --json."""
    return section_script(
        ctx, "the leases listing", "ctl_listing.py", lambda scripts: ["--ctl", str(scripts / "cnipamctl")]
    )


# --------------------------------------------------------------------------- plots


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few runs, for a smoke test; writes no document")
    parser.add_argument(
        "--only",
        choices=["agent", "concurrency", "disk", "docker", "etcd", "reboot", "config", "listing"],
        help="measure only this figure (writes no document unless --output)",
    )
    parser.add_argument("--output", type=Path, help=f"Markdown file to write (default: {DEFAULT_DOC} on full runs)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the cnipam venv (default: the one running this script)",
    )
    parser.add_argument(
        "--source", type=Path, default=REPO, help="cnipam checkout to pip-install (default: this repository)"
    )
    return parser.parse_args(argv)


def real_interpreter(path: str) -> str:
    """Refuse a pyenv shim: it is a bash script that adds ~70 ms to every call."""
    with open(path, "rb") as f:
        if f.read(2) == b"#!":
            raise SystemExit(f"bench: {path} is a script (a pyenv shim?); pass a real interpreter with --python")
    return path


def build_context(args: argparse.Namespace, tmp: Path, hyperfine: str) -> Context:
    interpreter = real_interpreter(args.python)
    cnipam, venv_python, missing = install_cnipam(interpreter, args.source, tmp)
    host_local_exe = None if args.only not in (None, "disk") else ensure_host_local()
    floor = launcher_interpreter(cnipam.exe) if cnipam else [interpreter, "-I", "-S"]
    ctx = Context(
        tmp=tmp,
        hyperfine=Hyperfine(hyperfine, CNI_BASE_ENV, tmp),
        plan=QUICK if args.quick else FULL,
        floor=floor,
        cnipam=cnipam,
        cnipam_missing=missing,
        venv_python=venv_python,
        host_local=HostLocal("host-local", host_local_exe) if host_local_exe else None,
    )
    if missing:
        ctx.problems.append(f"cnipam {missing}")
        ctx.cnipam_missing = "cnipam not available (see Problems)"
    return ctx


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()[0]
    hyperfine = ensure_hyperfine()
    tmp = Path(tempfile.mkdtemp(prefix="cnipam-bench-"))
    output = args.output or (None if args.quick or args.only else DEFAULT_DOC)
    try:
        ctx = build_context(args, tmp, hyperfine)
        machine = describe_machine(ctx.floor[0], hyperfine, ctx.host_local.exe if ctx.host_local else None, tmp)
        extra: list[str] = []
        if args.only == "agent":
            rows, imports = figure_agent(ctx), None
        elif args.only == "disk":
            rows, imports = figure_disk(ctx), None
        elif args.only == "concurrency":
            rows, imports, extra = [], None, [figure_concurrency(ctx)]
        elif args.only == "docker":
            rows, imports, extra = [], None, [figure_docker(ctx)]
        elif args.only == "etcd":
            rows, imports, extra = [], None, [figure_etcd(ctx)]
        elif args.only == "reboot":
            rows, imports, extra = [], None, [figure_reboot(ctx)]
        elif args.only == "config":
            rows, imports, extra = [], None, [figure_config(ctx)]
        elif args.only == "listing":
            rows, imports, extra = [], None, [figure_listing(ctx)]
        else:
            rows = figure_startup(ctx)
            rows += figure_growth(ctx)
            rows += figure_million(ctx)
            rows += figure_parallel(ctx)
            rows += figure_memory(ctx)
            rows += figure_agent(ctx)
            rows += figure_disk(ctx)
            imports = figure_imports(ctx)
            extra = [
                figure_concurrency(ctx),
                figure_docker(ctx),
                figure_etcd(ctx),
                figure_reboot(ctx),
                figure_config(ctx),
                figure_listing(ctx),
            ]
        figures, problem = make_plots(
            ctx.lease_curves,
            ctx.docker_plot,
            output.resolve().parent if output else None,
            ctx.tmp,
            ctx.concurrency_plot,
        )
        if problem is not None:
            ctx.problems.append(problem)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    launcher = "`#!" + shlex.join(ctx.floor).replace(str(tmp), "$TMP") + "`" if ctx.cnipam else "not installed"
    machine = dataclasses.replace(machine, launcher=launcher, load=f"{load_start:.1f} \u2192 {os.getloadavg()[0]:.1f}")
    add_ms = ctx.add_seconds * 1e3 if ctx.add_seconds else None
    command = (
        "python3 bench/run.py" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    )
    text = document(
        machine,
        rows,
        import_table(imports, add_ms),
        command,
        ctx.problems,
        extra=[part for part in extra if part],
        figures=figures,
    )
    print(text)
    if output is not None:
        output.write_text(text)
        print(f"bench: wrote {output}")
    print(f"bench: finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
