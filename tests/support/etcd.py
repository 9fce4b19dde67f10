"""A real etcd for the tests: one shared by the session, and private ones a test can stop.

The shared server is what `etcd_endpoint` yields; a test that has to break its server
(stop it mid-session, enable auth, serve TLS) gets its own (`private_etcd`, `auth_etcd`,
or an `EtcdServer` of cnipam.testing.etcd_server), so the shared one never changes under
other tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cnipam.testing.etcd_server import EtcdServer, enable_auth, etcd_binary


def need_etcd() -> None:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian package etcd-server; dev.sh installs it as root)")


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    """The session's etcd: IPAM_TEST_ETCD when set (an etcd someone else runs), else one started here."""
    existing = os.environ.get("IPAM_TEST_ETCD", "").strip()
    if existing:
        yield existing
        return
    need_etcd()
    with EtcdServer("session") as server:
        yield server.endpoint


_prefix_counter = 0


def store_object(endpoint: str, prefix: bytes, lock_dir: str, host: str = "node-1") -> dict[str, Any]:
    """The `ipam.store` object of an etcd store under a test's own prefix, as one host."""
    return {"type": "etcd", "endpoints": [endpoint], "prefix": prefix.decode(), "host": host, "lockDir": lock_dir}


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix no other test (nor an earlier run against the same IPAM_TEST_ETCD) uses."""
    global _prefix_counter
    _prefix_counter += 1
    return f"/cnipam-test/{os.getpid()}-{time.time_ns()}-{_prefix_counter}/{request.node.name}/".encode()


@pytest.fixture
def private_etcd() -> Iterator[EtcdServer]:
    need_etcd()
    with EtcdServer("private") as server:
        yield server


PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def auth_etcd(private_etcd: EtcdServer) -> str:
    enable_auth(private_etcd.endpoint, PASSWORD)
    return private_etcd.endpoint
