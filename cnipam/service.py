"""What both daemons, `cnipamd` and `cnipam-docker`, do alike: their log, their socket
path, how a failed start ends, and how they stay up when clients ask too much.

* The log is one JSON object per line on stderr, which journald keeps as is and any log
  shipper parses without a grammar; requests are answered on many threads, so each line
  is written whole under a lock.
* A socket path is claimed only from a daemon that is gone: a socket file nobody accepts
  on is left by a killed daemon and replaced; a live one, or a file that is not a socket,
  is refused. The socket is born 0660 and removed at exit only while it is still ours.
* The metrics endpoint (`--metrics-address HOST:PORT`) is off unless asked for, binds
  to loopback when HOST is left out, and refuses any other address unless
  `--metrics-public` says so: metrics name networks, pools and stores.
* A start that fails ends with one line and the status of `EXIT_STATUS`, never with a
  traceback. `cnipamctl` gives the codes the same meanings (its own table adds click's
  usage errors): 1 refused or failed, worth trying again once the cause is fixed; 2 the
  invocation is wrong; 3 nothing will help but a person, a damaged store or a bug. The
  README lists them.
* Connections are bounded: each daemon caps how many it serves at once and refuses the
  rest at once, saying so, and logs when the cap is reached (`Episode`: one line when it
  starts, one when it ends, never a line per connection). Out of file descriptors,
  `accept` fails while the connection stays queued, so poll() reports it again at once: a
  busy loop that starves everyone. A descriptor kept in reserve (`SpareDescriptor`) lets
  the daemon accept that connection anyway and refuse it; failing even that, it backs off.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
import stat
import sys
import threading
import time
from contextlib import contextmanager

from .core.errors import CnipamError, InvalidConfig, StoreCorrupt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

# A daemon's exit status when it cannot start; the first matching class decides.
EXIT_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (StoreCorrupt, 3),  # the store is damaged: nothing is served, nothing is changed (`cnipamctl check`)
    (CnipamError, 2),  # refused configuration: a flag, a variable, the store's settings, another daemon on the socket
    (OSError, 1),  # the system refused: a folder, a port, a permission
)
UNEXPECTED = 3  # a bug: like a damaged store, restarting would not help; still one line, never a traceback

LOOPBACK = ("127.0.0.1", "::1", "localhost")

_write_lock = threading.Lock()


def log(event: str, **fields: object) -> None:
    line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str) + "\n"
    with _write_lock:
        sys.stderr.write(line)
        sys.stderr.flush()


def exit_status(error: BaseException, table: tuple[tuple[type[BaseException], int], ...] = EXIT_STATUS) -> int:
    """The status of the first class of `table` the error is an instance of, else UNEXPECTED."""
    return next((status for kind, status in table if isinstance(error, kind)), UNEXPECTED)


def start_failed(error: Exception) -> int:
    """Log why the daemon could not start, once, as its last JSON line; the exit status for it."""
    if isinstance(error, CnipamError):
        message = error.message
    elif isinstance(error, OSError):
        message = str(error)
    else:
        message = f"internal error: {type(error).__name__}: {error}"
    log("fatal", error=message)
    return exit_status(error)


def make_folder(folder: str, mode: int, group: int | None = None, parents: bool = False) -> None:
    """The socket's folder with exactly `mode` (and `group`) when it has to be created
    (the umask may narrow or widen makedirs' mode); an existing folder is left as it is.
    Only the folder itself is made unless `parents` (a daemon's own default place): a
    mistyped `--socket /missing/dir/a.sock` is refused, not honoured with new folders."""
    if not os.path.isdir(folder):
        parent = os.path.dirname(folder.rstrip("/")) or "/"
        if not parents and not os.path.isdir(parent):
            raise InvalidConfig(
                f"the socket's folder {folder} does not exist, nor does {parent}: create them first"
                " (only the socket's own folder is made)"
            )
        os.makedirs(folder, mode=mode, exist_ok=True)
        if group is not None:
            os.chown(folder, -1, group)
        os.chmod(folder, mode)


def clear_stale_socket(path: str, other: str) -> None:
    """Remove a socket file nobody accepts on (left by a killed daemon); refuse a live one
    (`other` names who may be listening) or a file that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise InvalidConfig(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody accepts: stale
        return
    finally:
        probe.close()
    raise InvalidConfig(f"{path}: another {other} is already listening there")


@contextmanager
def socket_mode_0660() -> Iterator[None]:
    """Around a bind: the socket is born 0660, never wider, not even for an instant."""
    old = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(old)


def remove_if_ours(path: str, inode: int) -> None:
    """Unlink the socket at exit unless another daemon has replaced it meanwhile."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Episode:
    """A condition that is logged when it starts and when it ends, not each time it is met."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.active = False
        self.lock = threading.Lock()

    def begin(self, **fields: object) -> None:
        with self.lock:
            if self.active:
                return
            self.active = True
        log(self.event, state="reached", **fields)

    def end(self) -> None:
        with self.lock:
            if not self.active:
                return
            self.active = False
        log(self.event, state="over")


class SpareDescriptor:
    """One descriptor held in reserve for the moment the process has no other."""

    BACKOFF_LIMIT = 1.0

    def __init__(self) -> None:
        self.fd: int | None = self._open()
        self.backoff = 0.0
        self.episode = Episode("out-of-descriptors")

    @staticmethod
    def _open() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def shed(self, listener: socket.socket, refusal: bytes, error: OSError) -> None:
        """`accept` failed with `error` (out of descriptors): accept the waiting connection
        with the reserve, send it `refusal` and close it; if even that fails, sleep a
        little longer each time, so the loop never spins."""
        self.episode.begin(error=str(error))
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            try:
                conn, _ = listener.accept()
            except OSError:
                conn = None
            if conn is not None:
                try:
                    conn.setblocking(False)
                    conn.send(refusal)
                except OSError:
                    pass
                conn.close()
            self.fd = self._open()
            if conn is not None:
                self.backoff = 0.0
                return
        self.backoff = min(max(self.backoff * 2, 0.01), self.BACKOFF_LIMIT)
        time.sleep(self.backoff)

    def recovered(self) -> None:
        if self.fd is None:
            self.fd = self._open()
        self.backoff = 0.0
        self.episode.end()


def reserve_descriptors(needed: int) -> None:
    """Raise the soft limit on open files to what the daemon's caps can use, when the
    hard limit allows; else say that the caps may not be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    log("notice", message=f"the limits set may need {needed} file descriptors; the process may open {soft}")


def metrics_address(text: str, public: bool) -> tuple[str, int]:
    """`--metrics-address` as (host, port): `HOST:PORT`, `[V6]:PORT`, or `:PORT` for
    loopback; InvalidConfig when malformed, or not loopback without `public`."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not colon or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 <= int(port) < 65536:
        raise InvalidConfig(f"--metrics-address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    if host not in LOOPBACK and not public:
        raise InvalidConfig(
            f"--metrics-address {text!r} is not a loopback address; metrics name every pool and network "
            "(add --metrics-public)"
        )
    return host, int(port)
