#!/usr/bin/env python3
"""Disk fault campaign: the SQLite store on a full disk, a read-only remount and damaged
bytes, with the installed plugin and cnipamctl doing what a runtime and an operator do.

Each round mounts a small tmpfs of its own (root only; always unmounted), fills a store
on it from concurrent plugin processes, and keeps a model of who holds what from the
results they print. Then:

* **full disk**: the disk is filled to the last byte; concurrent workers ADD (must fail,
  code 5, naming the full file system), DEL (must succeed: the reserve is given up for
  them) and CHECK (must succeed), and cnipamctl reads beside them. Space is freed and
  ADDs succeed again.
* **read-only remount**: half the rounds first leave commits in the WAL (a writer killed
  holding the store); ADD and DEL must fail with code 5 naming the read-only mount,
  CHECK and cnipamctl reads must answer from everything committed, WAL included.
* **damage**: copies of the store get 1-3 runs of random bytes at random offsets. On one
  copy every verb runs: it answers or fails with code 5 (CHECK: or 102), never 999, never
  a traceback, and an ADD never returns an address the model says another owner holds. On
  another, `cnipamctl check` either reports the damage (exit 1) or the store is exactly the
  model; `cnipamctl recover` builds a new store in which every address of the model is
  held by its owner, or kept held with its owner lost, or reported as possibly lost (only
  when the free index was damaged too); the new store passes check and its ADDs never
  return a model address. A plain SQL scan of the same copy is counted beside it.

After the full-disk and read-only phases the store must hold exactly the model (no lease
lost, none extra, no address twice) and pass `cnipamctl check`.

    python3 campaigns/disk_faults.py --rounds 10 --damages 20

CI runs one short round (tests/campaigns/test_disk_faults_campaign.py). Exit status 1 on
any broken promise, with the work folder kept.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from campaign import WAIT, CampaignFailure, executable, expect

from cnipam.testing.small_disk import SmallDisk, unavailable

IPAM = {"type": "cnipam", "ipv4-subnet": "10.77.0.0/22", "ipv6-subnet": "fd77::/64"}
CONFIG = {"cniVersion": "1.1.0", "name": "disk", "ipam": IPAM}
WORKERS = 6
DAMAGE_LENGTHS = (1, 8, 64, 512, 4096)

Model = dict[str, list[str]]  # container -> the addresses it holds


class Campaign:
    def __init__(self, rounds: int, damages: int, owners: int, seed: int, workdir: Path, log: Any = print) -> None:
        self.rounds = rounds
        self.damages = damages
        self.owners = owners
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.log = log
        self.plugin = executable("cnipam")
        self.ctl = executable("cnipamctl")
        self.counts: Counter[str] = Counter()
        self.serial = 0
        self.phase = "healthy"
        self.read_only_with_wal = False  # every round, not every other one

    # -- processes ----------------------------------------------------------------------

    def cni(self, verb: str, container: str, db: str, config: dict[str, Any] = CONFIG) -> tuple[int, dict[str, Any]]:
        env = {
            "PATH": "/usr/bin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/x", "CNI_PATH": "/opt/cni/bin", "IPAM_DB_PATH": db,
        }  # fmt: skip
        done = subprocess.run(
            [self.plugin], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=WAIT
        )
        expect("Traceback" not in done.stdout + done.stderr, f"{verb} {container} printed a traceback: {done.stderr}")
        try:
            answer = json.loads(done.stdout) if done.stdout.strip() else {}
        except ValueError:
            raise CampaignFailure(f"{verb} {container} printed something that is not JSON: {done.stdout!r}") from None
        expect(answer.get("code") != 999, f"{verb} {container} answered 999: {answer}")
        self.counts[f"{self.phase}: {verb} {'ok' if done.returncode == 0 else answer.get('code')}"] += 1
        return done.returncode, answer

    def cnipamctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.ctl, *args], capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
        expect("Traceback" not in done.stdout + done.stderr, f"cnipamctl {' '.join(args)}: traceback {done.stderr}")
        expect(done.returncode in (0, 1), f"cnipamctl {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def new_owner(self) -> str:
        self.serial += 1
        return f"c{self.serial}"

    # -- reading the store back ---------------------------------------------------------

    def holders(self, db: str) -> Model:
        done = self.cnipamctl("leases", "--json", "--db", db)
        expect(done.returncode == 0, f"cnipamctl leases failed: {done.stderr}")
        held: Model = {}
        seen: set[str] = set()
        for lease in json.loads(done.stdout):
            expect(lease["ip"] not in seen, f"{lease['ip']} is held twice")
            seen.add(lease["ip"])
            if lease["kind"] == "lease":
                held.setdefault(lease["container_id"], []).append(lease["ip"])
        return {owner: sorted(ips) for owner, ips in held.items()}

    def verify(self, db: str, model: Model, when: str) -> None:
        held = self.holders(db)
        lost = sorted(set(model) - set(held))
        extra = sorted(set(held) - set(model))
        changed = sorted(owner for owner in set(model) & set(held) if held[owner] != model[owner])
        expect(not (lost or extra or changed), f"{when}: lost {lost[:5]}, extra {extra[:5]}, changed {changed[:5]}")
        check = self.cnipamctl("check", "--db", db)
        expect(check.stdout.strip() == "ok", f"{when}: cnipamctl check: {check.stdout} {check.stderr}")

    # -- one round --------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        for number in range(self.rounds):
            with SmallDisk(3072) as disk:
                db = disk.path("ipam.db")
                model = self.populate(db)
                self.full_disk(disk, db, model)
                self.read_only(disk, db, model, leave_wal=self.read_only_with_wal or number % 2 == 1)
                image = Path(db).read_bytes()
            for _ in range(self.damages):
                self.damage(image, model)
            self.log(f"round {number + 1}/{self.rounds}: {dict(sorted(self.counts.items()))}")
        return {"rounds": self.rounds, "seconds": round(time.monotonic() - started, 1), **dict(self.counts)}

    def populate(self, db: str) -> Model:
        self.phase = "healthy"
        model: Model = {}
        owners = [self.new_owner() for _ in range(self.owners)]
        with ThreadPoolExecutor(WORKERS) as pool:
            for owner, (code, answer) in zip(owners, pool.map(lambda o: self.cni("ADD", o, db), owners), strict=True):
                expect(code == 0, f"ADD {owner} on a healthy disk: {answer}")
                model[owner] = sorted(ip["address"].split("/")[0] for ip in answer["ips"])
        for owner in self.rng.sample(owners, len(owners) // 5):
            expect(self.cni("DEL", owner, db)[0] == 0, f"DEL {owner} on a healthy disk")
            del model[owner]
        self.verify(db, model, "populated")
        return model

    def full_disk(self, disk: SmallDisk, db: str, model: Model) -> None:
        self.phase = "full disk"
        disk.fill()
        self.counts["full-disk phases"] += 1
        held = list(model)
        self.rng.shuffle(held)
        work = [("DEL", owner) for owner in held[: len(held) // 4]]
        work += [("CHECK", owner) for owner in held[len(held) // 4 : len(held) // 2]]
        work += [("ADD", self.new_owner()) for _ in range(len(held) // 4)]
        self.rng.shuffle(work)

        def one(item: tuple[str, str]) -> None:
            verb, owner = item
            code, answer = self.cni(verb, owner, db, {**CONFIG, "cniVersion": "1.0.0"})
            if verb == "ADD":
                expect((code, answer.get("code")) == (1, 5), f"ADD on a full disk: {answer}")
                expect(f"the file system holding {disk.folder} is full" in answer["msg"], f"ADD: {answer['msg']}")
            else:
                expect(code == 0, f"{verb} {owner} on a full disk: {answer}")

        with ThreadPoolExecutor(WORKERS) as pool:
            readers = [pool.submit(self.holders, db) for _ in range(3)]
            list(pool.map(one, work))
            for reader in readers:
                reader.result()
        for verb, owner in work:
            if verb == "DEL":
                del model[owner]
        self.verify(db, model, "full disk")
        disk.free()
        self.phase = "healthy"
        for _ in range(3):
            owner = self.new_owner()
            code, answer = self.cni("ADD", owner, db)
            expect(code == 0, f"ADD after the disk was freed: {answer}")
            model[owner] = sorted(ip["address"].split("/")[0] for ip in answer["ips"])
        self.verify(db, model, "disk freed")

    def read_only(self, disk: SmallDisk, db: str, model: Model, leave_wal: bool) -> None:
        if leave_wal:
            owner = self.new_owner()
            model[owner] = self.commit_and_die(db, owner)
        disk.remount(read_only=True)
        self.phase = "read-only"
        self.counts["read-only phases" + (" (WAL left by a killed writer)" if leave_wal else "")] += 1
        try:
            for verb, owner in (("ADD", self.new_owner()), ("DEL", self.rng.choice(list(model)))):
                code, answer = self.cni(verb, owner, db)
                expect((code, answer.get("code")) == (1, 5), f"{verb} on a read-only mount: {answer}")
                expect("mounted read-only" in answer["msg"], f"{verb} on a read-only mount: {answer['msg']}")
            for owner in self.rng.sample(list(model), min(5, len(model))):
                expect(self.cni("CHECK", owner, db)[0] == 0, f"CHECK {owner} on a read-only mount")
            self.verify(db, model, "read-only mount")
        finally:
            disk.remount(read_only=False)
            self.phase = "healthy"
        self.verify(db, model, "remounted read-write")

    def commit_and_die(self, db: str, owner: str) -> list[str]:
        """An ADD committed by a process SIGKILLed before it closed the store."""
        script = f"""
