"""Waiting for the store's writer lock (an `flock`), with a deadline.

A blocking `flock` lets the kernel queue writers fairly, which is what keeps tail
latency low under contention; polling with `LOCK_NB` (what bbolt does every 50 ms)
is not. In the main thread the wait is a blocking `flock` interrupted by a one-shot
SIGALRM at the deadline; threads cannot take signals, so a daemon's worker threads poll
with a short back-off instead. `signal` (which imports enum) is only imported when the
lock is already taken, so the uncontended path does not pay for it.
"""

from __future__ import annotations

import time
from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock

from ..core.errors import StoreBusy


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Deadline


def take_lock(fd: int, timeout: float, path: str) -> None:
    """The writers' queue of a store: the lock at once when it is free, the common case."""
    try:
        flock(fd, LOCK_EX | LOCK_NB)
    except BlockingIOError:
        wait_for_lock(fd, timeout, path)


def wait_for_lock(fd: int, timeout: float, path: str) -> None:
    """Take the exclusive lock on `fd`, held by someone else now, within `timeout` seconds."""
    import signal  # only under contention

    if timeout <= 0:
        raise StoreBusy(f"store {path} is locked by another process")
    try:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
    except ValueError:  # not the main thread
        _poll(fd, timeout, path)
        return
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            flock(fd, LOCK_EX)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        flock(fd, LOCK_UN)  # the alarm may land just after the lock was granted
        raise StoreBusy(f"store {path} stayed locked by another process for {timeout:g}s") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def _poll(fd: int, timeout: float, path: str) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            flock(fd, LOCK_EX | LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreBusy(f"store {path} stayed locked by another process for {timeout:g}s") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
