"""Which store a command works on, and opening it: an existing one, or created if missing.

The store is chosen as the plugin chooses it (StoreSettings.from_env: a config's
`ipam.store` or `ipam.dataDir`, else CNIPAM_STORE, else IPAM_DB_PATH, else the default),
with the operator's flags first: `--db PATH` (that file), else `--store JSON` (that store
object), else the network configs of `--config` (their `ipam.store` or `ipam.dataDir`, as
the plugin reads them), else the environment. Every message about the store names what
chose it. Read commands never create a store: SQLiteStore creates and migrates whatever
file it is given, so a typo in `--db` would otherwise leave an empty store behind and
report "no leases" instead of an error.

Commands never write the operator's own liveness into a cluster store: only the plugin,
the agent and the driver of a host say that the host is alive (`hosts list`), so a
command run from an operator's machine does not list it as a host, and one run on a
live node does not refresh that node's last write (which `hosts release --grace` reads).
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
from .failures import BadInput, NoStore
from .netconf import NetworkConfig, load_network_config


@dataclass
class Session:
    """The store options of one cnipamctl invocation, given before or after the command
    name (ctl.options): `db` and `store` as the last one given says, `configs` all of them."""

    db: str | None = None
    store: str | None = None
    configs: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def network_configs(self, network: str | None = None) -> list[tuple[str, NetworkConfig]]:
        """The `--config` files, parsed (`network`: the name leases record, when not the config's)."""
        return [(path, load_network_config(path, network)) for path in self.configs]

    def settings(self) -> StoreSettings:
        env = dict(self.env)
        if self.db is not None:
            return StoreSettings.for_file(env, self.db)
        if self.store is not None:
            return StoreSettings.for_store(env, self.store)
        chosen = [self._from_config(env, path, config) for path, config in self.network_configs()]
        if chosen:
            differing = [settings for settings in chosen if settings.name != chosen[0].name]
            if differing:
                raise BadInput(
                    f"the --config files name different stores: {chosen[0].origin} and {differing[0].origin};"
                    " give --db or --store"
                )
            return chosen[0]
        return StoreSettings.from_env(env)

    @staticmethod
    def _from_config(env: dict[str, str], path: str, config: NetworkConfig) -> StoreSettings:
        """The store a config's network uses, as the plugin picks it, named by its file."""
        settings = StoreSettings.from_env(env, config.ipam.data_dir, config.store, f"ipam.store of --config {path}")
        if config.store is None and config.ipam.data_dir:
            return settings.with_origin(f"{settings.origin} of --config {path}")
        return settings

    @contextmanager
    def existing(self, boot: str = "", reading: bool = False) -> Iterator[Store]:
        """The store, which must already exist (inspection, release, export); `boot`: open
        it for this host's boot (its earlier boots' leases, core.reboot). `reading`: the
        command only reads, so it works on a full or read-only disk too."""
        settings = self.settings().with_boot(boot)
        if settings.etcd is None:  # an etcd prefix with no keys is simply an empty store
            _require_store(settings)
        with _opened(settings, reading) as opened:
            yield opened

    @contextmanager
    def creating(self) -> Iterator[Store]:
        """The store, created if missing (import, migrate): as the plugin's first ADD would."""
        with _opened(self.settings()) as opened:
            yield opened


def has_store(settings: StoreSettings) -> bool:
    """Whether there is a store to check an import against: an etcd prefix always (one with
    no keys is an empty store), a file once it exists."""
    return settings.etcd is not None or os.path.exists(settings.path)


@contextmanager
def _opened(settings: StoreSettings, reading: bool = False) -> Iterator[Store]:
    store = open_store(settings, reading, liveness=False)
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
