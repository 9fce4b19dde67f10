"""`cnipam-docker` cannot be starved: a real driver held by idle and trickling connections
and run out of file descriptors (docs/security.md, fix 14).

It caps the connections it serves at once and answers the rest 503 at once, logging
one line when the cap is reached and one when it is over; a request must arrive whole
within one deadline however slowly it trickles; out of descriptors, the waiting
connection is answered 503 with a spare descriptor instead of being retried in a busy
loop. Every driver a test starts is stopped on every way out of it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon_load import (
    LOW_LIMIT,
    busy_share,
    close_all,
    connect,
    daemons_stopped_after,
    low_file_limit,
    trickle,
    wait_for,
)
from tests.support.docker_driver import EXECUTABLE, RunningDriver
from tests.support.plugin_calls import CALL_TIMEOUT

pytestmark = pytest.mark.skipif(
    not os.path.exists(EXECUTABLE), reason="cnipam-docker is not installed next to this Python"
)


@pytest.fixture
def drivers(tmp_path: Path) -> Iterator[Callable[..., RunningDriver]]:
    yield from daemons_stopped_after(lambda *args, **options: RunningDriver(tmp_path, *args, **options))


def exchange(sock: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(CALL_TIMEOUT)
        client.connect(sock)
        received = b""
        try:
            client.sendall(request)
        except BrokenPipeError:  # refused before it was read: the answer is waiting all the same
            pass
        try:
            while chunk := client.recv(4096):
                received += chunk
        except ConnectionResetError:  # refused unread: the answer came first, then the reset
            pass
    assert received, "no answer at all"
    return received


ACTIVATE = b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def driver_events(driver: RunningDriver, kind: str) -> list[dict[str, object]]:
    lines = (driver.folder / "stderr.log").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def test_driver_at_its_connection_limit_answers_503(drivers: Callable[..., RunningDriver]) -> None:
    driver = drivers("--max-connections", "2")
    idle = connect(driver.socket, 2)
    try:
        time.sleep(0.3)  # accepted: each holds a thread
        for _ in range(3):
            answer = exchange(driver.socket, ACTIVATE)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert "limit of 2 connections" in json.loads(answer.partition(b"\r\n\r\n")[2])["Err"]
        assert [event["state"] for event in driver_events(driver, "connection-limit")] == ["reached"]
    finally:
        close_all(idle)
    wait_for(lambda: exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200"), "the idle connections to end")
    assert [event["state"] for event in driver_events(driver, "connection-limit")] == ["reached", "over"]
    assert driver.stop() == 0


def test_driver_drops_a_trickling_request_at_its_deadline(drivers: Callable[..., RunningDriver]) -> None:
    driver = drivers("--read-timeout", "30s", "--request-timeout", "1s")
    assert trickle(driver.socket, b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 1000) < 10
    assert exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200")
    assert driver.stop() == 0


def test_driver_out_of_descriptors_answers_503_without_spinning(drivers: Callable[..., RunningDriver]) -> None:
    driver = drivers("--read-timeout", "60s", preexec_fn=low_file_limit)
    flood = connect(driver.socket, 2 * LOW_LIMIT)
    try:
        wait_for(lambda: driver_events(driver, "out-of-descriptors"), "the driver to run out")
        assert busy_share(driver.process.pid) < 0.3, "cnipam-docker spins on a failing accept"
        answer = exchange(driver.socket, ACTIVATE)
        assert answer.startswith(b"HTTP/1.1 503") and b"file descriptors" in answer, answer
        assert [event["state"] for event in driver_events(driver, "out-of-descriptors")] == ["reached"]
    finally:
        close_all(flood)
    wait_for(lambda: exchange(driver.socket, ACTIVATE).startswith(b"HTTP/1.1 200"), "the driver to recover")
    assert [event["state"] for event in driver_events(driver, "out-of-descriptors")] == ["reached", "over"]
    assert driver.stop() == 0
