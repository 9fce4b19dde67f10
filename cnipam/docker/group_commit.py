"""Group commit: the driver's store calls run one transaction at a time, as many to a
transaction as arrived while the one before was being made durable.

The driver's pools and addresses must survive a power loss, so every commit waits for the
disk (store/sqlite.py, Durability), and one transaction per request held the driver to
one request per sync. Here the requests that come in while a commit is in flight queue up
and the next transaction takes them all (up to LIMIT), in the order they came:

* a reply is sent only when the transaction holding its change has committed, so an
  answered request is as durable as it was alone;
* a request that fails (an unknown pool, a taken or exhausted address, a bug) is undone
  alone: each runs in a savepoint of the transaction (Store.batch), which its failure rolls
  back, so its batch-mates commit as if it had never run;
* when the store itself fails (an I/O error, a full disk, damage), the transaction may be
  gone with every change in it: then none of the batch is answered from it, and each of
  its requests runs again alone, in a transaction of its own, as without group commit.

Requests that do not write run here too, in their turn; they cost the transaction nothing.
"""

from __future__ import annotations

import threading

from ..core.errors import StoreBusy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store.base import Store

LIMIT = 128  # requests per transaction: bounds what one commit makes the first of them wait for


class _Call:
    __slots__ = ("work", "wake", "finished", "appointed", "result", "error")

    def __init__(self, work: Callable[[], dict[str, object]]) -> None:
        self.work = work
        self.wake = threading.Event()  # set when it is finished, or appointed to lead
        self.finished = False
        self.appointed = False
        self.result: dict[str, object] | None = None
        self.error: BaseException | None = None

    def attempt(self) -> None:
        try:
            self.result, self.error = self.work(), None
        except Exception as error:  # the caller's to answer with: its status, or a 500
            self.result, self.error = None, error


class GroupCommit:
    """`run(work)` from any thread. The thread of a request that finds no transaction in
    flight leads: it runs what is queued (its own request first) in one transaction, and
    when that committed, hands the lead to the oldest request that queued meanwhile, whose
    thread leads the next one. A request alone is thus run by its own thread, with no
    hand-over between threads; under load each commit carries all that came during the last."""

    def __init__(self, store: Store, limit: int = LIMIT) -> None:
        self.store = store
        self.limit = limit
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: list[_Call] = []
        self._leading = False
        self._stopping = False

    def run(self, work: Callable[[], dict[str, object]]) -> dict[str, object]:
        """What `work` returned, once the transaction holding it committed; or what it raised."""
        call = _Call(work)
        with self._lock:
            if self._stopping:
                raise StoreBusy("cnipam-docker is stopping; try again")
            self._queue.append(call)
            lead, self._leading = not self._leading, True
        while True:
            if lead:
                self._lead()
            if call.finished:
                break
            call.wake.wait()
            call.wake.clear()
            with self._lock:
                lead, call.appointed = call.appointed, False
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def stop(self) -> None:
        """Refuse new requests, and return once those queued are answered."""
        with self._lock:
            self._stopping = True
            while self._leading:
                self._idle.wait()

    def _lead(self) -> None:
        with self._lock:
            calls, self._queue = self._queue[: self.limit], self._queue[self.limit :]
        try:
            self._commit(calls)
        finally:
            with self._lock:
                for call in calls:
                    call.finished = True
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.appointed = True
                else:
                    self._leading = False
                    self._idle.notify_all()
            for call in calls:
                call.wake.set()
            if successor is not None:
                successor.wake.set()

    def _commit(self, calls: list[_Call]) -> None:
        try:
            with self.store.batch() as batch:
                for call in calls:
                    call.attempt()
                    if batch.broken:
                        break
            if not batch.broken:
                return
        except Exception:  # the commit failed (StoreIOError): nothing of the batch was kept
            pass
        for call in calls:
            call.attempt()
