"""The stores `cnipamd` holds open between calls, one per distinct store settings.

Keyed by the settings value the plugin path computes for a call (today `StoreSettings`:
file, timeout, origin), so whatever selects a store for a direct call selects the same
one here, whatever the engine. Two settings that name one file (another spelling of the
path, another timeout) are two entries here but one connection underneath: the SQLite
engine keeps one connection per file per process (store/sqlite.py, `_SharedFile`),
because a second one opened beside it would drop the first one's locks. Each held store
has its own lock, and a call holds it for as long as it uses the store; the engine's own
mutex keeps entries that share a file apart. Calls on different stores run in parallel.

A held SQLite file can be deleted or replaced under the agent (an operator starting
over, a restore from backup). A direct call would then open the new file while the agent
went on writing into the unlinked one: so before each use the file's identity is
compared with the one opened, and the store is reopened when it differs. A store that
failed with an I/O error is reopened on its next use as well.
"""

from __future__ import annotations

import os
import threading
import time

from ..core.errors import StoreBusy, StoreIOError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from ..store.base import Store, StoreEvents

# (device, inode) of the store file and of its lock file; None for stores that are not files.
Identity = tuple[tuple[int, int] | None, ...] | None


def file_identity(settings: object) -> Identity:
    """Which files a file-backed store's settings name right now."""
    path = getattr(settings, "path", None)
    if not isinstance(path, str) or getattr(settings, "etcd", None) is not None:
        return None
    found: list[tuple[int, int] | None] = []
    for name in (path, path + ".lock"):
        try:
            info = os.stat(name)
            found.append((info.st_dev, info.st_ino))
        except OSError:
            found.append(None)
    return tuple(found)


class HeldStore:
    """One open store, its lock, and the identity of what was opened."""

    __slots__ = ("settings", "lock", "store", "identity")

    def __init__(self, settings: Hashable) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.store: Store | None = None
        self.identity: Identity = None


class StoreCache:
    def __init__(
        self, connect: Callable[[Hashable], Store], identity: Callable[[object], Identity] = file_identity
    ) -> None:
        self._connect = connect
        self._identity = identity
        self._guard = threading.Lock()  # the dict only; never held while a store is in use
        self._held: dict[Hashable, HeldStore] = {}
        self._closed = False
        self.events: StoreEvents | None = None  # told of waits and failures, and given to each store opened

    def using(self, settings: Hashable, reported: bool = True) -> Using:
        """The store for `settings`, exclusively, for the length of a `with` block (the
        signature of plugin.run's `open_store`). Not `reported`: its wait and failure are
        not a call's, so `events` is not told (a metrics scrape reading the store)."""
        return Using(self, settings, reported)

    def held(self) -> list[Hashable]:
        """The settings of every store opened so far."""
        with self._guard:
            return list(self._held)

    def _entry(self, settings: Hashable) -> HeldStore:
        with self._guard:
            if self._closed:
                raise StoreIOError("cnipamd is stopping")
            entry = self._held.get(settings)
            if entry is None:
                entry = self._held[settings] = HeldStore(settings)
            return entry

    def _acquire(self, settings: Hashable, reported: bool) -> HeldStore:
        entry = self._entry(settings)
        timeout = float(getattr(settings, "timeout", 5.0))
        # Waiting here is waiting for another call's write, which the store's own
        # timeout bounds for a direct call; a short wait even for "do not wait" (0),
        # because a call in this process also holds the lock while it only reads.
        events = self.events if reported else None
        started = time.monotonic()
        if not entry.lock.acquire(timeout=max(timeout, 0.05)):
            busy = StoreBusy(f"store {getattr(settings, 'path', settings)} stayed busy with other calls in cnipamd")
            if events is not None:
                events.failed(busy)
            raise busy
        try:
            if events is not None:
                events.queue_waited(time.monotonic() - started)
            current = self._identity(settings)
            if entry.store is not None and current != entry.identity:
                self._close(entry)
            if entry.store is None:
                entry.store = self._connect(settings)
                entry.store.events = self.events
                entry.identity = self._identity(settings)
            return entry
        except BaseException as error:
            entry.lock.release()
            if events is not None:
                events.failed(error)
            raise

    def _release(self, entry: HeldStore, failed: BaseException | None, reported: bool) -> None:
        if failed is not None and reported and self.events is not None:
            self.events.failed(failed)
        try:
            if isinstance(failed, StoreIOError):  # the connection may be unusable: open afresh next time
                self._close(entry)
        finally:
            entry.lock.release()

    @staticmethod
    def _close(entry: HeldStore) -> None:
        store, entry.store, entry.identity = entry.store, None, None
        if store is not None:
            try:
                store.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close every store, each once its current call has finished."""
        with self._guard:
            self._closed = True
            entries = list(self._held.values())
        for entry in entries:
            with entry.lock:
                self._close(entry)


class Using:
    __slots__ = ("cache", "settings", "reported", "entry")

    def __init__(self, cache: StoreCache, settings: Hashable, reported: bool = True) -> None:
        self.cache = cache
        self.settings = settings
        self.reported = reported
        self.entry: HeldStore | None = None

    def __enter__(self) -> Store:
        self.entry = self.cache._acquire(self.settings, self.reported)
        assert self.entry.store is not None
        return self.entry.store

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if self.entry is not None:
            self.cache._release(self.entry, error, self.reported)
            self.entry = None
