"""The plugin's forward path: hand the call to `cnipamd` when one listens.

The launcher tries this before anything else, so it is held to the cost of starting
the interpreter: it imports only `_socket` (a C module; `socket` would pull in `enum`
and `selectors`), `posix` and `sys`, never `os` (a chain of imports of its own) nor the rest of cnipam, and it
reads nothing until the agent has accepted the connection.

Who runs the call is decided by how far the request got:
* no socket file, or nobody accepts on it (a stale file left by a killed agent), or the
  request could not be sent whole: the agent never saw a complete request, so the
  plugin runs the call itself, exactly as without an agent;
* the request was sent but no complete answer came back (the agent died mid-call): the
  call may or may not have happened, and running it again could be refused (an ecs-style
  exclusive owner already holding its address), so the answer is CNI error 11, "try
  again later", which runtimes retry;
* the agent declined the call (a caller it does not serve, its limits reached): it ran
  nothing, so the plugin runs the call itself and says why on stderr.

Whom it forwards to: the environment and stdin of a call carry whatever the runtime
passed (inline etcd passwords included) and the answer becomes the result the runtime
acts on, so they go only to an agent that could not have been planted by another user.
The socket must be a socket (not a link) owned by root or by this process's own user,
in a folder owned by one of them that neither group nor others may write (so nobody
else can have bound the name or can swap it), and the process at the other end must be
root or this user (the kernel's peer credentials, SO_PEERCRED, read on the connected
socket: a socket renamed into place after the checks still names its real listener).
Otherwise the call runs directly, with one line on stderr saying why.
"""

# No `from __future__ import annotations`: importing __future__ would be one more module load
# per call.

import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

DEFAULT_SOCKET = b"/run/cnipam/cnipamd.sock"
SOCKET_VARIABLE = b"CNIPAM_AGENT_SOCKET"
SWITCH_VARIABLE = b"CNIPAM_AGENT"  # "off" disables forwarding
CONNECT_TIMEOUT = 2.0  # a listener whose backlog stays full this long is not answering: run directly
ANSWER_TIMEOUT = 120.0  # longer than any store wait the agent itself allows by default
TRY_AGAIN = 11  # CNI's "try again later"


def socket_path(environ: dict[bytes, bytes]) -> bytes | None:
    """The agent's socket for this call, or None when forwarding is switched off."""
    if environ.get(SWITCH_VARIABLE, b"").lower() == b"off":
        return None
    return environ.get(SOCKET_VARIABLE) or DEFAULT_SOCKET


def forward(path: bytes, environ: dict[bytes, bytes]) -> tuple[int | None, bytes | None]:
    """Run the call through the agent at `path`.

    Returns (exit status, None) when the call is settled (the answer, or error 11, is
    already printed), or (None, stdin) when the plugin must run the call itself; stdin
    is then the bytes already read, or None when nothing was read yet.
    """
    try:
        found = posix.lstat(path)
    except OSError:  # no agent: the plugin runs directly, having loaded nothing more than this module
        return None, None
    distrust = _distrust(path, found)
    if distrust is not None:
        _note(f"not forwarding to cnipamd: {distrust}")
        return None, None
    import _socket

    from .agent_protocol import ProtocolError, encode_request

    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None, None
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        try:
            conn.connect(path)
            peer = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
        except OSError:  # absent, stale (refused), not a socket, not permitted, backlog full
            return None, None
        listener = int.from_bytes(peer[4:8], sys.byteorder)
        if listener not in (0, posix.geteuid()):
            who = f"runs as uid {listener}, not {_trusted()}"
            _note(f"not forwarding to cnipamd: the process listening on {_text(path)} {who}")
            return None, None
        stdin = _read_stdin()
        if stdin is None:  # the plugin reports an unreadable stdin itself
            return None, None
        try:
            cwd = posix.getcwdb()
        except OSError:  # the caller's folder was removed: only the plugin itself can run there
            return None, stdin
        try:
            request = encode_request(cwd, stdin, environ)
        except ProtocolError:  # an environment too large to forward: run it here
            return None, stdin
        conn.settimeout(ANSWER_TIMEOUT)
        try:
            conn.sendall(request)
        except OSError:  # not sent whole, so the agent cannot have run it; it may have said why
            _declined_unread(conn)
            return None, stdin
        status = _settle(conn, stdin)
        return (None, stdin) if status is None else (status, None)
    finally:
        conn.close()


