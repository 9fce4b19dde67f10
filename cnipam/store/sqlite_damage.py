"""Remembering that a store file was found damaged, so that nothing writes to it again.

SQLite checks the pages a statement reads, not the whole file, so a damaged store can
serve calls that miss the damage until one reads it. From that moment `<db>.damaged`
records it, naming the file by device and inode, and every later write to that file is
refused (CNI code 5) with what was found: writing into a damaged b-tree can only spread
the damage, and every allocation trusts indexes that may be part of it. Reads go on, so
the operator can look (`cnipamctl leases`, `check`, `export`). Replacing the file with
one `cnipamctl recover` rebuilt makes the record stale (another inode); it is then
ignored and removed. `cnipamctl check` lists the record with the other problems.
"""

from __future__ import annotations

import posix

SUFFIX = ".damaged"
_LIMIT = 4096


def record_damage(path: str, key: tuple[int, int], message: str) -> None:
    """Best effort: on a disk that cannot take the record the error itself still says it."""
    text = f"{key[0]} {key[1]}\n{message}\n".encode("utf-8", "replace")[:_LIMIT]
    try:
        fd = posix.open(
            path + SUFFIX, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC | posix.O_NOFOLLOW, 0o600
        )
    except OSError:
        return
    try:
        posix.write(fd, text)
    except OSError:
        pass
    finally:
        posix.close(fd)


def recorded_damage(path: str, key: tuple[int, int]) -> str | None:
    """What a call found wrong with this very file, or None (one failed `open` when none is recorded)."""
    try:
        fd = posix.open(path + SUFFIX, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except OSError:
        return None
    try:
        text = posix.read(fd, _LIMIT).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        posix.close(fd)
    identity, _, message = text.partition("\n")
    if identity != f"{key[0]} {key[1]}":  # a record of the file this one replaced
        try:
            posix.unlink(path + SUFFIX)
        except OSError:
            pass
        return None
    return message.strip() or "damage of an unknown kind"
