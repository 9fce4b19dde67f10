"""Reboot repair (core.reboot): after a reboot, the plugin alone gives this host's CNI
leases of earlier boots back, keeping each address for its attachment's return.

A reboot is simulated by opening the store with another boot id (CNIPAM_BOOT_ID for the
plugin and cnipamctl), on both engines: a pool full before the reboot serves a new ADD at
once after it; a returning attachment gets its old address if nobody took it; Docker's
pools and addresses, and on etcd other hosts' leases, are never touched; a repair cut
short by a crash is finished by the next call.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.addresses import parse_cidr
from cnipam.core.docker_pools import PoolClaim
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import PoolExhausted
from cnipam.core.leases import LEASE, Lease, Owner
from cnipam.store.base import Store
from cnipam.store.etcd_change import Change
from tests.support.plugin_calls import RunPlugin, installed
from tests.support.store_engines import ENGINES, etcd_store

Opener = Callable[[str], Store]
POOLS = parse_ecs({"ipv4-subnet": "10.0.0.0/29", "ipv6-subnet": "fd00::/125"}).pools  # .2-.6; ::2-::7
WIDE = parse_ecs({"ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "fd00::/64"}).pools


@pytest.fixture(params=sorted(ENGINES))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the test's store as a process of the given boot would."""
    opened: list[Store] = []

    def open_for(boot: str) -> Store:
        store = ENGINES[request.param](request, tmp_path)
        store.boot = boot
        opened.append(store)
        return store

    yield open_for
    assert opened[-1].problems() == []
    for store in opened:
        store.close()


def attachment(container: str, boot: str) -> Owner:
    return Owner.for_request(None, "net", container, "eth0", f"/run/netns/{container}", boot)


def cni_leases(store: Store) -> list[Lease]:
    return [lease for lease in store.leases() if lease.kind == LEASE and not lease.network.startswith("docker:")]


def test_a_full_pool_serves_at_once_after_a_reboot_and_a_returning_attachment_gets_its_address(opener: Opener) -> None:
    before = opener("boot-1")
    old = {name: [lease.ip for lease in before.allocate(attachment(name, "boot-1"), POOLS)] for name in "abcde"}
    assert {(lease.boot, lease.netns) for lease in before.held_by("cni:net/c/eth0")} == {("boot-1", "/run/netns/c")}
    pool = before.claim_docker_pool(
        PoolClaim("CnipamLocal", 4, parse_cidr("10.7.0.0/24", "pool")[1], None, 24, None, "{}")
    )
    docker = before.request_docker_address(pool.id, None)

    after = opener("boot-2")
    assert [lease.ip for lease in after.earlier_boot_leases()] == sorted(ip for ips in old.values() for ip in ips)
    new = after.allocate(attachment("new", "boot-2"), POOLS)  # the first ADD after the reboot: the pool was full
    assert len(new) == 2 and {lease.boot for lease in new} == {"boot-2"}
    assert after.earlier_boot_leases() == []
    taken = {lease.ip for lease in new}
    returned = 0
    for name in "edcb":  # the runtime starts the same containers again (a fifth would find the pool full)
        back = [lease.ip for lease in after.allocate(attachment(name, "boot-2"), POOLS)]
        if not taken & set(old[name]):  # nobody took its addresses meanwhile
            assert back == old[name], name  # so it has them again, as it would have without the reboot
            returned += 1
        taken.update(back)
    assert returned >= 3
    with pytest.raises(PoolExhausted):
        after.allocate(attachment("a", "boot-2"), POOLS)
    assert (
        after.docker_pools() == [pool] and after.lookup(docker.family, docker.address) == docker
    )  # Docker outlives reboots
    held = [lease.ip for lease in cni_leases(after)]
    assert len(held) == len(set(held)) == 10


def test_a_full_pool_beyond_the_first_step_serves_at_once_and_is_not_called_exhausted(opener: Opener) -> None:
    """The step of the first call releases the lowest addresses first; a full pool higher up
    is served all the same (its own earlier boots' leases are released by the ADD that
    needs one), and STATUS does not call it exhausted meanwhile."""
    busy = parse_ecs({"ipv4-subnet": "10.1.0.0/24"}).pools
    small = parse_ecs({"ipv4-subnet": "10.9.0.0/29"}).pools  # above the busy pool: the first steps do not reach it
    before = opener("boot-1")
    for n in range(100):
        before.allocate(attachment(f"busy{n}", "boot-1"), busy)
    for name in "abcde":
        before.allocate(attachment(name, "boot-1"), small)
    after = opener("boot-2")
    assert after.exhausted(small) == []  # full of leases a reboot ended: not exhausted
    assert after.allocate(attachment("new", "boot-2"), small)[0].ip.startswith("10.9.0.")
    assert len(after.earlier_boot_leases()) > 30  # the repair itself is still under way


