"""Upstream stores as migration inputs: what each holds, as plan.Found and plan.Position.

Each reader reports in its own terms (host-local: files; ecs-ipam: bbolt keys); this
turns both into the plan's terms, keeps what the reader could not use as refusals with
their reasons, and remembers how each upstream moves its round-robin position, because
the plugin must keep doing the same after the migration: host-local's moves only on
allocation, ecs-ipam's also on release (leases.Cursor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.addresses import format_ip
from ..core.errors import FileUnreadable
from .plan import Found, Position


@dataclass
class Source:
    kind: str  # for the report: "host-local folder", "ecs-ipam boltdb file"
    path: str
    moves_on_release: bool
    found: list[Found] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    notes: list[str] = field(default_factory=list)


def host_local_folder(path: str, network: str) -> str:
    """The folder holding the lease files: DIR itself, or DIR/<network> when DIR is a
    dataDir (host-local keeps one folder per network name there)."""
    candidate = os.path.join(path, network)
    return candidate if os.path.isdir(candidate) else path


def count_entries(folder: str) -> int:
    """How many files a host-local folder holds (to decide on a progress bar), 0 if unreadable."""
    try:
        return len(os.listdir(folder))
    except OSError:
        return 0


def read_host_local_source(folder: str) -> Source:
    from .host_local_dir import read_host_local

    found, positions, refused = read_host_local(folder)
    source = Source(
        "host-local folder", folder, moves_on_release=False, found=found, positions=positions, refused=refused
    )
    source.notes.append(f"{folder} was read, not changed: remove it once the runtime uses cnipam")
    return source


def read_ecs_source(path: str) -> Source:
    from .ecs_boltdb import read_ecs_boltdb

    try:
        store = read_ecs_boltdb(path)
    except OSError as exc:
        raise FileUnreadable(f"cannot read {path}: {exc.strerror}") from None
    source = Source("ecs-ipam boltdb file", path, moves_on_release=True)
    for lease in store.leases:
        source.found.append(
            Found(lease.family, lease.address, lease.id or None, source=f"key {_key(lease.family, lease.address)}")
        )
    for gateway in store.gateways:
        source.found.append(
            Found(
                gateway.family,
                gateway.address,
                gateway=True,
                source=f"gateway key {_key(gateway.family, gateway.address)}",
            )
        )
    for family, address in ((4, store.last_known_ip), (6, store.last_known_ipv6)):
        if address is not None:
            source.positions.append(Position(family, address, None))
    for key, reason in store.unrecognised:
        source.refused.append((f"key {key.decode('ascii', 'backslashreplace')!r}", reason))
    source.notes.extend(store.warnings)
    source.notes.append(f"{path} was read, not changed")
    return source


def _key(family: int, address: int) -> str:
    return ("6" if family == 6 else "") + format_ip(family, address)
