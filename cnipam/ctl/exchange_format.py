"""The export file: every lease, reservation and round-robin position of a store, and
its address history.

`{"format": "cnipam-export", "version": 1, "leases": [...], "cursors": {pool: ...},
"history": [...]}`, leases in the store's address order, cursors by pool key, history
records oldest first, indented, with a final newline. Nothing in it depends on when or
where it was written, so export, import into an empty store and export again give the
same bytes: a diff of two exports is a diff of two stores. The `version` lets a later
format be refused by name instead of misread. `history` came later within version 1: a
file without it (written before) imports with each lease's history starting at the
import, and a cnipamctl of before reads a file with it, without its history.
"""

from __future__ import annotations

import json

from ..core.history import HistoryRecord
from ..core.leases import Cursor, Lease
from .failures import BadInput
from .lease_json import (
    cursor_from_json,
    cursor_to_json,
    lease_from_json,
    lease_to_json,
    record_from_json,
    record_to_json,
)

FORMAT = "cnipam-export"
VERSION = 1


def dump_export(leases: list[Lease], cursors: dict[str, Cursor], history: list[HistoryRecord]) -> str:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "leases": [lease_to_json(lease) for lease in leases],
        "cursors": {pool: cursor_to_json(cursors[pool]) for pool in sorted(cursors)},
        "history": [record_to_json(record) for record in history],
    }
    return json.dumps(document, indent=2) + "\n"


Export = tuple[list[Lease], dict[str, Cursor], list[HistoryRecord] | None]


def parse_export(document: object, source: str) -> Export:
    """The leases, positions and history (None: a file written before history) of an export."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BadInput(f'{source} is not a cnipamctl export (no "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise BadInput(f"{source}: export version {document.get('version')!r}; this cnipamctl reads version {VERSION}")
    leases, cursors = document.get("leases"), document.get("cursors")
    if not isinstance(leases, list):
        raise BadInput(f'{source}: "leases" must be a list')
    if not isinstance(cursors, dict):
        raise BadInput(f'{source}: "cursors" must be an object')
    history = document.get("history")
    if history is not None and not isinstance(history, list):
        raise BadInput(f'{source}: "history" must be a list')
    return (
        [lease_from_json(item, f"{source}: leases[{index}]") for index, item in enumerate(leases)],
        {str(pool): cursor_from_json(item, f"{source}: cursors[{pool!r}]") for pool, item in cursors.items()},
        None
        if history is None
        else [record_from_json(item, f"{source}: history[{index}]") for index, item in enumerate(history)],
    )
