"""The export file: every lease, reservation, round-robin position and Docker pool of a
store, and its address history.

`{"format": "cnipam-export", "version": 1, "leases": [...], "cursors": {pool: ...},
"docker_pools": [...], "history": [...]}`, leases in the store's address order, cursors
by pool key, Docker pools oldest first (their addresses are among the leases), history
records oldest first, indented, with a final newline. Nothing in it depends on when or
where it was written, so export, import into an empty store and export again give the
same bytes: a diff of two exports is a diff of two stores. The `version` lets a later
format be refused by name instead of misread. `docker_pools` and `history` came later
within version 1: files written before have none, read as no Docker pools and as a
history unknown (each lease's history then starts at the import); a cnipamctl of before
reads a file with them, without them.
"""

from __future__ import annotations

import json

from ..core.docker_pools import DockerPool
from ..core.history import HistoryRecord
from ..core.leases import Cursor, Lease
from .failures import BadInput
from .lease_json import (
    cursor_from_json,
    cursor_to_json,
    lease_from_json,
    lease_to_json,
    pool_from_json,
    pool_to_json,
    record_from_json,
    record_to_json,
)

FORMAT = "cnipam-export"
VERSION = 1

# leases, positions, Docker pools, history (None: a file written before the history)
Export = tuple[list[Lease], dict[str, Cursor], list[DockerPool], list[HistoryRecord] | None]


def dump_export(
    leases: list[Lease], cursors: dict[str, Cursor], pools: list[DockerPool], history: list[HistoryRecord]
) -> str:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "leases": [lease_to_json(lease) for lease in leases],
        "cursors": {pool: cursor_to_json(cursors[pool]) for pool in sorted(cursors)},
        "docker_pools": [pool_to_json(pool) for pool in pools],
        "history": [record_to_json(record) for record in history],
    }
    return json.dumps(document, indent=2) + "\n"


def parse_export(document: object, source: str) -> Export:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BadInput(f'{source} is not a cnipamctl export (no "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise BadInput(f"{source}: export version {document.get('version')!r}; this cnipamctl reads version {VERSION}")
    leases, cursors, pools = document.get("leases"), document.get("cursors"), document.get("docker_pools", [])
    history = document.get("history")
    if not isinstance(leases, list):
        raise BadInput(f'{source}: "leases" must be a list')
    if not isinstance(cursors, dict):
        raise BadInput(f'{source}: "cursors" must be an object')
    if not isinstance(pools, list):
        raise BadInput(f'{source}: "docker_pools" must be a list')
    if history is not None and not isinstance(history, list):
        raise BadInput(f'{source}: "history" must be a list')
    return (
        [lease_from_json(item, f"{source}: leases[{index}]") for index, item in enumerate(leases)],
        {str(pool): cursor_from_json(item, f"{source}: cursors[{pool!r}]") for pool, item in cursors.items()},
        [pool_from_json(item, f"{source}: docker_pools[{index}]") for index, item in enumerate(pools)],
        None
        if history is None
        else [record_from_json(item, f"{source}: history[{index}]") for index, item in enumerate(history)],
    )
