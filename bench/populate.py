"""Fill a store with N existing leases, fast, for the growth benchmarks.

Going through N ADD processes would take hours at 1,000,000 leases, so each tool's
store is written directly in its own on-disk format:

* host-local: one file per address, as in shared/reference/baseline.md's populate.py (same content, so
  the figures are comparable with the baseline's 131 ms / 681 ms);
* cnipam: its bulk-import API, run inside the bench's cnipam venv (this file is also
  that helper's entry point: `venv/bin/python populate.py DB SUBNET N`).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

LEASE_ID = "pop{}"
IFNAME = "eth0"


def first_host(subnet: str) -> int:
    """Leases start at network + 2, the gateway being network + 1 (both tools agree)."""
    return int(ipaddress.ip_network(subnet).network_address) + 2


def populate_host_local(data_dir: Path, network_name: str, subnet: str, n: int) -> None:
    """Write n host-local lease files and put the allocation cursor after the last one.

    The cursor at the end is host-local's normal steady state (it allocates round-robin)
    and the baseline's "cursor at end" row.
    """
    folder = data_dir / network_name
    folder.mkdir(parents=True, exist_ok=True)
    base, last = first_host(subnet), None
    make = ipaddress.ip_address
    for i in range(n):
        last = str(make(base + i))
        (folder / last).write_bytes(f"{LEASE_ID.format(i)}\r\n{IFNAME}".encode())
    (folder / "last_reserved_ip.0").write_text(last or str(make(base - 1)))
    (folder / "lock").touch()


def populate_cnipam(venv_python: Path, db_path: Path, network_name: str, subnet: str, n: int) -> None:
    """Insert n leases into a cnipam SQLite store through cnipam's own bulk API.

    Runs in a child process with the venv's interpreter because cnipam is installed
    there, not in the interpreter that runs the bench.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(venv_python), __file__, str(db_path), network_name, subnet, str(n)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {done.returncode}")


def _cnipam_import(db_path: str, network_name: str, subnet: str, n: int) -> None:
    """Venv-side helper: n leases from network + 2 up, owned the way a CNI ADD of
    container `pop<i>` would own them, cursor after the last (like host-local's)."""
    from cnipam.core.leases import LEASE, Cursor, Lease  # only importable inside the venv
    from cnipam.store.sqlite import SQLiteStore

    net = ipaddress.ip_network(subnet)
    family, base, pool = net.version, first_host(subnet), str(net)

    def leases() -> Iterator[Lease]:
        for i in range(n):
            owner = LEASE_ID.format(i)
            handle = f"cni:{network_name}/{owner}/{IFNAME}"
            yield Lease(family, base + i, LEASE, pool, str(family), handle, network_name, owner, IFNAME, 0.0)

    store = SQLiteStore(db_path, timeout=60)
    try:
        # As an ecs pool's cursor; no history records (an export's empty history): the growth benchmarks
        # measure the leases, bench/history.py the history.
        inserted = store.import_leases(leases(), {pool: Cursor(family, base + n - 1, True)}, [])
    finally:
        store.close()
    if inserted != n:
        raise SystemExit(f"import_leases inserted {inserted} of {n} leases")


if __name__ == "__main__":
    _cnipam_import(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
