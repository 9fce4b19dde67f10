"""The kernel boot a call runs in (core.reboot): `CNIPAM_BOOT_ID`, else the kernel's
`/proc/sys/kernel/random/boot_id`.

The variable is for tests (a simulated reboot) and for plugins whose `/proc` is not the
host's; it must then be set for every cnipam process of the host alike, or they would
take each other's leases for an earlier boot's. Read with `posix.open`/`posix.read`, not
`open()`, which would build a buffered text file for 37 bytes: the plugin reads it on
every call (bench/reboot.py measures it). Unreadable (no procfs) means unknown: the
call's leases then record no boot and nothing is repaired.
"""

from __future__ import annotations

import posix

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
VARIABLE = "CNIPAM_BOOT_ID"


def current_boot(env: dict[str, str]) -> str:
    given = env.get(VARIABLE, "").strip()
    if given:
        return given
    try:
        fd = posix.open(BOOT_ID_FILE, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return posix.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return ""
    finally:
        posix.close(fd)
