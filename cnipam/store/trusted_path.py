"""A store's path resolved the way the kernel would, but without trusting other users.

The plugin runs as root with a path from a config or the environment (`dataDir`,
`IPAM_DB_PATH`, `ipam.store.path`, etcd's `lockDir`). Where another user can write a
folder on that path, they can plant a link (`cnipam.db` -> /etc/nologin, a folder ->
/etc) and have root create or write files wherever it points, or move the store away so
the next container gets an address that is already held; the kernel's
`fs.protected_symlinks` guards only the last component, and only in sticky folders.

So the path is walked one component at a time from `/` (relative paths from the working
folder), with `lstat`:
* a symbolic link is followed only if root or the current user owns it (a root-owned
  link such as /var/run -> /run is as trustworthy as the folder it sits in);
* a folder must belong to root or the current user and must not be writable by its group
  (unless that is root's group) or by others, except with the sticky bit, which keeps
  others from renaming or removing what they do not own (so /tmp may be on the way);
* the folder that holds the store itself must not be writable by others even with the
  sticky bit, since SQLite creates `-wal`, `-shm` and the `.lock` beside the file by name;
* a missing folder is created (0750) when the caller asks, one level at a time, and then
  looked at like any other (another user may have created it first).
The result is the real path, links resolved, which the engine opens: the file and its
lock with O_NOFOLLOW, and SQLite opens `-wal` and `-shm` with O_NOFOLLOW itself. Nobody
but root and the current user can change a folder on the real path, so nothing can be
swapped between the walk and the opens. A refusal is a StoreIOError (CNI code 5) naming
the component. The operator may accept folders others can write (or that other users
own) with CNIPAM_ALLOW_SHARED_FOLDERS=1; another user's link is never followed.

Cost: one `lstat` per component, which the plugin pays on every call (a few
microseconds for a path of four folders; docs/benchmarks.md measures an ADD whole).
"""

from __future__ import annotations

import posix

from ..core.errors import StoreIOError
from .settings import SHARED_FOLDERS_VARIABLE

MAX_LINKS = 40  # the kernel's own limit on links followed in one lookup
_LINK, _FOLDER, _TYPE = 0o120000, 0o040000, 0o170000
_STICKY = 0o1000


class UntrustedPath(StoreIOError):
    """A component of a store's path another user could have put there or could change."""


def trusted_path(path: str, create: bool, shared_folders: bool = False) -> str:
    """The real path of the file `path` names (it need not exist); see the module's
    docstring for what is refused. `create` makes missing folders on the way; without it
    a path through a missing folder comes back unresolved (nothing exists there)."""
    me = posix.geteuid()
    pending = path.split("/")
    if not path.startswith("/"):
        pending = posix.getcwd().split("/") + pending
    current = "/"
    _check_folder("/", posix.lstat("/"), me, shared_folders, holds_file=False)
    links = 0
    name = ""
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.rpartition("/")[0] or "/"
            continue
        candidate = _child(current, name)
        last = all(part in ("", ".") for part in pending)
        try:
            info = posix.lstat(candidate)
        except FileNotFoundError:
            if last:
                break
            if not create:
                return "/".join((candidate, *pending))
            _make_folder(candidate)
            info = posix.lstat(candidate)
        except OSError as exc:
            raise StoreIOError(f"cannot look at {candidate}: {exc.strerror}") from None
        if info.st_mode & _TYPE == _LINK:
            if info.st_uid not in (0, me):
                raise UntrustedPath(f"{candidate} is a symbolic link owned by uid {info.st_uid}: not followed")
            links += 1
            if links > MAX_LINKS:
                raise StoreIOError(f"{path}: too many levels of symbolic links")
            target = posix.readlink(candidate)
            pending = target.split("/") + pending
            if target.startswith("/"):
                current = "/"
            continue
        if last:
            break
        if info.st_mode & _TYPE != _FOLDER:
            raise StoreIOError(f"{candidate} is not a folder")
        current = candidate
        _check_folder(current, info, me, shared_folders, holds_file=False)
    else:
        raise StoreIOError(f"{path!r} names a folder, not a file")
    _check_folder(current, posix.lstat(current), me, shared_folders, holds_file=True)
    return _child(current, name)


def _child(folder: str, name: str) -> str:
    """`name` in the absolute, normalised `folder` (os.path.join, without importing `os`:
    the plugin walks the path on every call)."""
    return folder + name if folder.endswith("/") else f"{folder}/{name}"


def check_siblings(path: str, suffixes: tuple[str, ...]) -> None:
    """Files beside the store that are opened by name (SQLite's `-wal` and `-shm`, the
    writers' `.lock`): none may be a link, which would otherwise fail with nothing but
    "unable to open database file" or "too many levels of symbolic links"."""
    for suffix in suffixes:
        try:
            info = posix.lstat(path + suffix)
        except OSError:
            continue
        if info.st_mode & _TYPE == _LINK:
            raise UntrustedPath(f"{path}{suffix} is a symbolic link: not followed")


def _check_folder(folder: str, info: posix.stat_result, me: int, shared_folders: bool, holds_file: bool) -> None:
    if shared_folders:
        return
    if info.st_uid not in (0, me):
        raise UntrustedPath(f"{folder} belongs to uid {info.st_uid}, who could replace what is in it; {_opt_in()}")
    writable = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0)
    if writable and (holds_file or not info.st_mode & _STICKY):
        who = "others" if info.st_mode & 0o002 else f"group {info.st_gid}"
        why = "it holds the store, whose -wal, -shm and .lock are made by name" if holds_file else "it is not sticky"
        raise UntrustedPath(f"{folder} is writable by {who} and {why}; {_opt_in()}")


def _make_folder(folder: str) -> None:
    try:
        posix.mkdir(folder, 0o750)
    except FileExistsError:  # made meanwhile, maybe by someone else: looked at like any other
        pass
    except OSError as exc:
        raise StoreIOError(f"cannot create {folder}: {exc.strerror}") from None


def _opt_in() -> str:
    return f"refusing it (set {SHARED_FOLDERS_VARIABLE}=1 to accept such folders)"
