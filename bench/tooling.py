"""External tools the benchmark needs, and a description of the machine it ran on.

The bench must work on a fresh machine of the project's kind, so it installs what it
needs (hyperfine, the Go host-local reference) itself when it runs as root, instead of
relying on whatever a previous session left behind.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HOST_LOCAL = Path("/usr/lib/cni/host-local")
HOST_LOCAL_PACKAGE = "containernetworking-plugins"
GNU_TIME = "/usr/bin/time"

_apt_updated = False
# version and the real binary behind a venv's symlink (the venv itself is deleted at exit)
_DESCRIBE_PYTHON = "import os, sys; print(sys.version.split()[0], os.path.realpath(sys.executable))"


T = TypeVar("T")


def in_temp_folder(prefix: str, work: Callable[[Path], T]) -> T:
    """`work` in a new temp folder, removed afterwards whatever happens: a section's own
    command line runs it the way bench/run.py runs it inside its own folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return work(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(package: str) -> bool:
    """Install one Debian package; run `apt-get update` once per process first.

    Returns False (with the reason printed) instead of raising, so that a missing
    reference tool only blanks its own rows rather than the whole run.
    """
    global _apt_updated
    if not _is_root() or shutil.which("apt-get") is None:
        print(f"bench: cannot install {package}: not root or no apt-get")
        return False
    print(f"bench: installing {package} with apt-get ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    if not _apt_updated:
        subprocess.run(["apt-get", "update"], check=False, **quiet)  # type: ignore[call-overload]
        _apt_updated = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(  # type: ignore[call-overload]
        ["apt-get", "install", "-y", "--no-install-recommends", package], env=env, check=False, **quiet
    )
    if done.returncode != 0:
        print(f"bench: apt-get install {package} failed:\n{done.stderr[-2000:]}")
        return False
    return True


def ensure_hyperfine() -> str:
    """Return the hyperfine path, installing it when missing; exit if impossible.

    hyperfine is not optional: every timing in the report comes from its exported JSON.
    """
    found = shutil.which("hyperfine")
    if found is None and _apt_install("hyperfine"):
        found = shutil.which("hyperfine")
    if found is None:
        raise SystemExit(
            "bench: hyperfine is required. Install it with `apt-get install hyperfine` (as root), "
            "or put it on PATH, then rerun."
        )
    return found


def ensure_host_local() -> Path | None:
    """Return the Go host-local binary, installing Debian's package when missing.

    None means host-local rows will say "not installed"; the cnipam rows still run.
    """
    if not HOST_LOCAL.exists():
        _apt_install(HOST_LOCAL_PACKAGE)
    return HOST_LOCAL if HOST_LOCAL.exists() else None


def ensure_strace() -> str | None:
    """strace, to count a call's syncs (syscalls.py); None blanks those rows."""
    if shutil.which("strace") is None:
        _apt_install("strace")
    return shutil.which("strace")


def ensure_gnu_time() -> str | None:
    """GNU time, for peak RSS (see timing.max_rss_kib); None blanks the memory rows."""
    if not Path(GNU_TIME).exists():
        _apt_install("time")
    return GNU_TIME if Path(GNU_TIME).exists() else None


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _tmp_filesystem(tmp: Path) -> str:
    """findmnt names ext4 as such; `stat -f` (the fallback) only says ext2/ext3."""
    found = _first_line(["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp)])
    return found if found != "unknown" else _first_line(["stat", "-f", "-c", "%T", str(tmp)])


@dataclass(frozen=True)
class Machine:
    """Everything a reader needs to judge whether two reports are comparable."""

    date: str
    cpus: int
    cpu_model: str
    memory: str
    kernel: str
    os: str
    tmp_fs: str
    python: str
    hyperfine: str
    host_local: str
    launcher: str = "not installed"  # cnipam's `#!` line: interpreter and flags of every call
    load: str = "unknown"  # 1-minute load average at start -> end: how busy the shared box was

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("date (UTC)", self.date),
            ("CPUs (`nproc`)", str(self.cpus)),
            ("CPU model", self.cpu_model),
            ("memory", self.memory),
            ("kernel", self.kernel),
            ("OS", self.os),
            ("temp dir file system", self.tmp_fs),
            ("interpreter", self.python),
            ("hyperfine", self.hyperfine),
            ("host-local", self.host_local),
            ("cnipam launcher's first line", self.launcher),
            ("load average (1 min), start \u2192 end", self.load),
        ]


def describe_machine(interpreter: str, hyperfine: str, host_local: Path | None, tmp: Path) -> Machine:
    """Collect machine facts once, at the start, so the report says where it came from."""
    python = _first_line([interpreter, "-I", "-S", "-c", _DESCRIBE_PYTHON])
    package = ["dpkg-query", "-W", "-f", "${Package} ${Version}", HOST_LOCAL_PACKAGE]
    hl = "not installed" if host_local is None else _first_line(package)
    return Machine(
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        cpus=len(os.sched_getaffinity(0)),  # what `nproc` prints
        cpu_model=_cpu_model(),
        memory=_mem_total(),
        kernel=platform.release(),
        os=_os_release(),
        tmp_fs=_tmp_filesystem(tmp),
        python=python,
        hyperfine=_first_line([hyperfine, "--version"]),
        host_local=hl,
    )