def _distrust(path: bytes, found: "posix.stat_result") -> str | None:
    """Why the socket at `path` (lstat: `found`) may have been put there by another user, or None."""
    me = posix.geteuid()
    if found.st_mode & 0o170000 != 0o140000:  # S_IFSOCK; a symbolic link is refused too
        return f"{_text(path)} is not a socket"
    if found.st_uid not in (0, me):
        return f"{_text(path)} belongs to uid {found.st_uid}, not {_trusted()}"
    folder = path.rpartition(b"/")[0] or (b"/" if path.startswith(b"/") else b".")
    try:
        holder = posix.stat(folder)
    except OSError as exc:
        return f"cannot look at {_text(folder)}: {exc.strerror}"
    if holder.st_uid not in (0, me):
        return f"its folder {_text(folder)} belongs to uid {holder.st_uid}, not {_trusted()}"
    if holder.st_mode & 0o022:
        who = "others" if holder.st_mode & 0o002 else "its group"
        return f"its folder {_text(folder)} is writable by {who} (mode {holder.st_mode & 0o7777:o})"
    return None


def _trusted() -> str:
    me = posix.geteuid()
    return "root" if me == 0 else f"root or uid {me}"


def _settle(conn: "_socket.socket", stdin: bytes) -> int | None:
    """The agent's answer, printed, and its exit status; None when the agent declined."""
    from .agent_protocol import MAX_ANSWER, Declined, FrameReader, ProtocolError, decode_answer

    reader = FrameReader(MAX_ANSWER)
    problem = "the agent closed the connection before answering"
    try:
        while True:
            chunk = conn.recv(min(reader.wanted(), 1 << 16))
            if not chunk or reader.feed(chunk):
                break
        if reader.payload is not None:
            text, status = decode_answer(reader.payload)
            _write(text)
            return status
    except Declined as declined:
        _note(f"cnipamd did not take the call ({declined.reason}); running it directly")
        return None
    except TimeoutError:
        problem = f"the agent did not answer within {ANSWER_TIMEOUT:g} s"
    except (OSError, ProtocolError) as exc:
        problem = f"the agent's answer was lost: {exc}"
    _write(_try_again(stdin, problem))
    return 1


def _declined_unread(conn: "_socket.socket") -> None:
    """After a failed send: the agent may have declined and closed before reading the
    request; its reason is then already waiting to be read."""
    from .agent_protocol import MAX_ANSWER, Declined, FrameReader, ProtocolError, decode_answer

    reader = FrameReader(MAX_ANSWER)
    try:
        conn.setblocking(False)
        while True:
            chunk = conn.recv(1 << 12)
            if not chunk or reader.feed(chunk):
                break
        if reader.payload is not None:
            decode_answer(reader.payload)
    except Declined as declined:
        _note(f"cnipamd did not take the call ({declined.reason}); running it directly")
    except (OSError, ProtocolError):
        pass


def _read_stdin() -> bytes | None:
    from .agent_protocol import STDIN_LIMIT

    if sys.stdin is None:
        return b""
    try:
        return sys.stdin.buffer.read(STDIN_LIMIT)
    except OSError:
        return None


def _write(data: bytes, fd: int = 1) -> None:
    view = memoryview(data)
    while view:
        written = posix.write(fd, view)
        view = view[written:]


def _note(text: str) -> None:
    """One line on stderr: why the call runs directly after all."""
    try:
        _write(f"cnipam: {text}\n".encode("utf-8", "replace"), 2)
    except OSError:
        pass


def _text(path: bytes) -> str:
    return path.decode("utf-8", "replace")


def _try_again(stdin: bytes, problem: str) -> bytes:
    """CNI error 11 in the plugin's own shape: its cniVersion when the request names one."""
    import json  # only on this rare path; the fast path stays free of it

    error: dict[str, object] = {}
    try:
        version = json.loads(stdin).get("cniVersion")
        if isinstance(version, str) and version:
            error["cniVersion"] = version
    except Exception:
        pass
    error["code"] = TRY_AGAIN
    error["msg"] = f"cnipamd: {problem}; the call may or may not have been applied, try again later"
    return (json.dumps(error, separators=(",", ":")) + "\n").encode()
