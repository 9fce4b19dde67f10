"""Several hosts sharing one address space through a real etcd: parallel processes with
distinct host identities, the plugin selecting etcd from its config, faults (etcd away,
etcd restarted mid-run) and an operator releasing a dead host."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.addresses import parse_ip
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import AddressConflict, NotFound
from cnipam.core.leases import LEASE, Owner
from cnipam.store.etcd import EtcdStore
from cnipam.store.etcd_keys import BLOCK_BITS
from cnipam.store.etcdv3 import prefix_end
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from cnipam.testing.etcd_server import EtcdServer, free_port
from tests.support.etcd import need_etcd
from tests.support.plugin_calls import RunPlugin

WORKER = str(Path(__file__).with_name("etcd_host_worker.py"))
HOSTS = ("host-a", "host-b", "host-c", "host-d")


def open_host(endpoint: str, prefix: str, host: str, folder: Path, timeout: float = 5.0) -> EtcdStore:
    store = open_etcd(EtcdSettings((endpoint,), prefix, host, lock_dir=str(folder / host)), timeout)
    assert isinstance(store, EtcdStore)
    return store


def host_keys(store: EtcdStore, kind: str, host: str) -> list[bytes]:
    """The keys of one host's records of one kind (`host`, `cursor`, ...), read directly."""
    start = store.keys.key(kind, host)
    kvs, _ = store.client.range(start, prefix_end(start), keys_only=True)
    return [kv.key for kv in kvs]


def run_hosts(
    endpoint: str, prefix: str, folder: Path, per_process: int, processes: int, busy_ok: bool = False
) -> list[subprocess.Popen[bytes]]:
    started = []
    for host in HOSTS:
        for n in range(processes):
            out = folder / f"{host}-{n:05d}.json"
            args = [sys.executable, WORKER, endpoint, prefix, host, str(folder / host), str(per_process), str(out)]
            started.append(
                subprocess.Popen(
                    [*args, "busy_ok"] if busy_ok else args, env={"PYTHONPATH": str(Path(__file__).parents[2])}
                )
            )
    return started


def collect(folder: Path, started: list[subprocess.Popen[bytes]]) -> tuple[dict[str, list[str]], int, int]:
    for process in started:
        assert process.wait(timeout=300) == 0
    held: dict[str, list[str]] = {}
    retries = busy = 0
    for path in sorted(folder.glob("host-*.json")):
        report = json.loads(path.read_text())
        held.update(report["held"])
        retries += report["retries"]
        busy += report["busy"]
    return held, retries, busy


def assert_store_matches(store: EtcdStore, held: dict[str, list[str]]) -> None:
    granted = [ip for ips in held.values() for ip in ips]
    assert [ip for ip, count in Counter(granted).items() if count > 1] == []
    in_store: dict[str, list[str]] = {}
    for lease in store.leases(network="cluster"):
        if lease.kind == LEASE:
            assert lease.handle is not None
            in_store.setdefault(lease.handle, []).append(lease.ip)
    assert {handle: sorted(ips) for handle, ips in in_store.items()} == {
        handle: sorted(ips) for handle, ips in held.items()
    }
    assert store.problems() == []