import os, signal, sys
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.sqlite import SQLiteStore
store = SQLiteStore({db!r})
store._db.execute("PRAGMA wal_autocheckpoint = 0")
leases = store.allocate(Owner.for_request(None, {CONFIG["name"]!r}, {owner!r}, "eth0"), parse_ecs({IPAM!r}).pools)
print(" ".join(sorted(lease.ip for lease in leases)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
        expect(done.returncode == -signal.SIGKILL, f"the writer to kill: {done.stderr}")
        expect(os.path.getsize(db + "-wal") > 0, "the killed writer left no WAL")
        return sorted(done.stdout.split())

    # -- damage -----------------------------------------------------------------------

    def damage(self, image: bytes, model: Model) -> None:
        damaged = bytearray(image)
        for _ in range(self.rng.randint(1, 3)):
            length = self.rng.choice(DAMAGE_LENGTHS)
            offset = self.rng.randrange(len(damaged))
            damaged[offset : offset + length] = bytes(self.rng.randrange(256) for _ in range(length))
        del damaged[len(image) :]
        folder = Path(tempfile.mkdtemp(prefix="damage-", dir=self.workdir))
        used, inspected, rebuilt = (str(folder / name) for name in ("used.db", "inspected.db", "rebuilt.db"))
        for name in (used, inspected):
            Path(name).write_bytes(damaged)
        self.counts["damaged copies"] += 1
        self.phase = "damaged"
        self.verbs_on_damage(used, model)
        self.phase = "recovered"
        self.inspect_and_recover(inspected, rebuilt, model)
        shutil.rmtree(folder)

    def verbs_on_damage(self, db: str, model: Model) -> None:
        """Every verb once; the GC last, since what it releases is not printed (an ADD after
        it could rightly reuse an address the model still gives its owner)."""
        taken = {ip: owner for owner, ips in model.items() for ip in ips}
        owners = list(model)
        attachments = [{"containerID": owner, "ifname": "eth0"} for owner in owners]
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("ADD", self.new_owner(), CONFIG), ("CHECK", self.rng.choice(owners), CONFIG), ("STATUS", "x", CONFIG),
            ("DEL", self.rng.choice(owners), CONFIG), ("ADD", self.new_owner(), CONFIG),
            ("GC", "x", {**CONFIG, "cni.dev/valid-attachments": attachments}),
        ]  # fmt: skip
        for verb, owner, config in calls:
            code, answer = self.cni(verb, owner, db, config)
            if code:
                allowed = (5, 102) if verb == "CHECK" else (5,)
                expect(answer.get("code") in allowed, f"{verb} on a damaged store answered {answer}")
                expect(answer.get("code") != 5 or db in answer["msg"], f"{verb}: code 5 without the file: {answer}")
            elif verb == "DEL":
                taken = {ip: holder for ip, holder in taken.items() if holder != owner}
            elif verb == "ADD":
                for ip in answer["ips"]:
                    address = ip["address"].split("/")[0]
                    expect(
                        address not in taken,
                        f"ADD on a damaged store handed out {address}, held by {taken.get(address)}",
                    )

    def inspect_and_recover(self, db: str, rebuilt: str, model: Model) -> None:
        self.counts["damage: plain SQL scan rows"] += self.sql_scan(db)
        self.counts["damage: model leases"] += sum(len(ips) for ips in model.values())
        check = self.cnipamctl("check", "--db", db)
        if check.returncode:
            self.counts["damage: reported by check"] += 1
        else:
            self.counts["damage: check found nothing"] += 1
            self.verify(db, model, "a damaged copy that check calls ok")
        done = self.cnipamctl("recover", db, "--to", rebuilt, "--json")
        expect(done.returncode == 0, f"cnipamctl recover: {done.stderr}")
        report = json.loads(done.stdout)
        self.verify_recovered(rebuilt, model, report)

    def sql_scan(self, db: str) -> int:
        """Leases a plain `SELECT` returns before the first error (in a process of its own)."""
        script = f"""
import sqlite3
count = 0
try:
    db = sqlite3.connect("file:{db}?mode=ro&immutable=1", uri=True)
    for _ in db.execute("SELECT * FROM leases WHERE kind = 'lease'"):
        count += 1
except sqlite3.DatabaseError:
    pass
print(count)
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
        return int(done.stdout.strip() or 0)

    def verify_recovered(self, db: str, model: Model, report: dict[str, Any]) -> None:
        check = self.cnipamctl("check", "--db", db)
        expect(check.stdout.strip() == "ok", f"the recovered store fails check: {check.stdout}")
        done = self.cnipamctl("leases", "--json", "--db", db)
        by_address = {lease["ip"]: lease for lease in json.loads(done.stdout)}
        free_index_damaged = any("free index" in note for note in report["notes"])
        for owner, ips in model.items():
            for ip in ips:
                lease = by_address.get(ip)
                if lease is None:
                    expect(free_index_damaged, f"recover lost {ip} of {owner} and did not say it might")
                    self.counts["recover: model leases lost, reported"] += 1
                elif lease["container_id"] == owner or lease["handle"] == f"cni:{CONFIG['name']}/{owner}/eth0":
                    self.counts["recover: model leases kept with their owner"] += 1
                else:
                    expect(
                        lease["handle"] is None and lease["container_id"] == "",
                        f"recover gave {ip} of {owner} to {lease['handle']}",
                    )
                    self.counts["recover: model leases kept, owner lost"] += 1
        self.counts["recover: leases saved whole"] += report["saved"]
        self.counts["recover: rebuilt from an index"] += len(report["rebuilt"])
        taken = {ip for ips in model.values() for ip in ips}
        for _ in range(3):
            code, answer = self.cni("ADD", self.new_owner(), db)
            expect(code == 0, f"ADD on the recovered store: {answer}")
            for ip in answer["ips"]:
                address = ip["address"].split("/")[0]
                expect(address not in taken, f"the recovered store handed out {address}, held before the damage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--damages", type=int, default=20, help="damaged copies per round")
    parser.add_argument("--owners", type=int, default=120, help="owners (dual-stack) in the store of a round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"disk fault campaign: {reason}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="cnipam-disk-faults-"))
    campaign = Campaign(
        args.rounds, args.damages, args.owners, args.seed, workdir, lambda line: print(line, file=sys.stderr)
    )
    try:
        report = campaign.run()
    except CampaignFailure as failure:
        print(f"DEFECT: {failure} (work folder kept: {workdir})", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