def test_a_step_of_the_repair_releases_owners_whole(opener: Opener) -> None:
    before = opener("boot-1")
    for n in range(80):
        before.allocate(attachment(f"d{n}", "boot-1"), WIDE)  # dual-stack: IPv4 and IPv6 lie far apart
    after = opener("boot-2")
    after.allocate(attachment("new", "boot-2"), WIDE)
    left: dict[str, int] = {}
    for lease in after.earlier_boot_leases():
        left[lease.container_id] = left.get(lease.container_id, 0) + 1
    assert 0 < len(left) < 80 and set(left.values()) == {2}  # a step, and no owner split by it


def test_a_repair_touches_nothing_that_records_no_boot(opener: Opener) -> None:
    before = opener("")  # a process that does not know its boot (cnipamctl, or no /proc)
    before.allocate(attachment("old", ""), POOLS)  # made before boots were recorded, or migrated
    before.allocate(Owner.for_request("task", "net", "", "eth0", "", "boot-1"), POOLS)
    after = opener("boot-2")
    after.allocate(attachment("new", "boot-2"), POOLS)
    assert (
        sorted(lease.handle or "" for lease in cni_leases(after)) == ["cni:net/new/eth0"] * 2 + ["cni:net/old/eth0"] * 2
    )


def test_statuses_after_a_reboot_see_the_pool_whole(opener: Opener) -> None:
    before = opener("boot-1")
    for name in "abcde":
        before.allocate(attachment(name, "boot-1"), POOLS[:1])
    assert before.exhausted(POOLS[:1]) == list(POOLS[:1])
    assert opener("boot-2").exhausted(POOLS[:1]) == []