def test_four_hosts_in_parallel_share_a_16_and_a_64_without_a_duplicate(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    need_etcd()
    prefix = etcd_prefix.decode()
    held, _, _ = collect(tmp_path, run_hosts(etcd_endpoint, prefix, tmp_path, per_process=45, processes=2))
    assert len(held) == len(HOSTS) * 2 * 30  # 45 allocations, 15 released, per process
    store = open_host(etcd_endpoint, prefix, "inspector", tmp_path)
    try:
        assert_store_matches(store, held)
        owners: dict[str, set[str]] = {}
        for lease in store.leases(network="cluster"):
            if lease.kind == LEASE:
                owners.setdefault(lease.container_id.rsplit("-", 2)[0], set()).add(lease.ip)
        blocks = {(block.family, block.number): block.host for block in store.blocks()}
        for host, ips in owners.items():  # every host allocated inside blocks it holds
            for ip in ips:
                family, address = parse_ip(ip)
                assert blocks[family, address >> BLOCK_BITS] == host, (
                    f"{ip} of {host} lies in a block of {blocks[family, address >> BLOCK_BITS]}"
                )
        assert {host for host in blocks.values() if host} == set(HOSTS)  # spread: each host holds its own blocks
        # Every change recorded once in its host's history, under sequence numbers without a gap or a repeat
        # (the host's processes queue on its flock; the log's compare settles the rest).
        events = Counter((record.host, record.event) for record in store.history())
        assert events == Counter({(h, e): n for h in HOSTS for e, n in (("allocated", 180), ("released", 60))})
        for host in HOSTS:
            start = store.keys.under("history", host)
            numbers = [int(kv.key[len(start) :], 16) for kv in store.client.range(start, prefix_end(start))[0]]
            assert numbers == list(range(240)), host
    finally:
        store.close()


def test_a_host_borrows_from_another_hosts_block_only_when_no_free_block_is_left(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    need_etcd()
    pools = parse_ecs({"ipv4-subnet": "10.30.0.0/23"}).pools  # exactly two blocks
    a, b = (open_host(etcd_endpoint, etcd_prefix.decode(), host, tmp_path) for host in ("host-a", "host-b"))
    try:
        assert [lease.ip for lease in a.allocate(Owner.for_request(None, "n", "a0", "eth0"), pools)] == ["10.30.0.2"]
        assert [lease.ip for lease in b.allocate(Owner.for_request(None, "n", "b0", "eth0"), pools)] == [
            "10.30.1.0"
        ]  # not a's block
        for n in range(1, 255):  # fill b's block: 10.30.1.0-10.30.1.254
            b.allocate(Owner.for_request(None, "n", f"b{n}", "eth0"), pools)
        borrowed = b.allocate(Owner.for_request(None, "n", "b-extra", "eth0"), pools)
        assert [lease.ip for lease in borrowed] == ["10.30.0.3"]  # only now from a's block
        assert {(block.number & 1, block.host) for block in a.blocks()} == {(0, "host-a"), (1, "host-b")}
        assert a.problems() == []
    finally:
        a.close()
        b.close()


def test_a_dead_hosts_leases_and_blocks_are_released_only_after_the_grace_period(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    need_etcd()
    pools = parse_ecs({"ipv4-subnet": "10.40.0.0/16"}).pools
    dead, operator = (
        open_host(etcd_endpoint, etcd_prefix.decode(), host, tmp_path) for host in ("host-dead", "host-ops")
    )
    dead.boot = "boot-1"
    try:
        for n in range(3):
            dead.allocate(Owner.for_request(None, "n", f"d{n}", "eth0"), pools)
        dead.collect_garbage("n", set(), grace=600)  # a first sighting of each
        seen = {record.host: record for record in operator.hosts()}
        found = seen["host-dead"]
        assert (found.blocks, found.leases, found.gateways) == (1, 3, 1)  # three leases and the gateway
        with pytest.raises(AddressConflict, match="within the grace period"):
            operator.release_host("host-dead", grace=3600)
        with pytest.raises(NotFound):
            operator.release_host("host-nobody", grace=0)
        released, blocks = operator.release_host("host-dead", grace=0)
        assert (sorted(lease.ip for lease in released), blocks) == (
            ["10.40.0.1", "10.40.0.2", "10.40.0.3", "10.40.0.4"],
            1,
        )
        assert operator.leases() == [] and operator.blocks() == []
        for kind in ("boot", "bootlease", "sighting", "kept"):  # nothing of the dead host's own is left
            start = f"{etcd_prefix.decode()}{kind}/host-dead".encode()
            assert operator.client.range(start, prefix_end(start))[0] == [], kind
        assert [lease.ip for lease in operator.allocate(Owner.for_request(None, "n", "o", "eth0"), pools)] == [
            "10.40.0.2"
        ]
        assert operator.problems() == []
    finally:
        dead.close()
        operator.close()


def test_an_etcd_restart_in_the_middle_of_a_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    need_etcd()
    with EtcdServer("restart") as server:
        started = run_hosts(server.endpoint, "/restart/", tmp_path, per_process=600, processes=1, busy_ok=True)
        time.sleep(0.7)
        server.restart()
        held, _, busy = collect(tmp_path, started)
        assert busy > 0  # the restart did land in the middle of the run
        store = open_host(server.endpoint, "/restart/", "inspector", tmp_path)
        try:
            assert_store_matches(store, held)
        finally:
            store.close()


def etcd_config(endpoints: list[str], **store: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "cluster",
        "ipam": {
            "type": "cnipam",
            "ipv4-subnet": "10.50.0.0/24",
            "ipv6-subnet": "fd50::/64",
            "store": {"type": "etcd", "endpoints": endpoints, **store},
        },
    }


def test_the_plugin_uses_etcd_when_its_config_says_so(
    run_plugin: RunPlugin, db_path: Path, etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    need_etcd()
    config = etcd_config([etcd_endpoint], prefix=etcd_prefix.decode(), host="node-1", lockDir=str(tmp_path / "lock"))
    added = run_plugin("ADD", config, {"CNI_CONTAINERID": "c1"})
    assert added.code == 0, added.out
    assert [entry["address"] for entry in added.out["ips"]] == ["10.50.0.2/24", "fd50::2/64"]
    assert not db_path.exists()  # nothing went to the embedded store
    again = run_plugin("ADD", config, {"CNI_CONTAINERID": "c1"})
    assert again.out == added.out  # idempotent
    checked = run_plugin("CHECK", {**config, "prevResult": added.out}, {"CNI_CONTAINERID": "c1"})
    assert checked.code == 0, checked.out
    assert run_plugin("DEL", config, {"CNI_CONTAINERID": "c1"}).code == 0
    store = open_host(etcd_endpoint, etcd_prefix.decode(), "node-1", tmp_path)
    try:
        assert store.leases(network="cluster") == [lease for lease in store.leases() if lease.kind != LEASE]
    finally:
        store.close()


def test_cnipam_store_in_the_environment_selects_etcd_for_every_network(
    run_plugin: RunPlugin, db_path: Path, etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    need_etcd()
    config = etcd_config([etcd_endpoint])
    del config["ipam"]["store"]
    chosen = json.dumps(
        {
            "type": "etcd",
            "endpoints": [etcd_endpoint],
            "prefix": etcd_prefix.decode(),
            "lockDir": str(tmp_path / "lock"),
        }
    )
    added = run_plugin("ADD", config, {"CNI_CONTAINERID": "c1", "CNIPAM_STORE": chosen, "CNIPAM_HOST": "node-9"})
    assert added.code == 0, added.out
    store = open_host(etcd_endpoint, etcd_prefix.decode(), "node-9", tmp_path)
    try:
        assert {block.host for block in store.blocks()} == {"node-9"}
    finally:
        store.close()


def test_an_unreachable_etcd_is_code_11_within_the_timeout_and_writes_nothing(
    run_plugin: RunPlugin, db_path: Path, tmp_path: Path
) -> None:
    config = etcd_config([f"http://127.0.0.1:{free_port()}"], lockDir=str(tmp_path / "lock"))
    started = time.monotonic()
    answer = run_plugin("ADD", config, {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "1s"})
    elapsed = time.monotonic() - started
    assert (answer.code, answer.out["code"]) == (1, 11), answer.out
    assert "127.0.0.1" in answer.out["msg"]
    assert elapsed < 5.0  # a 1 s deadline, with room for a loaded machine's process start


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"type": "zookeeper"}, "not a store type"),
        ({"type": "etcd"}, "endpoints"),
        ({"type": "etcd", "endpoints": ["ftp://x:1"]}, "not an http"),
        ({"type": "etcd", "endpoints": ["http://x:1"], "prefix": "nodelimiter"}, "must end with '/'"),
        ({"type": "etcd", "endpoints": ["http://x:1"], "password": "secret"}, "needs a username"),
        ({"type": "etcd", "endpoints": ["http://x:1"], "tls": {"ca": "/ca.pem"}}, "not https"),
        ({"type": "etcd", "endpoints": ["http://x:1"], "color": "blue"}, "unknown key 'color'"),
    ],
)
def test_a_bad_store_object_is_code_7_naming_the_problem(
    run_plugin: RunPlugin, db_path: Path, tmp_path: Path, store: dict[str, Any], message: str
) -> None:
    config = etcd_config([])
    config["ipam"]["store"] = store
    answer = run_plugin("ADD", config, {"CNI_CONTAINERID": "c1"})
    assert answer.out["code"] == 7 and message in answer.out["msg"], answer.out
    assert "secret" not in answer.out["msg"]


def test_cnipamctl_lists_hosts_and_blocks_and_releases_a_dead_host(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    from tests.support.ctl_calls import call, ok, refused

    need_etcd()
    pools = parse_ecs({"ipv4-subnet": "10.60.0.0/16"}).pools
    dead = open_host(etcd_endpoint, etcd_prefix.decode(), "host-dead", tmp_path)
    for n in range(2):
        dead.allocate(Owner.for_request(None, "n", f"d{n}", "eth0"), pools)
    dead.close()
    store = json.dumps(
        {
            "type": "etcd",
            "endpoints": [etcd_endpoint],
            "prefix": etcd_prefix.decode(),
            "host": "ops",
            "lockDir": str(tmp_path / "ops"),
        }
    )
    listed = ok("--store", store, "hosts", "list", "--json").json()
    assert [(h["host"], h["blocks"], h["leases"], h["gateways"]) for h in listed] == [("host-dead", 1, 2, 1)]
    assert ok("--store", store, "hosts", "blocks", "--json").json() == [
        {"block": "10.60.0.0/24", "host": "host-dead", "taken": 3}
    ]
    assert [row["ip"] for row in ok("--store", store, "leases", "--json").json()] == [
        "10.60.0.1",
        "10.60.0.2",
        "10.60.0.3",
    ]
    refused(call("--store", store, "hosts", "release", "host-dead", "--yes"), says="within the grace period")
    refused(call("--store", store, "hosts", "release", "host-dead"), says="pass --yes")
    peek = open_host(etcd_endpoint, etcd_prefix.decode(), "peek", tmp_path)  # reads only
    assert host_keys(peek, "cursor", "host-dead")  # its round-robin position
    released = ok("--store", store, "hosts", "release", "host-dead", "--grace", "0s", "--yes", "--json").json()
    assert (len(released["released"]), released["blocks"]) == (3, 1)
    assert ok("--store", store, "check").code == 0
    assert ok("--store", store, "hosts", "list", "--json").json() == []  # the operator's "ops" wrote, yet is no host
    assert not host_keys(peek, "cursor", "host-dead") and not host_keys(peek, "host", "host-dead")
    peek.close()
    refused(call("--db", str(tmp_path / "x.db"), "hosts", "list"), says="no store at")
    refused(call("--store", '{"type": "etcd"}', "hosts", "list"), says="endpoints")


def test_a_long_lived_store_allocating_from_what_it_knew_never_duplicates(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    """The agent's store starts each allocation from the last change it committed; another
    process of the same host (a direct plugin call) changes the same block in between, so
    the warm attempt's compares fail and it is computed again from fresh reads."""
    need_etcd()
    pools = parse_ecs({"ipv4-subnet": "10.70.0.0/24", "ipv6-subnet": "fd70::/120"}).pools
    agent, direct = (open_host(etcd_endpoint, etcd_prefix.decode(), "node", tmp_path) for _ in range(2))
    try:
        granted = []
        for n in range(40):
            store = direct if n % 3 == 2 else agent
            granted += [lease.ip for lease in store.allocate(Owner.for_request(None, "n", f"c{n}", "eth0"), pools)]
            if n % 5 == 4:  # a release behind the agent's back
                assert direct.release(Owner.for_request(None, "n", f"c{n - 1}", "eth0").handle)
        assert agent.warm_misses > 0  # its knowledge did go stale, and it recovered
        held = [lease.ip for lease in agent.leases() if lease.kind == LEASE]
        assert len(held) == len(set(held)) == 80 - 2 * 8
        again = agent.allocate(Owner.for_request(None, "n", "c0", "eth0"), pools)  # idempotent from warm state too
        assert [lease.ip for lease in again] == granted[:2]
        assert agent.problems() == []
    finally:
        agent.close()
        direct.close()


def test_a_long_lived_store_adds_and_deletes_in_one_round_trip_each(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    """What the agent pays per ADD in an ADD/DEL churn: the DEL reads what it removes, and
    what it read joins what the process knew, so the next ADD still commits blind in one Txn
    (all of it compared), and the lowest-free / round-robin order is the fresh path's."""
    need_etcd()
    pools = parse_ecs({"ipv4-subnet": "10.71.0.0/24", "ipv6-subnet": "fd71::/120"}).pools
    store = open_host(etcd_endpoint, etcd_prefix.decode(), "node", tmp_path)
    assert isinstance(store, EtcdStore)
    sent: list[str] = []
    post = store.client._post

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(path)
        return post(path, *args, **kwargs)

    store.client._post = counting  # type: ignore[method-assign]
    try:
        granted = []
        for n in range(6):
            sent.clear()
            granted.append([lease.ip for lease in store.allocate(Owner.for_request(None, "n", f"c{n}", "eth0"), pools)])
            if n:  # the first ADD of the process reads what it needs
                assert sent == ["/v3/kv/txn"], sent
            sent.clear()
            assert len(store.release(Owner.for_request(None, "n", f"c{n}", "eth0").handle)) == 2
            assert sent == ["/v3/kv/txn"], sent  # the DEL too: decided on what the ADD wrote, all of it compared
            assert store.leases() == []  # the gateways went with the last leases of their subnets
        assert granted == [
            [f"10.71.0.{n + 2}", f"fd71::{n + 2:x}"] for n in range(6)
        ]  # ecs-ipam: round-robin past the last one
        assert store.warm_misses == 0 and store.problems() == []
    finally:
        store.close()


def test_a_gateway_is_kept_when_another_host_leases_in_its_subnet_meanwhile(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    """The last DEL of a subnet lets its gateway reservation go, having seen no other lease
    there. Another host's ADD between that read and the commit must keep it: the commit
    compares that no key of the subnet was written since the read, and is computed again.
    The subnet spans two blocks, so the other host's lease lands in a block of its own and
    nothing but that compare can notice it."""
    from cnipam.store.etcd_change import Change

    need_etcd()
    prefix = etcd_prefix.decode()
    first, second = (open_host(etcd_endpoint, prefix, host, tmp_path) for host in ("host-a", "host-b"))
    pools = parse_ecs({"ipv4-subnet": "10.44.0.0/23"}).pools
    [lease] = first.allocate(Owner.for_request(None, "net", "a", "eth0"), pools)
    change = Change(first.client, first.keys)
    change.remove_leases(change.held_by(lease.handle or ""))  # reads the subnet: only the gateway is left
    assert change.ops.keys() >= {first.keys.lease(4, parse_ip("10.44.0.1")[1])}  # it would delete the gateway
    second.allocate(Owner.for_request(None, "net", "b", "eth0"), pools)  # meanwhile, on another host
    assert change.commit() is None  # refused: computed again, the DEL keeps the gateway
    first.release(lease.handle)
    assert sorted((row.ip, row.kind) for row in second.leases()) == [("10.44.0.1", "gateway"), ("10.44.1.0", LEASE)]
    second.release(Owner.for_request(None, "net", "b", "eth0").handle)
    assert second.leases() == []
    first.close()
    second.close()


def in_another_process(endpoint: str, prefix: str, folder: Path, code: str) -> None:
    """Run `code` with `store` (host "node", as the tests' long-lived store) and `Owner`,
    `parse_ecs` at hand, in a process of its own."""
    script = f"""
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
store = open_etcd(EtcdSettings(({endpoint!r},), {prefix!r}, "node", lock_dir={str(folder / "node")!r}), 5.0)
{code}
store.close()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_warm_del_whose_knowledge_went_stale_is_computed_again_from_fresh_reads(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    """A long-lived store (cnipamd) decides a DEL on the leases it wrote itself, without a
    read; each time another process changed the owner's leases in between, the Txn's
    compares fail and the DEL is computed again from fresh reads: it releases exactly
    what the owner holds now, and never another owner's lease at an address it knew."""
    need_etcd()
    prefix = etcd_prefix.decode()
    v4: dict[str, object] = {"ipv4-subnet": "10.72.0.0/24"}
    pools = parse_ecs(v4).pools
    store = open_host(etcd_endpoint, prefix, "node", tmp_path)

    def owner(name: str) -> Owner:
        return Owner.for_request(None, "n", name, "eth0")

    def held() -> dict[str | None, list[str]]:
        found: dict[str | None, list[str]] = {}
        for lease in store.leases():
            if lease.kind == LEASE:
                found.setdefault(lease.handle, []).append(lease.ip)
        return found

    try:
        # 1. the owner gained a lease this process never saw (another pool): both are released
        # (only the compare that the owner's index holds nothing else can tell)
        store.allocate(owner("grown"), pools)
        both = {**v4, "ipv6-subnet": "fd72::/120"}
        in_another_process(
            etcd_endpoint, prefix, tmp_path,
            f"store.allocate(Owner.for_request(None, 'n', 'grown', 'eth0'), parse_ecs({both!r}).pools)",
        )  # fmt: skip
        assert len(held()[owner("grown").handle]) == 2
        misses = store.warm_misses
        assert len(store.release(owner("grown").handle)) == 2
        assert store.warm_misses == misses + 1
        assert owner("grown").handle not in held()

        # 2. the owner's lease was released and made again elsewhere: the new one is released
        [first] = store.allocate(owner("moved"), pools)
        in_another_process(
            etcd_endpoint, prefix, tmp_path,
            f"h = Owner.for_request(None, 'n', 'moved', 'eth0')\nstore.release(h.handle)\n"
            f"store.allocate(h, parse_ecs({v4!r}).pools)",
        )  # fmt: skip
        moved = held()[owner("moved").handle]
        assert moved != [first.ip]
        misses = store.warm_misses
        assert [lease.ip for lease in store.release(owner("moved").handle)] == moved
        assert store.warm_misses == misses + 1
        assert owner("moved").handle not in held()

        # 3. the owner's lease was released and another owner took its very address: kept
        [known] = store.allocate(owner("gone"), pools)
        taken = {**v4, "ipv4-address": f"{known.ip}/24"}
        in_another_process(
            etcd_endpoint, prefix, tmp_path,
            f"store.release(Owner.for_request(None, 'n', 'gone', 'eth0').handle)\n"
            f"store.allocate(Owner.for_request(None, 'n', 'other', 'eth0'), parse_ecs({taken!r}).pools)",
        )  # fmt: skip
        assert held() == {owner("other").handle: [known.ip]}
        misses = store.warm_misses
        assert store.release(owner("gone").handle) == []
        assert store.warm_misses == misses + 1
        assert held() == {owner("other").handle: [known.ip]}  # another owner's lease is never freed
        assert store.problems() == []

        # 4. knowledge that still holds: no miss, the gateway goes with the subnet's last lease
        assert store.release(owner("other").handle)
        store.allocate(owner("still"), pools)
        misses = store.warm_misses
        assert len(store.release(owner("still").handle)) == 1
        assert store.warm_misses == misses
        assert store.leases() == [] and store.problems() == []
    finally:
        store.close()


def test_a_warm_del_keeps_the_gateway_when_another_host_leased_in_its_subnet(
    etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path
) -> None:
    """The warm DEL of a subnet's last known lease lets the gateway go only while the subnet
    holds no other key (one range compare per gap): another host's lease there, in a block
    this process never read, fails that compare, and the fresh DEL keeps the gateway."""
    need_etcd()
    prefix = etcd_prefix.decode()
    first, second = (open_host(etcd_endpoint, prefix, host, tmp_path) for host in ("host-a", "host-b"))
    pools = parse_ecs({"ipv4-subnet": "10.45.0.0/23"}).pools
    try:
        first.allocate(Owner.for_request(None, "net", "a", "eth0"), pools)
        second.allocate(Owner.for_request(None, "net", "b", "eth0"), pools)  # in a block of its own
        misses = first.warm_misses
        assert [lease.ip for lease in first.release(Owner.for_request(None, "net", "a", "eth0").handle)] == [
            "10.45.0.2"
        ]
        assert first.warm_misses == misses + 1
        assert sorted((row.ip, row.kind) for row in second.leases()) == [
            ("10.45.0.1", "gateway"),
            ("10.45.1.0", LEASE),
        ]
        second.release(Owner.for_request(None, "net", "b", "eth0").handle)
        assert second.leases() == [] and second.problems() == []
    finally:
        first.close()
        second.close()
