"""The disk under an SQLite store: what a failed write means, the space kept back so that
releasing never needs free space, and how a store is read on a disk that cannot be written.

* **Naming the fault.** SQLite reports a full disk as "disk I/O error" when it cannot
  grow the shared-memory index (`-shm`) and as "unable to open database file" on a
  read-only mount; `statvfs` of the store's folder says which it is, so the error can.
* **The reserve** (CockroachDB's ballast): a 1 MiB file `<store>.reserve`, made with
  `posix_fallocate` so its blocks are really taken. When a release fails for lack of
  space, the reserve is deleted and the release runs once more, now with room for its
  `-shm` (32 KiB) and its WAL frames (a DEL writes a few pages). It is safe because the
  reserve holds no data: deleting it loses nothing, and SQLite's files never depend on
  it. Allocations need it in place: while it is gone they first make it again, and
  refuse (the disk is full) when that fails, so the space it gave up stays for releases.
  Another program on the same file system may take that space first; then the release
  fails as it would have without the reserve.
* **Reading on a bad disk.** Every WAL-mode connection needs the `-shm` file, which a
  full disk cannot grow and a read-only mount cannot create. A caller that only reads
  then opens the file read-only, in one of two ways chosen from what exists beside it:
  - `-shm` present at its full size: some process holds the store, or one died holding
    it. `mode=ro` reads through that index and the WAL under SQLite's locks, so it is
    exact beside a live writer.
  - no `-shm`: no process has the store open (every cnipam connection keeps one while
    open), and the last one to close it copied its WAL into the file and deleted it.
    The file alone is then the whole store, and `immutable=1` reads it without any
    shared memory or lock. That is only safe while nothing writes it, so every read
    through such a connection is checked afterwards (`unchanged`): a `-shm` that
    appeared, or a file whose size or times moved, means a writer came; the read is
    then refused as busy (try again) instead of trusted. A WAL with content but no
    `-shm` is refused: reading the file alone would miss the commits it holds.
"""

from __future__ import annotations

import posix

from ..core.errors import StoreIOError

RESERVE_SUFFIX = ".reserve"
RESERVE_BYTES = 1 << 20
ROOM_NEEDED = 256 << 10  # the -shm (32 KiB) and a transaction's WAL frames, with margin
SHM_BYTES = 32 << 10  # a -shm that any connection has used is at least this large

FULL = "full"
READ_ONLY = "read-only"


def disk_fault(path: str, failed: bool = False) -> tuple[str, str] | None:
    """(FULL or READ_ONLY, a sentence naming it) when the store's file system cannot take
    a write, else None.

    `failed`: a write has just failed. A missing reserve then counts as part of the full
    disk: a release that found the disk full gave it up, so the room seen free now is that
    reserve's (and the next allocation takes it back). Only naming a failure may count it
    so; a reader choosing how to open the store must not (store/sqlite.py's openings)."""
    folder = _folder(path)
    try:
        info = posix.statvfs(folder)
    except OSError:
        return None
    if info.f_flag & posix.ST_RDONLY:
        return READ_ONLY, f"the file system holding {folder} is mounted read-only"
    free = _free(info)
    reserve_out = failed and _size(path + RESERVE_SUFFIX) < 0
    if free < ROOM_NEEDED + (RESERVE_BYTES if reserve_out else 0):
        return FULL, f"the file system holding {folder} is full ({free} bytes free)"
    if info.f_files and info.f_ffree == 0:
        return FULL, f"the file system holding {folder} has no free inodes"
    return None


def no_room_for_reserve(path: str) -> str:
    """Why an allocation is refused while the reserve cannot be put back."""
    folder = _folder(path)
    try:
        free = f"{_free(posix.statvfs(folder))} bytes free"
    except OSError:
        free = "no room"
    return (
        f"the file system holding {folder} is full ({free}, less than the {RESERVE_BYTES >> 10} KiB kept "
        f"beside the store for releases, {path}{RESERVE_SUFFIX})"
    )


def give_up_reserve(path: str) -> bool:
    """Delete the store's reserve; True when there was one to give up."""
    try:
        posix.unlink(path + RESERVE_SUFFIX)
        return True
    except OSError:
        return False


def keep_reserve(path: str) -> bool:
    """Make sure the reserve is in place; False only when the disk has no room for it.

    One `stat` when it is there. A file system that cannot hold one for another reason
    (permissions) does not stop writes: the reserve is a safety margin, not a lock."""
    name = path + RESERVE_SUFFIX
    try:
        if posix.stat(name).st_blocks * 512 >= RESERVE_BYTES:
            return True
    except OSError:
        pass
    try:
        fd = posix.open(name, posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW, 0o600)
    except OSError:
        return True
    try:
        posix.posix_fallocate(fd, 0, RESERVE_BYTES)
        return True
    except OSError as exc:
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return True
        posix.unlink(name)  # a partly allocated reserve would only pretend
        return False
    finally:
        posix.close(fd)


def reading_uri(path: str) -> tuple[str, bool]:
    """The URI that opens the store read-only on a disk that cannot be written, and
    whether it is an `immutable` one (reads to be checked with `unchanged`)."""
    import os.path
    from urllib.parse import quote  # only on a bad disk

    base = "file:" + quote(os.path.abspath(path))
    if _size(path + "-shm") >= SHM_BYTES:
        return base + "?mode=ro", False
    if _size(path + "-wal") > 0:
        raise StoreIOError(
            f"store {path}: its -wal holds changes not yet in the file; without its -shm only a writer can read them"
        )
    return base + "?mode=ro&immutable=1", True


def file_state(path: str) -> tuple[object, ...]:
    """What a read without locks relies on: the file's identity, size and times, and the
    absence of the files a writer makes."""
    info = posix.stat(path)
    companions = tuple(_size(path + suffix) >= 0 for suffix in ("-shm", "-wal"))
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, companions


def _free(info: posix.statvfs_result) -> int:
    blocks = info.f_bfree if posix.geteuid() == 0 else info.f_bavail  # root may use the reserved blocks
    return blocks * info.f_frsize


def _folder(path: str) -> str:
    """The folder holding the file `path` (`os` only for a relative path: the plugin's are
    absolute by now, and it would be one more chain of imports per call)."""
    if not path.startswith("/"):
        import os.path

        path = os.path.abspath(path)
    return path.rpartition("/")[0] or "/"


def _size(path: str) -> int:
    """Its size; -1 when there is no such file."""
    try:
        return posix.stat(path).st_size
    except OSError:
        return -1
