"""The etcd JSON-gateway client against a real etcd (no mocks).

Most tests share the session's etcd and keep to their own key prefix; the ones that
stop a server, enable auth or serve TLS start a private one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnipam.core.errors import StoreBusy, StoreIOError
from cnipam.store.etcdv3 import (
    EtcdClient,
    KeyValue,
    create_revision_is,
    delete_op,
    mod_revision_is,
    prefix_end,
    put_op,
    range_op,
    value_is,
)
from cnipam.testing.etcd_server import EtcdServer, free_port
from tests.support.etcd import PASSWORD, need_etcd


@pytest.fixture
def client(etcd_endpoint: str) -> Iterator[EtcdClient]:
    with EtcdClient([etcd_endpoint], timeout=5.0) as etcd:
        yield etcd


def under(prefix: bytes) -> tuple[bytes, bytes]:
    return prefix, prefix_end(prefix)


# -- KV ------------------------------------------------------------------------------------


def test_put_range_delete(client: EtcdClient, etcd_prefix: bytes) -> None:
    key = etcd_prefix + b"k"
    assert client.range(key)[0] == []
    first = client.put(key, b"one")
    second = client.put(key, b"two")
    assert second > first
    [kv], revision = client.range(key)
    assert revision >= second
    assert kv == KeyValue(key, b"two", first, second, 2, 0)
    assert client.delete(key) == 1
    assert client.delete(key) == 0
    assert client.range(key)[0] == []


def test_binary_keys_and_values_and_empty_value(client: EtcdClient, etcd_prefix: bytes) -> None:
    key = etcd_prefix + bytes(range(256))
    value = bytes(range(255, -1, -1)) * 3
    client.put(key, value)
    client.put(etcd_prefix + b"empty", b"")
    assert client.range(key)[0][0].value == value
    [empty] = client.range(etcd_prefix + b"empty")[0]
    assert empty.value == b"" and empty.version == 1


def test_prefix_range_limit_keys_only(client: EtcdClient, etcd_prefix: bytes) -> None:
    pool = etcd_prefix + b"pool/"
    names = [b"a", b"b", b"c\xff", b"\xff\xff", b"0"]
    for name in names:
        client.put(pool + name, b"v-" + name)
    client.put(etcd_prefix + b"pool0", b"sibling")  # "0" follows "/": just past the prefix
    client.put(etcd_prefix + b"pool", b"parent")
    kvs, _ = client.range(*under(pool))
    assert [kv.key for kv in kvs] == sorted(pool + name for name in names)
    assert [kv.value for kv in kvs] == [b"v-" + kv.key[len(pool) :] for kv in kvs]
    two, _ = client.range(*under(pool), limit=2)
    assert [kv.key for kv in two] == [kv.key for kv in kvs[:2]]
    bare, _ = client.range(*under(pool), keys_only=True)
    assert [kv.key for kv in bare] == [kv.key for kv in kvs] and all(kv.value == b"" for kv in bare)
    assert [kv.key for kv in client.range(*under(pool), serializable=True)[0]] == [kv.key for kv in kvs]
    # a bounded window: [pool/a, pool/c)
    assert [kv.key for kv in client.range(pool + b"a", pool + b"c")[0]] == [pool + b"a", pool + b"b"]
    assert client.delete(*under(pool)) == len(names)
    assert [kv.key for kv in client.range(*under(etcd_prefix))[0]] == [etcd_prefix + b"pool", etcd_prefix + b"pool0"]


def test_prefix_end() -> None:
    assert prefix_end(b"/ipam/") == b"/ipam0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"\xff\xff") == b"\x00"
    assert prefix_end(b"") == b"\x00"


def test_large_answers(client: EtcdClient, etcd_prefix: bytes) -> None:
    """Answers past a few KiB come chunked from the gateway; small ones with Content-Length."""
    big = os.urandom(300_000)
    client.put(etcd_prefix + b"big", big)
    for index in range(300):
        client.put(etcd_prefix + b"many/%04d" % index, b"x" * 100)
    assert client.range(etcd_prefix + b"big")[0][0].value == big
    kvs, _ = client.range(*under(etcd_prefix + b"many/"))
    assert len(kvs) == 300 and kvs[-1].key.endswith(b"0299")


# -- Txn -----------------------------------------------------------------------------------


def test_txn_create_if_absent_both_branches(client: EtcdClient, etcd_prefix: bytes) -> None:
    key, other = etcd_prefix + b"lease", etcd_prefix + b"handle"
    won = client.txn(
        [create_revision_is(key, 0)], [put_op(key, b"owner-1"), put_op(other, b"1"), range_op(key)], [range_op(key)]
    )
    assert won.succeeded
    assert won.responses[0] is None and won.responses[1] is None
    [created] = won.responses[2] or []
    assert created.value == b"owner-1" and created.create_revision == won.revision
    lost = client.txn(
        [create_revision_is(key, 0)], [put_op(key, b"owner-2")], [range_op(key), range_op(etcd_prefix + b"none")]
    )
    assert not lost.succeeded
    assert lost.revision == won.revision
    assert lost.responses == [[created], []]
    assert client.range(key)[0][0].value == b"owner-1"
    # CREATE == the key's real create_revision holds too
    assert client.txn([create_revision_is(key, created.create_revision)], [], []).succeeded


def test_txn_mod_revision(client: EtcdClient, etcd_prefix: bytes) -> None:
    key = etcd_prefix + b"interval"
    seen = client.put(key, b"10-20")
    assert client.txn([mod_revision_is(key, seen)], [put_op(key, b"11-20")]).succeeded
    stale = client.txn([mod_revision_is(key, seen)], [put_op(key, b"lost")], [range_op(key)])
    assert not stale.succeeded
    assert [kv.value for kv in stale.responses[0] or []] == [b"11-20"]
    assert not client.txn([mod_revision_is(etcd_prefix + b"absent", seen)], [put_op(key, b"lost")]).succeeded
    assert client.txn([mod_revision_is(etcd_prefix + b"absent", 0)], []).succeeded  # absent key: MOD is 0


def test_txn_value_and_delete(client: EtcdClient, etcd_prefix: bytes) -> None:
    lease, handle = etcd_prefix + b"a/10.0.0.5", etcd_prefix + b"h/ctr-1"
    client.put(lease, b"ctr-1")
    client.put(handle, b"10.0.0.5")
    # a release by someone else: refused
    assert not client.txn([value_is(lease, b"ctr-2")], [delete_op(lease)]).succeeded
    assert not client.txn([value_is(etcd_prefix + b"absent", b"")], [delete_op(lease)]).succeeded
    # both compares must hold
    assert not client.txn([value_is(lease, b"ctr-1"), create_revision_is(handle, 0)], [delete_op(lease)]).succeeded
    released = client.txn([value_is(lease, b"ctr-1")], [delete_op(lease), delete_op(*under(etcd_prefix + b"h/"))])
    assert released.succeeded and released.responses == [None, None]
    assert client.range(*under(etcd_prefix))[0] == []


def test_create_race_threads(etcd_endpoint: str, etcd_prefix: bytes) -> None:
    """Eight clients race to create the same keys: each key has exactly one winner."""
    keys = [etcd_prefix + b"slot/%d" % index for index in range(10)]
    barrier = threading.Barrier(8)
    wins: dict[int, list[bytes]] = {}
    errors: list[BaseException] = []

    def racer(number: int) -> None:
        try:
            with EtcdClient([etcd_endpoint]) as etcd:
                etcd.range(b"warm-up")
                barrier.wait()
                mine = b"thread-%d" % number
                wins[number] = [
                    key for key in keys if etcd.txn([create_revision_is(key, 0)], [put_op(key, mine)]).succeeded
                ]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    won = sorted(key for keys_won in wins.values() for key in keys_won)
    assert won == sorted(keys)
    with EtcdClient([etcd_endpoint]) as etcd:
        for number, keys_won in wins.items():
            for key in keys_won:
                assert etcd.range(key)[0][0].value == b"thread-%d" % number


RACER = """
import sys, time
from cnipam.store.etcdv3 import EtcdClient, create_revision_is, put_op
endpoint, prefix, name, start = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode(), float(sys.argv[4])
etcd = EtcdClient([endpoint])
etcd.range(b"warm-up")
time.sleep(max(0.0, start - time.time()))
for index in range(20):
    key = prefix + b"%02d" % index
    if etcd.txn([create_revision_is(key, 0)], [put_op(key, name)]).succeeded:
        print(key.decode())