def test_on_etcd_only_the_rebooted_hosts_leases_are_released(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    stores = {host: etcd_store(request, tmp_path, host) for host in ("host-a", "host-b")}
    try:
        stores["host-a"].boot, stores["host-b"].boot = "a-1", "b-1"
        for n in range(3):
            stores["host-a"].allocate(attachment(f"a{n}", "a-1"), WIDE)
            stores["host-b"].allocate(attachment(f"b{n}", "b-1"), WIDE)
        rebooted = etcd_store(request, tmp_path, "host-a")
        rebooted.boot = "a-2"
        released = rebooted.release_earlier_boots()
        assert sorted({lease.container_id for lease in released}) == ["a0", "a1", "a2"]
        assert sorted({lease.container_id for lease in cni_leases(rebooted)}) == ["b0", "b1", "b2"]
        assert stores["host-b"].allocate(attachment("b3", "b-1"), WIDE)  # host-b's own boot is still current
        assert sorted({lease.container_id for lease in cni_leases(rebooted)}) == ["b0", "b1", "b2", "b3"]
        assert rebooted.problems() == []
        rebooted.close()
    finally:
        for store in stores.values():
            store.close()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_repair_goes_a_step_per_call_and_a_crash_leaves_it_to_the_next(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Each write releases a bounded step of the earlier boots' leases in its own
    transaction (SQLite REPAIR_CHUNK, etcd ADD_STEP in the ADD's Txn), so the first call
    after a reboot stays cheap; a crash inside a step leaves the store as the last commit
    left it, and the calls after it go on until the boot is recorded."""
    pools = parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools
    before = ENGINES[engine](request, tmp_path)
    before.boot = "boot-1"
    for n in range(150):
        before.allocate(attachment(f"c{n}", "boot-1"), pools)
    before.close()
    crashing = ENGINES[engine](request, tmp_path)
    crashing.boot = "boot-2"

    def dying_commit(change: Change) -> int | None:
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        if engine == "etcd":  # killed before the step's Txn is sent
            patched.setattr(Change, "commit", dying_commit)
        else:  # killed inside the step's transaction
            shared = crashing._file  # type: ignore[attr-defined]
            patched.setattr(shared, "db", _Proxy(shared.db))
        with pytest.raises(SystemExit):
            crashing.allocate(attachment("new", "boot-2"), pools)
    assert len(cni_leases(crashing)) == 150
    assert crashing.problems() == []
    crashing.close()
    after = ENGINES[engine](request, tmp_path)
    after.boot = "boot-2"
    after.allocate(attachment("new", "boot-2"), pools)
    left = [len(after.earlier_boot_leases())]
    assert 50 < left[0] < 150  # one step, not the whole repair
    while left[-1] and len(left) < 60:
        after.allocate(attachment(f"later{len(left)}", "boot-2"), pools)
        left.append(len(after.earlier_boot_leases()))
    assert left[-1] == 0 and all(a > b for a, b in itertools.pairwise(left)), left  # every call a step, to the end
    assert len(cni_leases(after)) == len(left)
    assert after.problems() == []
    after.close()


class _Proxy:
    """An SQLite connection that dies inside the repair's transaction, as a kill -9 would
    (the repair writes the released addresses after deleting the leases)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def executemany(self, sql: str, rows: Any) -> Any:
        if sql.startswith("INSERT OR REPLACE INTO released"):
            raise SystemExit("killed")
        return self._db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


# -- the plugin and cnipamctl, CNIPAM_BOOT_ID changed ------------------------------------------


def ecs(container_ipam: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "rb", "ipam": {"type": "ecs-ipam", **container_ipam}}


def test_the_plugin_repairs_by_itself_after_a_reboot(run_plugin: RunPlugin, db_path: Path) -> None:
    config = ecs({"ipv4-subnet": "10.3.0.0/29"})

    def add(container: str, boot: str) -> Any:
        return run_plugin("ADD", config, {"CNI_CONTAINERID": container, "CNIPAM_BOOT_ID": boot})

    before = {name: add(name, "11111111-boot").out["ips"][0]["address"] for name in "abcde"}
    assert add("f", "11111111-boot").code == 1  # full
    ctl = installed("cnipamctl")
    env = {"PATH": "/usr/bin:/bin", "IPAM_DB_PATH": str(db_path), "CNIPAM_BOOT_ID": "22222222-boot"}
    dry = json.loads(
        subprocess.run([ctl, "gc", "--previous-boots", "--json"], env=env, capture_output=True, check=True).stdout
    )
    assert (dry["applied"], len(dry["leases"]), dry["boot"]) == (False, 5, "22222222-boot")
    table = subprocess.run([ctl, "leases"], env=env, capture_output=True, text=True, check=True).stdout
    assert table.count("11111111") == 5  # the boot column
    shown = subprocess.run([ctl, "show", "c"], env=env, capture_output=True, text=True, check=True).stdout
    assert "boot:      11111111-boot" in shown and "netns:     /var/run/netns/test" in shown
    first = add("new", "22222222-boot")  # after the reboot: no operator, no daemon
    assert first.code == 0, first
    assert add("c", "22222222-boot").out["ips"][0]["address"] == before["c"]  # the runtime starts c again
    again = json.loads(
        subprocess.run([ctl, "gc", "--previous-boots", "--json"], env=env, capture_output=True, check=True).stdout
    )
    assert again["leases"] == []


def test_cnipamctl_gc_previous_boots_applies_what_its_dry_run_lists(run_plugin: RunPlugin, db_path: Path) -> None:
    config = ecs({"ipv4-subnet": "10.4.0.0/24"})
    for name in "abc":
        assert run_plugin("ADD", config, {"CNI_CONTAINERID": name, "CNIPAM_BOOT_ID": "boot-one"}).code == 0
    ctl = installed("cnipamctl")
    env = {"PATH": "/usr/bin:/bin", "IPAM_DB_PATH": str(db_path), "CNIPAM_BOOT_ID": "boot-two"}
    out = subprocess.run([ctl, "gc", "--previous-boots"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("would release 3 leases of earlier boots than boot-two (dry run")
    applied = json.loads(
        subprocess.run(
            [ctl, "gc", "--previous-boots", "--apply", "--json"], env=env, capture_output=True, check=True
        ).stdout
    )
    assert sorted(lease["container_id"] for lease in applied["leases"]) == ["a", "b", "c"]
    left = json.loads(subprocess.run([ctl, "leases", "--json"], env=env, capture_output=True, check=True).stdout)
    assert [lease["kind"] for lease in left] == ["gateway"]
    wrong = subprocess.run([ctl, "gc", "--previous-boots", "--network", "x"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "takes neither" in wrong.stderr
