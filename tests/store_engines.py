"""The store engines the conformance suite runs against; a new engine adds itself here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnipam.store.base import Store
from cnipam.store.sqlite import SQLiteStore

ENGINES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda folder: SQLiteStore(str(folder / "ipam.db"), timeout=5.0),
}
