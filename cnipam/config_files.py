"""Reading a small file that a config names (host-local's `resolvConf`, etcd's
`passwordFile` and TLS files).

A config value is not trusted to name something sensible: a FIFO or a terminal would
block the plugin for ever (a runtime then kills it with nothing said), a device such as
`/dev/zero` never ends. So the file is opened without blocking and without becoming our
controlling terminal, must be a regular file, and is read up to a limit.

Nor may it name a database this process holds open (cnipamd holds every store it has
served): closing our descriptor of that file would drop every POSIX lock the process
holds on it, SQLite's included, and the next process to close the store would delete
the WAL the open connection still writes into (issue 19: a `resolvConf` naming the
store made cnipamd hand out addresses twice). The SQLite engine lists what it holds in
HELD_DATABASES; the refusal compares identities, not names. What stays open is a swap
of the named path between the check and the open, by someone who can write its folder.
"""

from __future__ import annotations

import posix

from .core.errors import FileUnreadable

# (device, inode) -> the path each database this process holds through SQLite was opened
# under; kept by store/sqlite.py, empty in a plugin that has not opened its store yet.
HELD_DATABASES: dict[tuple[int, int], str] = {}
COMPANIONS = ("-wal", "-shm")  # SQLite's own files beside a WAL database; -shm carries locks too


def read_config_file(path: str, what: str, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`; FileUnreadable naming `what` otherwise."""
    if HELD_DATABASES:
        _refuse_held_database(path, what)
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_NOCTTY | posix.O_CLOEXEC)
    except OSError as exc:
        raise FileUnreadable(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        if not is_regular_file(posix.fstat(fd)):
            raise FileUnreadable(f"{what}: {path} is not a regular file")
        chunks, left = [], limit
        while left > 0:
            chunk = posix.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileUnreadable(f"{what}: cannot read {path}: {exc.strerror}") from None
    finally:
        posix.close(fd)


def is_regular_file(info: posix.stat_result) -> bool:
    """stat.S_ISREG, without importing `stat` on the plugin's path."""
    return info.st_mode & 0o170000 == 0o100000


def _refuse_held_database(path: str, what: str) -> None:
    try:
        named = _identity(path)
    except OSError:
        return  # the open names the problem
    for key, database in list(HELD_DATABASES.items()):
        held = {key}
        for suffix in COMPANIONS:
            try:
                held.add(_identity(database + suffix))
            except OSError:
                pass
        if named in held:
            raise FileUnreadable(
                f"{what}: {path} is the store {database} (or its WAL), which this process holds open; "
                "refusing to read it"
            )


def _identity(path: str) -> tuple[int, int]:
    info = posix.stat(path)
    return info.st_dev, info.st_ino
