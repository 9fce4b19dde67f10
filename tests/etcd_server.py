"""A real etcd for the tests: one shared by the session, and private ones a test can stop.

The shared server is what `etcd_endpoint` yields; a test that has to break its server
(stop it mid-session, enable auth, serve TLS) starts its own `EtcdServer`
(cnipam.testing.etcd_server), so the shared one never changes under other tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from cnipam.testing.etcd_server import EtcdServer, etcd_binary, free_port

__all__ = ["EtcdServer", "etcd_endpoint", "etcd_prefix", "free_port", "need_etcd"]


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


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix no other test (nor an earlier run against the same IPAM_TEST_ETCD) uses."""
    global _prefix_counter
    _prefix_counter += 1
    return f"/cnipam-test/{os.getpid()}-{time.time_ns()}-{_prefix_counter}/{request.node.name}/".encode()
