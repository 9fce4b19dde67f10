"""Hostile request bodies for the Docker driver: every outcome is a reply or a CnipamError
the server maps to a 4xx/5xx `{"Err"}`, and a refused request changes nothing.

In process (`Driver.handle`, the protocol core, for volume: hundreds of bodies a second)
and through the real `cnipam-docker` socket (HTTP framing, status and the JSON error
body). Bodies are built from the fields dockerd sends, each replaced by hostile values:
wrong types, enormous and negative prefixes, NUL and non-ASCII text, path-like ids,
deeply nested and huge JSON, bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnipam.core.errors import CnipamError
from cnipam.docker.driver import Driver
from cnipam.docker.server import status_of
from cnipam.docker.settings import load
from cnipam.store.sqlite import SQLiteStore
from tests.support.docker_driver import RunningDriver
from tests.support.store_files import snapshot

METHODS = [
    "/Plugin.Activate",
    "/IpamDriver.GetCapabilities",
    "/IpamDriver.GetDefaultAddressSpaces",
    "/IpamDriver.RequestPool",
    "/IpamDriver.ReleasePool",
    "/IpamDriver.RequestAddress",
    "/IpamDriver.ReleaseAddress",
]
FIELDS = ["AddressSpace", "Pool", "SubPool", "Options", "V6", "PoolID", "Address"]
HOSTILE_TEXT = [
    "",
    "10.0.0.0/24",
    "198.18.0.0/24",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/99999999999999999999",
    "10.0.0.0/-1",
    "10.0.0.0/+8",
    "10.0.0.0/٣",
    "10.0.0.0/²",
    "2001:db8::/129",
    "198.18.0.1",
    "999.1.1.1",
    "../../etc/passwd",
    "CnipamLocal/../../etc",
    "CnipamLocal/198.18.0.0/24/1",
    "a\x00b",
    "\udcff",
    "x" * 70000,
    "ﬀ" * 100,
    "com.docker.network.gateway",
]
leaf = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=30),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
json_value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    max_leaves=8,
)
fields = st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=5)


def nested(depth: int) -> bytes:
    return b'{"Pool":' * depth + b"1" + b"}" * depth


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "raw", "mangled", "deep"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        return nested(draw(st.integers(min_value=900, max_value=200000)))
    body = json.dumps(draw(fields)).encode()
    if kind == "mangled":  # cut it, or splice in bytes that are not UTF-8 or NUL
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.sampled_from([b"", b"\xff", b"\x00", b"\xc3", b"\\u0000"])) + body[at:]
    return body


@pytest.fixture
def core(tmp_path: Path) -> Iterator[tuple[Driver, Path]]:
    """A driver on a store that already holds a pool with one address, so "unchanged" means something."""
    db = tmp_path / "ipam.db"
    store = SQLiteStore(str(db))
    driver = Driver(store, load(["-v4", "198.18.0.0/22", "-v6", "2001:db8::/62"], {}))
    pool = driver.handle("/IpamDriver.RequestPool", b'{"Pool": "10.9.0.0/24"}')
    driver.handle("/IpamDriver.RequestAddress", json.dumps({"PoolID": pool["PoolID"]}).encode())
    yield driver, db
    assert store.problems() == []
    store.close()


def answer(driver: Driver, path: str, body: bytes) -> tuple[int, Any]:
    """What the server would send: 200 and the reply, or the mapped status and {"Err"}."""
    try:
        return 200, driver.handle(path, body)
    except CnipamError as error:
        return status_of(error), {"Err": error.message}


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(path=st.sampled_from(METHODS), body=bodies())
def test_every_body_is_a_reply_or_a_mapped_error_and_a_refusal_changes_nothing(
    core: tuple[Driver, Path], path: str, body: bytes
) -> None:
    driver, db = core
    before = snapshot(db)
    status, reply = answer(driver, path, body)  # anything but a CnipamError escapes and fails the test
    json.dumps(reply)  # every reply can be sent
    if status != 200:
        assert 400 <= status < 600 and isinstance(reply["Err"], str) and reply["Err"]
        assert snapshot(db) == before, "a refused request changed the store"
    else:
        assert isinstance(reply, dict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=50), st.sampled_from(["Pool", "SubPool", "PoolID", "Address", "AddressSpace"]))
def test_any_text_in_any_field_is_refused_cleanly(core: tuple[Driver, Path], value: str, field: str) -> None:
    driver, db = core
    for path in METHODS[3:]:
        before = snapshot(db)
        status, _ = answer(driver, path, json.dumps({field: value}).encode())
        if status != 200:
            assert snapshot(db) == before


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDriver]:
    served = RunningDriver(tmp_path_factory.mktemp("docker"), "-v4", "198.18.0.0/22", "-v6", "2001:db8::/62")
    yield served
    assert served.stop() == 0
    log = (served.folder / "stderr.log").read_text()
    assert "Traceback" not in log
    assert all(line.startswith("{") for line in log.splitlines()), "every log line is one JSON object"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(METHODS), body=bodies())
def test_through_the_socket_every_failure_is_json_with_a_4xx_or_5xx(
    running: RunningDriver, path: str, body: bytes
) -> None:
    before = snapshot(running.folder / "ipam.db")
    status, reply, content_type = running.raw(path, body)
    assert content_type == "application/vnd.docker.plugins.v1+json"
    if status != 200:
        assert 400 <= status < 600 and set(reply) == {"Err"}, reply
        assert snapshot(running.folder / "ipam.db") == before


@pytest.mark.parametrize("length", ["²", "٣", "9" * 5000, "-1", "1e3", "0x10"])
def test_a_malformed_content_length_is_400_and_closes_the_connection(running: RunningDriver, length: str) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(running.socket)
        client.sendall(
            b"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + length.encode("utf-8")
            + b"\r\n\r\n{}"
        )
        received = b""
        while chunk := client.recv(4096):  # the server closes: the unread body is never a request
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), received
    assert b"Content-Length" in json.loads(payload)["Err"].encode()
    assert received.count(b"HTTP/1.1") == 1


def exchange(running: RunningDriver, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    import socket

    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(running.socket)
        client.sendall(request)
        received = b""
        while chunk := client.recv(4096):
            received += chunk
    return received


SMUGGLED = b"POST /IpamDriver.ReleasePool HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 2\r\nContent-Length: 2\r\n",  # duplicate, equal
        b"Content-Length: 2\r\nContent-Length: 90\r\n",  # conflicting
        b"Content-Length: 2, 2\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding : chunked\r\nContent-Length: 2\r\n",  # the space hides it from a lax parser
        b"Transfer-Encoding: identity\r\nContent-Length: 2\r\n",
        b"Content-Length: 2\r\nBad Name: 1\r\n",
        b"Content-Length: 2\r\nX\x01Y: 1\r\n",
        b"Content-Length: 2\r\nX-A: 1\r\n folded: 2\r\n",
        b"Content-Length: 2\r\n: nameless\r\n",
    ],
)
def test_ambiguous_framing_is_400_and_closes_the_connection(running: RunningDriver, headers: bytes) -> None:
    """Any header that could make the server and a client disagree on where the body ends
    is refused before the body is read; what follows is never parsed as a request."""
    received = exchange(
        running, b"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n{}" + SMUGGLED
    )
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), received
    assert b"Connection: close" in head
    assert json.loads(payload)["Err"]
    assert received.count(b"HTTP/1.1") == 1, received
