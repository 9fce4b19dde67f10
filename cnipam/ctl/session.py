"""Which store a command works on, and opening it: an existing one, or created if missing.

The store is chosen as the plugin chooses it (StoreSettings.from_env: a config's
`ipam.store` or `ipam.dataDir`, else CNIPAM_STORE, else IPAM_DB_PATH, else the default),
except that `--db` wins over all of them: the operator naming a file means that file. Read commands never create a
store: SQLiteStore creates and migrates whatever file it is given, so a typo in `--db`
would otherwise leave an empty store behind and report "no leases" instead of an error.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..core.errors import StoreCorrupt
from ..store.base import Store
from ..store.opening import open_store
from ..store.settings import StoreSettings
from ..store.sqlite_disk import disk_fault, reading_uri
from ..store.trusted_path import trusted_path
from .failures import NoStore


@dataclass
class Session:
    """The global options of one cnipamctl invocation."""

    db: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def settings(self, data_dir: str | None = None, store: object = None) -> StoreSettings:
        if self.db:
            return StoreSettings.for_file(dict(self.env), self.db)
        return StoreSettings.from_env(dict(self.env), data_dir, store)

    @contextmanager
    def existing(
        self, data_dir: str | None = None, store: object = None, boot: str = "", reading: bool = False
    ) -> Iterator[Store]:
        """The store, which must already exist (inspection, release, export); `boot`: open
        it for this host's boot (its earlier boots' leases, core.reboot). `reading`: the
        command only reads, so it works on a full or read-only disk too."""
        settings = self.settings(data_dir, store).with_boot(boot)
        if settings.etcd is None:  # an etcd prefix with no keys is simply an empty store
            _require_store(settings)
        with _opened(settings, reading) as opened:
            yield opened

    @contextmanager
    def creating(self, data_dir: str | None = None, store: object = None) -> Iterator[Store]:
        """The store, created if missing (import, migrate): as the plugin's first ADD would."""
        with _opened(self.settings(data_dir, store)) as opened:
            yield opened


def has_store(settings: StoreSettings) -> bool:
    """Whether there is a store to check an import against: an etcd prefix always (one with
    no keys is an empty store), a file once it exists."""
    return settings.etcd is not None or os.path.exists(settings.path)


@contextmanager
def _opened(settings: StoreSettings, reading: bool = False) -> Iterator[Store]:
    store = open_store(settings, reading)
    try:
        yield store
    finally:
        store.close()


def _require_store(settings: StoreSettings) -> None:
    """Refuse a path holding no cnipam store, without creating or changing anything there.
    The path is walked as the engine walks it (trusted_path): the probe never follows a
    link another user planted."""
    path = settings.path
    real = trusted_path(path, create=False, shared_folders=settings.shared_folders)
    if not os.path.exists(real):
        raise NoStore(f"no store at {path} ({settings.origin})")
    if os.path.isdir(real):
        raise NoStore(f"no store at {path}: it is a folder ({settings.origin})")
    # On a disk that cannot be written the plain read-only opening fails (no -shm can be
    # made); the engine's own reading opening then works, so the probe uses it too.
    uri = reading_uri(real)[0] if disk_fault(real) is not None else f"file:{_uri_path(real)}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True)
        try:
            version = probe.execute("PRAGMA user_version").fetchone()[0]
        finally:
            probe.close()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged text: SQLite's message is not UTF-8
        raise StoreCorrupt(f"store {path} is not a readable cnipam store: {exc} ({settings.origin})") from None
    if version == 0:
        raise NoStore(f"no store at {path}: the file holds no cnipam schema ({settings.origin})")


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))
