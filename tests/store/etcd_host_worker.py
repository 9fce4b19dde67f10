"""One simulated host's allocating process, for the multi-host tests: it allocates
dual-stack leases from one shared pool, releases every third one again, and writes what
it holds at the end (and how many Txns it had to compute again) as JSON.

Run as: python etcd_host_worker.py ENDPOINT PREFIX HOST LOCK_DIR COUNT OUT [busy_ok]
With busy_ok, StoreBusy (etcd away for a moment) is retried until it answers again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import StoreBusy
from cnipam.core.leases import Owner
from cnipam.store.etcd import EtcdStore
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings

POOLS = parse_ecs({"ipv4-subnet": "10.20.0.0/16", "ipv6-subnet": "fd20::/64"}).pools


def main() -> None:
    endpoint, prefix, host, lock_dir, count, out = sys.argv[1:7]
    busy_ok = sys.argv[7:] == ["busy_ok"]
    store = open_etcd(EtcdSettings((endpoint,), prefix, host, lock_dir=lock_dir), 2.0)
    assert isinstance(store, EtcdStore)
    held: dict[str, list[str]] = {}
    busy = 0
    for n in range(int(count)):
        owner = Owner.for_request(None, "cluster", f"{Path(out).stem}-{n}", "eth0")
        while True:
            try:
                leases = store.allocate(owner, POOLS)
                break
            except StoreBusy:
                if not busy_ok:
                    raise
                busy += 1
                time.sleep(0.1)  # an interrupted ADD is retried, as a runtime retries code 11
        assert owner.handle is not None
        held[owner.handle] = [lease.ip for lease in leases]
        if n % 3 == 2:
            victim = Owner.for_request(None, "cluster", f"{Path(out).stem}-{n - 1}", "eth0").handle
            assert victim is not None
            while True:
                try:
                    store.release(victim)
                    break
                except StoreBusy:
                    if not busy_ok:
                        raise
                    busy += 1
                    time.sleep(0.1)
            del held[victim]
    store.close()
    with open(out, "w", encoding="utf-8") as sink:
        json.dump({"held": held, "retries": store.retries, "busy": busy}, sink)


if __name__ == "__main__":
    main()