"""


def test_create_race_processes(etcd_endpoint: str, etcd_prefix: bytes) -> None:
    """Four processes (as four CNI calls would) race for 20 keys: every key has one owner, and it is the stored one."""
    prefix = etcd_prefix.decode() + "p/"
    start = time.time() + 0.5
    command = [sys.executable, "-c", RACER, etcd_endpoint, prefix]
    procs = [
        subprocess.Popen([*command, f"proc-{number}", str(start)], stdout=subprocess.PIPE, text=True)
        for number in range(4)
    ]
    outputs = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    claimed = sorted(key for output in outputs for key in output)
    assert claimed == [f"{prefix}{index:02d}" for index in range(20)]
    with EtcdClient([etcd_endpoint]) as etcd:
        stored = {kv.key.decode(): kv.value.decode() for kv in etcd.range(*under(prefix.encode()))[0]}
    assert stored == {key: f"proc-{number}" for number, output in enumerate(outputs) for key in output}


def test_create_if_absent_latency(client: EtcdClient, etcd_prefix: bytes) -> None:
    """A create-if-absent Txn on a kept connection, under a loose bound: only to catch a stall
    (Nagle, reconnects); bench/etcd_cluster.py measures the cost."""
    timings = []
    for index in range(200):
        key = etcd_prefix + b"%d" % index
        began = time.perf_counter()
        assert client.txn([create_revision_is(key, 0)], [put_op(key, b"h")]).succeeded
        timings.append(time.perf_counter() - began)
    timings.sort()
    median = timings[len(timings) // 2]
    print(f"create-if-absent txn: median {median * 1000:.2f} ms, p90 {timings[180] * 1000:.2f} ms")
    assert median < 0.05


HEAVY_MODULES = (
    "re",
    "enum",
    "socket",
    "ssl",
    "json",
    "http",
    "email",
    "base64",
    "encodings.idna",
    "dataclasses",
    "typing",
)
IMPORT_PROBE = """
import sys
sys.path.insert(0, sys.argv[2])
from cnipam.store.etcdv3 import EtcdClient, create_revision_is, put_op, prefix_end
etcd = EtcdClient([sys.argv[1]])
key = sys.argv[3].encode()
etcd.txn([create_revision_is(key, 0)], [put_op(key, b"h")])
etcd.range(key, prefix_end(key))
etcd.lease_revoke(etcd.lease_grant(5))
print(" ".join(sorted(sys.modules)))
"""


def test_a_call_imports_nothing_heavy(etcd_endpoint: str, etcd_prefix: bytes) -> None:
    """The plugin pays for every import on every call (shared/reference/distributed.md §2)."""
    import cnipam

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(cnipam.__file__)))
    key = etcd_prefix.decode() + "probe"
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT_PROBE, etcd_endpoint, package_root, key],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stderr
    loaded = set(probe.stdout.split())
    assert "cnipam.store.etcdv3" in loaded
    assert sorted(name for name in loaded if name.split(".")[0] in HEAVY_MODULES or name in HEAVY_MODULES) == []


# -- leases --------------------------------------------------------------------------------


def test_lease_grant_keepalive_revoke(client: EtcdClient, etcd_prefix: bytes) -> None:
    lease = client.lease_grant(60)
    assert lease > 0
    assert 55 <= client.lease_keepalive(lease) <= 60
    key = etcd_prefix + b"reservation"
    client.put(key, b"in-progress", lease=lease)
    assert client.range(key)[0][0].lease == lease
    txn = client.txn(
        [create_revision_is(etcd_prefix + b"other", 0)], [put_op(etcd_prefix + b"other", b"x", lease=lease)]
    )
    assert txn.succeeded
    client.lease_revoke(lease)
    assert client.range(*under(etcd_prefix))[0] == []
    assert client.lease_keepalive(lease) == 0
    client.lease_revoke(lease)  # already gone: not an error
    with pytest.raises(StoreIOError, match="lease not found"):
        client.put(key, b"x", lease=lease)


# -- faults --------------------------------------------------------------------------------


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """A port whose connects hang: a listener with a full backlog drops further SYNs on Linux."""
    with socket.socket() as listener, socket.socket() as filler, socket.socket() as probe:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler.connect(address)
        probe.settimeout(0.2)
        try:
            probe.connect(address)
        except TimeoutError:
            yield f"http://127.0.0.1:{address[1]}"
            return
        pytest.skip("this kernel accepts connections past a full backlog: cannot make a connect hang")


def test_unreachable_is_busy_at_once(refused_url: str) -> None:
    began = time.monotonic()
    with pytest.raises(StoreBusy) as caught, EtcdClient([refused_url], timeout=2.0) as etcd:
        etcd.range(b"k")
    assert time.monotonic() - began < 1.0
    assert refused_url in caught.value.message and "refused" in caught.value.message


def test_silent_server_is_busy_within_timeout(silent_url: str) -> None:
    began = time.monotonic()
    with pytest.raises(StoreBusy) as caught, EtcdClient([silent_url], timeout=0.8) as etcd:
        etcd.put(b"k", b"v")
    elapsed = time.monotonic() - began
    assert 0.7 <= elapsed < 1.3, elapsed
    assert silent_url in caught.value.message and "no answer within 0.8 s" in caught.value.message


def test_hanging_connect_is_busy_within_timeout(blackhole_url: str) -> None:
    began = time.monotonic()
    with pytest.raises(StoreBusy, match="unreachable"), EtcdClient([blackhole_url], timeout=0.8) as etcd:
        etcd.range(b"k")
    assert time.monotonic() - began < 1.3


def test_failover_to_the_next_endpoint(
    refused_url: str, blackhole_url: str, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    with EtcdClient([refused_url, etcd_endpoint], timeout=2.0) as etcd:
        etcd.put(etcd_prefix + b"k", b"v")
        assert etcd.range(etcd_prefix + b"k")[0][0].value == b"v"
    # a hanging first endpoint gets half the time, leaving the other half for the second
    began = time.monotonic()
    with EtcdClient([blackhole_url, etcd_endpoint], timeout=2.0) as etcd:
        etcd._current = 0  # a process starts at the endpoint its pid picks: this test picks the first
        assert etcd.range(etcd_prefix + b"k")[0][0].value == b"v"
        assert 0.9 < time.monotonic() - began < 1.8
        began = time.monotonic()
        etcd.range(etcd_prefix + b"k")  # stays with the endpoint that answered
        assert time.monotonic() - began < 0.5


def test_a_read_moves_on_from_a_silent_member_and_a_write_is_never_sent_twice(
    silent_url: str, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    """A member that accepts connections and never answers (SIGSTOPped): a read gives it
    its share of the time and asks the next one; a write could have been applied, so it
    fails (11) and the next call starts at the next member."""
    with EtcdClient([silent_url, etcd_endpoint], timeout=1.0) as etcd:
        etcd._current = 0
        began = time.monotonic()
        assert etcd.range(etcd_prefix + b"k")[0] == []
        assert 0.4 < time.monotonic() - began < 0.9
        etcd._current = 0
        etcd.close()
        with pytest.raises(StoreBusy, match="no answer"):
            etcd.put(etcd_prefix + b"k", b"v")
        assert etcd.put(etcd_prefix + b"k", b"v") > 0


def test_a_caller_deadline_bounds_every_request(silent_url: str, etcd_endpoint: str, etcd_prefix: bytes) -> None:
    """An operation of several requests sets one deadline: none of them outlives it."""
    with EtcdClient([etcd_endpoint], timeout=5.0) as etcd:
        etcd.deadline = time.monotonic() - 0.001
        with pytest.raises(StoreBusy, match="used up its 5 s"):
            etcd.range(etcd_prefix + b"k")
    with EtcdClient([silent_url], timeout=5.0) as etcd:
        etcd.deadline = time.monotonic() + 0.5
        began = time.monotonic()
        with pytest.raises(StoreBusy, match="no answer"):
            etcd.put(etcd_prefix + b"k", b"v")
        assert time.monotonic() - began < 0.8


def test_stop_and_restart_mid_session(private_etcd: EtcdServer) -> None:
    with EtcdClient([private_etcd.endpoint], timeout=2.0) as etcd:
        revision = etcd.put(b"k", b"before")
        private_etcd.stop()
        began = time.monotonic()
        with pytest.raises(StoreBusy) as caught:
            etcd.range(b"k")
        assert time.monotonic() - began < 1.0
        assert private_etcd.endpoint in caught.value.message
        with pytest.raises(StoreBusy):
            etcd.txn([create_revision_is(b"k2", 0)], [put_op(b"k2", b"x")])
        private_etcd.start()
        [kv], _ = etcd.range(b"k")
        assert kv.value == b"before" and kv.mod_revision == revision
        assert etcd.txn([create_revision_is(b"k2", 0)], [put_op(b"k2", b"after")]).succeeded


# -- auth ----------------------------------------------------------------------------------


def test_auth_right_password(auth_etcd: str) -> None:
    with EtcdClient([auth_etcd], username="root", password=PASSWORD) as etcd:
        etcd.put(b"k", b"v")
        assert etcd.range(b"k")[0][0].value == b"v"
        # The server forgets tokens (restart, TTL): the client authenticates again, once.
        etcd._token = "forgotten.1"
        assert etcd.range(b"k")[0][0].value == b"v"
        assert etcd._token != "forgotten.1"


def test_auth_wrong_or_missing_password(auth_etcd: str) -> None:
    wrong = PASSWORD + "-wrong"
    with pytest.raises(StoreIOError) as caught, EtcdClient([auth_etcd], username="root", password=wrong) as etcd:
        etcd.range(b"k")
    error = caught.value
    text = f"{error} {error.message} {error.details} {error!r}"
    assert wrong not in text and PASSWORD not in text
    assert "authentication" in error.message and "root" in error.message and auth_etcd in error.message
    with pytest.raises(StoreIOError, match="user name is empty"), EtcdClient([auth_etcd]) as anonymous:
        anonymous.range(b"k")


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("cnipam-client")
    files = {
        "ca": tmp_path / "ca.pem",
        "server_cert": tmp_path / "server.pem",
        "server_key": tmp_path / "server-key.pem",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["server_cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return {name: str(path) for name, path in files.items()}


def test_tls_with_client_certificate(tls_files: dict[str, str]) -> None:
    need_etcd()
    with EtcdServer("tls", tls=(tls_files["server_cert"], tls_files["server_key"], tls_files["ca"])) as server:
        assert server.endpoint.startswith("https://")
        ca, cert, key = tls_files["ca"], tls_files["client_cert"], tls_files["client_key"]
        with EtcdClient([server.endpoint], ca_file=ca, cert_file=cert, key_file=key) as etcd:
            etcd.put(b"k", b"over TLS")
            assert etcd.range(b"k")[0][0].value == b"over TLS"
            assert etcd.txn([create_revision_is(b"k", 0)], [], [range_op(b"k")]).responses == [etcd.range(b"k")[0]]
        # the server's certificate is not signed by a CA the client trusts
        with (
            pytest.raises(StoreIOError, match="certificate verify failed"),
            EtcdClient([server.endpoint], timeout=2.0) as untrusting,
        ):
            untrusting.range(b"k")
        # etcd wants a client certificate and gets none
        with (
            pytest.raises(StoreIOError, match="TLS"),
            EtcdClient([server.endpoint], timeout=2.0, ca_file=tls_files["ca"]) as anonymous,
        ):
            anonymous.range(b"k")
