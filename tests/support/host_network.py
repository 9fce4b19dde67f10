"""The host's network stack, for the tests that build real networks on it: what it offers,
and running its commands (`ip`, `docker`, `podman`) as root would from a clean PATH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # not the caller's PATH, which may hold shims


def ipv6_enabled() -> bool:
    try:
        return Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text().strip() == "0"
    except OSError:
        return False


def host_command(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command; with `check`, a failure is an AssertionError naming it and its stderr."""
    done = subprocess.run(list(args), capture_output=True, text=True, env={"PATH": HOST_PATH}, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done
