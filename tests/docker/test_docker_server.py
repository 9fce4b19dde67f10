"""The real `cnipam-docker` executable on a UNIX socket in tmp_path, driven over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker_driver import EXECUTABLE, RunningDriver
from tests.support.plugin_calls import installed

pytestmark = pytest.mark.skipif(
    not os.path.exists(EXECUTABLE), reason="cnipam-docker is not installed next to this Python"
)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RunningDriver]:
    running = RunningDriver(tmp_path, "-v4", "198.18.0.0/22", "-v6", "2001:db8::/62")
    yield running
    if running.process.poll() is None:
        assert running.stop() == 0


def test_handshake_with_empty_bodies_and_content_type(driver: RunningDriver) -> None:
    status, reply, content_type = driver.raw("/Plugin.Activate")
    assert (status, reply, content_type) == (
        200,
        {"Implements": ["IpamDriver"]},
        "application/vnd.docker.plugins.v1+json",
    )
    assert driver.call("GetCapabilities", None)[1] == {"RequiresMACAddress": True, "RequiresRequestReplay": False}
    for body in (b"null", b"{}"):
        assert driver.raw("/IpamDriver.GetDefaultAddressSpaces", body)[0] == 200


def test_request_log_lines_name_the_pool_and_the_address(driver: RunningDriver) -> None:
    pool_id = str(driver.ok("RequestPool", {"Pool": "10.7.0.0/24"})["PoolID"])
    driver.ok("RequestAddress", {"PoolID": pool_id, "Address": ""})
    driver.call("RequestAddress", {"PoolID": pool_id, "Address": "10.7.0.1"})  # taken: 409
    driver.ok("ReleaseAddress", {"PoolID": pool_id, "Address": "10.7.0.1"})
    deadline = time.monotonic() + 10
    while True:  # a request is logged just after its reply is sent
        lines = [json.loads(line) for line in (driver.folder / "stderr.log").read_text().splitlines()]
        requests = [(e["method"].split(".")[-1], e.get("pool"), e.get("subnet"), e.get("address"), e["status"])
                    for e in lines if e["event"] == "request"]  # fmt: skip
        if len(requests) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert requests[-4:] == [
        ("RequestPool", pool_id, "10.7.0.0/24", None, 200),
        ("RequestAddress", pool_id, None, "10.7.0.1/24", 200),
        ("RequestAddress", pool_id, None, "10.7.0.1", 409),
        ("ReleaseAddress", pool_id, None, "10.7.0.1", 200),
    ]


def test_socket_mode_and_removal_on_sigterm(driver: RunningDriver) -> None:
    assert stat.S_IMODE(os.stat(driver.socket).st_mode) == 0o660
    assert driver.stop() == 0
    assert not os.path.exists(driver.socket)
    assert '"event": "stopped"' in (driver.folder / "stderr.log").read_text()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/IpamDriver.RequestPool", b"{bad json", 400),
        ("/IpamDriver.RequestPool", b"[]", 400),
        ("/IpamDriver.RequestPool", b'{"V6": "no"}', 400),
        ("/IpamDriver.RequestPool", b'{"Pool": 5}', 400),
        ("/IpamDriver.RequestPool", b"\xff\xfe", 400),
        ("/IpamDriver.RequestAddress", b'{"PoolID": "missing"}', 404),
        ("/IpamDriver.RequestAddress", b"{}", 400),
        ("/IpamDriver.ReleaseAddress", b'{"PoolID": "x"}', 400),
        ("/IpamDriver.ReleasePool", b'{"PoolID": "missing"}', 404),
        ("/IpamDriver.ReleasePool", b'{"PoolID": 7}', 400),
        ("/IpamDriver.Nope", b"", 404),
        ("/", b"", 404),
    ],
)
def test_every_failure_is_a_json_error(driver: RunningDriver, path: str, body: bytes, status: int) -> None:
    got, reply, _ = driver.raw(path, body)
    assert got == status
    assert set(reply) == {"Err"} and reply["Err"]


def test_oversized_body_and_wrong_http_method(driver: RunningDriver) -> None:
    status, reply, _ = driver.raw("/IpamDriver.RequestPool", b" " * (2 << 20))
    assert status == 413 and "exceeds" in str(reply["Err"])
    status, reply, _ = driver.raw("/Plugin.Activate", None, method="GET")
    assert status == 405 and reply["Err"]
    assert driver.raw("/Plugin.Activate")[0] == 200  # still serving


def test_docker_network_lifecycle(driver: RunningDriver) -> None:
    reply = driver.ok(
        "RequestPool", {"AddressSpace": "CnipamLocal", "Pool": "", "SubPool": "", "Options": {}, "V6": False}
    )
    pool_id, pool = reply["PoolID"], reply["Pool"]
    assert pool == "198.18.0.0/24"
    gateway = {"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}
    assert driver.ok("RequestAddress", gateway)["Address"] == "198.18.0.1/24"
    assert (
        driver.ok("RequestAddress", {"PoolID": pool_id, "Address": "198.18.0.200", "Options": None})["Address"]
        == "198.18.0.200/24"
    )
    assert driver.ok("RequestAddress", {"PoolID": pool_id, "Address": "", "Options": {}})["Address"] == "198.18.0.2/24"
    assert (
        driver.ok("RequestAddress", {"PoolID": pool_id, "Address": "198.18.0.9"})["Address"] == "198.18.0.9/24"
    )  # --ip
    status, reply = driver.call("RequestAddress", {"PoolID": pool_id, "Address": "198.18.0.9"})
    assert status == 409 and "198.18.0.9" in str(reply["Err"])
    assert driver.ok("ReleaseAddress", {"PoolID": pool_id, "Address": "198.18.0.2"}) == {}
    assert driver.ok("ReleasePool", {"PoolID": pool_id}) == {}


def test_overlapping_explicit_pools_are_refused_and_dynamic_skip_them(driver: RunningDriver) -> None:
    assert driver.ok("RequestPool", {"Pool": "198.18.0.0/24"})["Pool"] == "198.18.0.0/24"
    status, reply = driver.call("RequestPool", {"Pool": "198.18.0.128/25"})
    assert status == 409 and "overlaps" in str(reply["Err"])
    assert driver.ok("RequestPool", {})["Pool"] == "198.18.1.0/24"
    assert driver.ok("RequestPool", {"Pool": "::/64", "V6": True})["Pool"] == "2001:db8::/64"


def test_exhaustion_is_a_clean_error(driver: RunningDriver) -> None:
    pool_id = driver.ok("RequestPool", {"Pool": "10.7.0.0/30"})["PoolID"]
    assert [driver.ok("RequestAddress", {"PoolID": pool_id})["Address"] for _ in range(2)] == [
        "10.7.0.1/30",
        "10.7.0.2/30",
    ]
    status, reply = driver.call("RequestAddress", {"PoolID": pool_id})
    assert status == 503 and "no free address" in str(reply["Err"])
    for _ in range(4):
        driver.ok("RequestPool", {})
    status, reply = driver.call("RequestPool", {})
    assert status == 503 and "198.18.0.0/22" in str(reply["Err"])


def test_kill_9_keeps_every_pool_and_address_and_ids_are_never_reused(driver: RunningDriver) -> None:
    ids = set()
    pool_id = str(driver.ok("RequestPool", {"Pool": "10.8.0.0/24"})["PoolID"])
    ids.add(pool_id)
    driver.ok("RequestAddress", {"PoolID": pool_id, "Address": "10.8.0.50"})
    released = str(driver.ok("RequestPool", {})["PoolID"])
    ids.add(released)
    driver.ok("ReleasePool", {"PoolID": released})
    driver.stop(signal.SIGKILL)
    driver.start()  # the stale socket is replaced
    assert driver.call("RequestAddress", {"PoolID": pool_id, "Address": "10.8.0.50"})[0] == 409
    assert driver.ok("RequestAddress", {"PoolID": pool_id})["Address"] == "10.8.0.1/24"
    assert driver.call("RequestPool", {"Pool": "10.8.0.0/25"})[0] == 409
    again = str(driver.ok("RequestPool", {})["PoolID"])
    assert again not in ids


def test_a_second_driver_on_a_live_socket_is_refused(driver: RunningDriver, tmp_path: Path) -> None:
    result = subprocess.run(
        [EXECUTABLE, "--socket", driver.socket, "--db", str(tmp_path / "other.db")], capture_output=True, timeout=30
    )
    assert result.returncode == 2 and b"already listening" in result.stderr


def test_a_socket_in_a_missing_folder_tree_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir" / "d.sock"
    result = subprocess.run([EXECUTABLE, "--socket", str(missing), "--db", str(tmp_path / "d.db")], capture_output=True)
    assert result.returncode == 2 and b"does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_a_corrupt_store_stops_the_driver_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "bad.db").write_bytes(b"this is not a database at all")
    result = subprocess.run(
        [EXECUTABLE, "--socket", str(tmp_path / "s.sock"), "--db", str(tmp_path / "bad.db")],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 3 and b"not an SQLite database" in result.stderr
    [line] = result.stderr.decode().splitlines()  # said once, as the daemon's last JSON line
    assert json.loads(line)["event"] == "fatal"
    assert not (tmp_path / "s.sock").exists()


def test_tcp_mode_writes_and_removes_the_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec" / "cnipam.spec"
    log = open(tmp_path / "err.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [EXECUTABLE, "-address", "127.0.0.1:0", "--spec-dir", str(spec.parent), "--db", str(tmp_path / "t.db")],
        stderr=log,
    )
    deadline = time.monotonic() + 15
    while not spec.exists() or "listening" not in (tmp_path / "err.log").read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    url = spec.read_text().strip()
    assert url.startswith("tcp://127.0.0.1:")
    connection = http.client.HTTPConnection(url.removeprefix("tcp://"), timeout=10)
    connection.request("POST", "/Plugin.Activate")
    assert json.loads(connection.getresponse().read()) == {"Implements": ["IpamDriver"]}
    connection.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    log.close()
    assert not spec.exists()


def test_two_hosts_drivers_share_one_etcd_address_space(tmp_path: Path, etcd_endpoint: str, etcd_prefix: bytes) -> None:
    """A cluster's drivers, one per host, on one etcd: `--store` on one, CNIPAM_STORE on the
    other. A pool one host holds is refused to the other, dynamic pools never overlap, and
    the other host's cnipamctl sees every address."""
    store = {"type": "etcd", "endpoints": [etcd_endpoint], "prefix": etcd_prefix.decode()}
    pools = ("-v4", "198.18.0.0/22")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = RunningDriver(tmp_path / "a", *pools, store=["--store", json.dumps({**store, "host": "a"})])
    environment = {
        **os.environ,
        "CNIPAM_STORE": json.dumps(store),
        "CNIPAM_HOST": "b",
        "IPAM_DB_PATH": str(tmp_path / "unused.db"),
    }
    second = RunningDriver(tmp_path / "b", *pools, store=[], env=environment)
    try:
        explicit = first.ok("RequestPool", {"Pool": "198.18.0.0/24"})
        address = first.ok("RequestAddress", {"PoolID": explicit["PoolID"], "Address": ""})["Address"]
        status, reply = second.call("RequestPool", {"Pool": "198.18.0.0/25"})
        assert status == 409 and "198.18.0.0/24" in str(reply["Err"])
        dynamic = {first.ok("RequestPool", {})["Pool"], second.ok("RequestPool", {})["Pool"]}
        assert dynamic == {"198.18.1.0/24", "198.18.2.0/24"}
        assert not (tmp_path / "unused.db").exists(), "CNIPAM_STORE wins over IPAM_DB_PATH"
        listing = subprocess.run(
            [installed("cnipamctl"), "--store", json.dumps(store), "leases", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        assert str(address).split("/")[0] in listing.stdout
    finally:
        for running in (first, second):
            assert running.stop() == 0


def test_idle_and_stalled_connections_are_closed_after_the_read_timeout(tmp_path: Path) -> None:
    """A client that connects and sends nothing, or stops in the middle of its body, must
    not hold one of the server's threads forever; the others are served meanwhile."""
    running = RunningDriver(tmp_path, "--read-timeout", "300ms", "--request-timeout", "500ms")
    try:
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for client in (idle, stalled):
            client.settimeout(10)
            client.connect(running.socket)
        stalled.sendall(b"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{")
        assert running.raw("/Plugin.Activate")[0] == 200
        started = time.monotonic()
        assert idle.recv(100) == b"", "the server closed the idle connection"
        answer = b""
        while chunk := stalled.recv(4096):
            answer += chunk
        assert time.monotonic() - started < 5
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
        assert "did not arrive whole within 0.5 s" in json.loads(body)["Err"]
        idle.close()
        stalled.close()
        assert running.raw("/Plugin.Activate")[0] == 200
    finally:
        assert running.stop() == 0
