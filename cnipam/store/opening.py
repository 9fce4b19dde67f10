"""Opening the store a call's settings name: the one place that knows every engine.

Each engine is imported only when chosen, so an SQLite call never loads the etcd client
and an etcd call never loads `_sqlite3`.
"""

from __future__ import annotations

import posix

from ..core.errors import StoreIOError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import Store
    from .settings import EtcdSettings, StoreSettings

LOCK_FILE = "etcd.lock"


def open_store(settings: StoreSettings, reading: bool = False, liveness: bool = True) -> Store:
    """`reading`: the caller will only read, which lets an SQLite store be read on a full
    or read-only disk (store/sqlite_disk.py). `liveness`: the caller acts for its host
    (the plugin, the agent, the driver), so its writes to a cluster store say the host is
    alive; an operator's command does not (ctl.session)."""
    if settings.etcd is not None:
        return open_etcd(settings.etcd, settings.timeout, settings.boot, settings.shared_folders, liveness)
    from .sqlite import SQLiteStore

    try:
        return SQLiteStore(
            settings.path, settings.timeout, settings.boot, shared_folders=settings.shared_folders, reading=reading
        )
    except StoreIOError as error:  # name what chose the path
        error.message = f"{error.message} ({settings.origin})"
        raise


def open_etcd(
    etcd: EtcdSettings, timeout: float, boot: str = "", shared_folders: bool = False, liveness: bool = True
) -> Store:
    from .etcd import EtcdStore
    from .etcdv3 import EtcdClient

    password = etcd.password
    if etcd.password_file is not None:
        from ..config_files import read_config_file

        password = (
            read_config_file(etcd.password_file, "ipam.store.passwordFile", 4096)
            .decode("utf-8", "replace")
            .rstrip("\r\n")
        )
    tokens = None
    if etcd.username is not None and etcd.lock_dir:
        from .etcd_token import token_file

        tokens = token_file(etcd.lock_dir, etcd.endpoints, etcd.username)
    client = EtcdClient(
        etcd.endpoints, max(timeout, 0.05), etcd.username, password, etcd.ca_file, etcd.cert_file, etcd.key_file,
        tokens,
    )  # fmt: skip
    lock = f"{etcd.lock_dir.rstrip('/')}/{LOCK_FILE}" if etcd.lock_dir else None
    return EtcdStore(
        client, etcd.prefix, etcd.host or posix.uname().nodename, timeout, lock, boot, etcd.block_idle, shared_folders,
        liveness,
    )  # fmt: skip
