"""The store engines the conformance suite runs against; a new engine adds itself here.

A factory gets the test's request (to reach fixtures such as the session's etcd) and a
fresh folder. Each etcd store gets a key prefix of its own, so tests never see each
other's keys on the shared server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cnipam.store.base import Store
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from cnipam.store.sqlite import SQLiteStore
from tests.support.etcd import need_etcd


def etcd_store(request: pytest.FixtureRequest, folder: Path, host: str = "host-a") -> Store:
    """An etcd store on the session's server, as host `host`, under a prefix of the test's."""
    need_etcd()
    endpoint = request.getfixturevalue("etcd_endpoint")
    prefix = request.getfixturevalue("etcd_prefix").decode()
    return open_etcd(EtcdSettings((endpoint,), prefix, host, lock_dir=str(folder / f"lock-{host}")), 5.0)


ENGINES: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": lambda request, folder: SQLiteStore(str(folder / "ipam.db"), timeout=5.0),
    "etcd": etcd_store,
}
