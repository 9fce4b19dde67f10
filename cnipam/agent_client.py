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
  again later", which runtimes retry.
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
        posix.stat(path)
    except OSError:  # no agent: the plugin runs directly, having loaded nothing more than this module
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
        except OSError:  # absent, stale (refused), not a socket, not permitted, backlog full
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
        except OSError:  # not sent whole, so the agent cannot have run it
            return None, stdin
        return _settle(conn, stdin), None
    finally:
        conn.close()


def _settle(conn: "_socket.socket", stdin: bytes) -> int:
    from .agent_protocol import MAX_ANSWER, FrameReader, ProtocolError, decode_answer

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
    except TimeoutError:
        problem = f"the agent did not answer within {ANSWER_TIMEOUT:g} s"
    except (OSError, ProtocolError) as exc:
        problem = f"the agent's answer was lost: {exc}"
    _write(_try_again(stdin, problem))
    return 1


def _read_stdin() -> bytes | None:
    from .agent_protocol import STDIN_LIMIT

    if sys.stdin is None:
        return b""
    try:
        return sys.stdin.buffer.read(STDIN_LIMIT)
    except OSError:
        return None


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = posix.write(1, view)
        view = view[written:]


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
