"""What every campaign needs: the installed executables it drives, an etcd to run against,
and how it reports a broken promise.
"""

from __future__ import annotations

import contextlib
import os
import sysconfig
from collections.abc import Iterator

WAIT = 120.0  # seconds any single process may take before a campaign calls it a hang


class CampaignFailure(AssertionError):
    """A broken promise: the message names the operation and what the store holds."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CampaignFailure(message)


def executable(name: str) -> str:
    """The installed executable next to this interpreter (never a PATH shim)."""
    path = os.path.join(sysconfig.get_path("scripts"), name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} is missing: run `pip install .` first")
    return path


@contextlib.contextmanager
def etcd_endpoint(endpoint: str | None, name: str) -> Iterator[str]:
    """An etcd to run against: the one given, or a private one started here."""
    if endpoint:
        yield endpoint
        return
    from cnipam.testing.etcd_server import EtcdServer

    with EtcdServer(name) as server:
        yield server.endpoint
