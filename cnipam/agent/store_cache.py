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

Held stores are bounded, because each holds descriptors (an SQLite file four) and the
paths a call names are the caller's choice: at most `limit` are open at once, a store no
call has used for `idle` seconds is closed (`close_idle`, run by the agent's loop), and
a new store takes the place of the least recently used idle one. When every held store
is in use the call is declined (agent_protocol.Declined): its plugin runs it directly.
Stores the operator named (`pin`) stay open.
"""

from __future__ import annotations

import os
import threading
import time

from ..agent_protocol import Declined
from ..core.errors import StoreBusy, StoreFull, StoreIOError

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

    __slots__ = ("settings", "lock", "store", "identity", "used")

    def __init__(self, settings: Hashable) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.store: Store | None = None
        self.identity: Identity = None
        self.used = time.monotonic()


class StoreCache:
    def __init__(
        self,
        connect: Callable[[Hashable], Store],
        identity: Callable[[object], Identity] = file_identity,
        limit: int = 64,
    ) -> None:
        self._connect = connect
        self._identity = identity
        self._limit = limit
        self._guard = threading.Lock()  # the dict only; never held while a store is in use
        self._held: dict[Hashable, HeldStore] = {}
        self._pinned: set[Hashable] = set()
        self._closed = False
        self.events: StoreEvents | None = None  # told of waits and failures, and given to each store opened

    def using(self, settings: Hashable, reported: bool = True) -> Using:
        """The store for `settings`, exclusively, for the length of a `with` block (the
        signature of plugin.run's `open_store`). Not `reported`: the use is not a call's (a
        metrics scrape reading the store), so `events` is not told of its wait or failure
        and the store's idle time goes on (a scrape every 15 s must not keep it open)."""
        return Using(self, settings, reported)

    def held(self) -> list[Hashable]:
        """The settings of every store held now."""
        with self._guard:
            return list(self._held)

    def pin(self, settings: Hashable) -> None:
        """Keep this store open however long it is idle (one the operator named)."""
        with self._guard:
            self._pinned.add(settings)

    def close_idle(self, idle: float) -> list[Hashable]:
        """Close and forget the stores no call has used for `idle` seconds; their settings."""
        horizon = time.monotonic() - idle
        with self._guard:
            stale = [entry for key, entry in self._held.items() if entry.used < horizon and key not in self._pinned]
        return [entry.settings for entry in stale if self._forget(entry)]

    def _forget(self, entry: HeldStore) -> bool:
        """Close an entry nobody is using and drop it from the dict; False when it is in use."""
        if not entry.lock.acquire(blocking=False):
            return False
        try:
            with self._guard:
                if self._held.get(entry.settings) is entry:
                    del self._held[entry.settings]
            self._close(entry)
            return True
        finally:
            entry.lock.release()

    def _entry(self, settings: Hashable) -> HeldStore:
        with self._guard:
            if self._closed:
                raise StoreIOError("cnipamd is stopping")
            entry = self._held.get(settings)
            if entry is not None:
                return entry
            full = len(self._held) >= self._limit
            idle = (
                sorted((e for key, e in self._held.items() if key not in self._pinned), key=lambda e: e.used)
                if full
                else []
            )
        for candidate in idle:  # make room: the least recently used store nobody is using
            if self._forget(candidate):
                break
        else:
            if full:
                raise Declined(f"cnipamd holds its limit of {self._limit} stores, all in use")
        with self._guard:
            return self._held.setdefault(settings, HeldStore(settings))

    def _acquire(self, settings: Hashable, reported: bool) -> HeldStore:
        events = self.events if reported else None
        started = time.monotonic()
        while True:
            entry = self._entry(settings)
            timeout = float(getattr(settings, "timeout", 5.0))
            # Waiting here is waiting for another call's write, which the store's own
            # timeout bounds for a direct call; a short wait even for "do not wait" (0),
            # because a call in this process also holds the lock while it only reads.
            if not entry.lock.acquire(timeout=max(timeout, 0.05)):
                busy = StoreBusy(f"store {getattr(settings, 'path', settings)} stayed busy with other calls in cnipamd")
                if events is not None:
                    events.failed(busy)
                raise busy
            with self._guard:
                current_entry = self._held.get(settings) is entry
            if current_entry:
                break
            entry.lock.release()  # closed as idle between the lookup and the lock: look again
        try:
            if events is not None:
                events.queue_waited(time.monotonic() - started)
            if reported:  # a scrape's reading does not keep an idle store open
                entry.used = time.monotonic()
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
        if reported:
            entry.used = time.monotonic()
            if failed is not None and self.events is not None:
                self.events.failed(failed)
        try:
            # The connection may be unusable: open afresh next time. Not for a full disk: the
            # connection is sound, and keeping it keeps its -shm, which a new one could not
            # make, so the next call (a release, a read) needs no room to open the store.
            if isinstance(failed, StoreIOError) and not isinstance(failed, StoreFull):
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
