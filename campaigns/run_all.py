"""Every campaign in full, one after the other: the one command behind docs/campaigns.md.

Usage: python3 campaigns/run_all.py [--runs 3000] [--seconds 60]

Runs the crash campaign on SQLite, etcd and the Docker driver, then the contention
campaign on SQLite and on etcd (four simulated hosts), then both plugin campaigns again
with cnipamd beside the plugins (--agent), then the etcd fault campaign (a three-member
cluster) and, as root, the disk fault campaign, each as its own process with the
interpreter running this script (the one whose environment has cnipam installed). Stops
at the first campaign that reports a broken promise, and exits with its status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", type=int, default=3000, help="plugin runs (requests for the Docker driver: x7) per crash campaign"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each contention campaign")
    args = parser.parse_args()
    crash = [sys.executable, str(ROOT / "campaigns" / "crash.py")]
    contention = [sys.executable, str(ROOT / "campaigns" / "contention.py"), "--seconds", str(args.seconds)]
    steps = [
        [*crash, "--engine", "sqlite", "--runs", str(args.runs)],
        [*crash, "--engine", "etcd", "--runs", str(args.runs)],
        [*crash, "--engine", "docker", "--runs", str(args.runs * 7)],
        [*contention, "--store", "sqlite"],
        [*contention, "--store", "etcd"],
        [*crash, "--engine", "sqlite", "--runs", str(args.runs), "--agent"],
        [*crash, "--engine", "etcd", "--runs", str(args.runs), "--agent"],
        [*contention, "--store", "sqlite", "--agent"],
        [*contention, "--store", "etcd", "--agent"],
        [sys.executable, str(ROOT / "campaigns" / "etcd_faults.py")],
    ]
    if os.geteuid() == 0:  # it mounts a tmpfs of its own
        steps.append([sys.executable, str(ROOT / "campaigns" / "disk_faults.py")])
    else:
        print("campaigns/disk_faults.py skipped: mounting a tmpfs needs root", file=sys.stderr)
    for step in steps:
        print("campaign:", " ".join(step[1:]), flush=True)
        status = subprocess.run(step, cwd=ROOT).returncode
        if status:
            print(f"campaign failed with status {status}: {' '.join(step[1:])}", file=sys.stderr)
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
