"""The bytes between the plugin and `cnipamd`: one request frame, one answer frame.

Sans-I/O: this module turns values into bytes and bytes into values and never touches a
socket, so the client, the server and the tests share one definition of the format. It
imports nothing at all, because the plugin's forward path loads it on every call and
the whole forward path must cost little more than starting the interpreter.

A frame is a 4-byte big-endian length and that many bytes of payload. A request payload
is `Q` followed by length-prefixed items: the caller's working folder, its stdin, then
its environment as `KEY=VALUE` entries (bytes, exactly as execve passed them). An answer
payload is `A`, the exit status as one byte, then the text the plugin prints; or `D` and
a reason: the agent declined the call (a caller it does not serve, its limits reached),
ran nothing, and the plugin runs the call itself. Every
length is bounded before anything is allocated, so a confused or hostile peer cannot
make either side read without limit.
"""

# No `from __future__ import annotations`: importing __future__ would be one more module load
# on the forward path.

LENGTH_BYTES = 4
STDIN_LIMIT = (1 << 20) + 1  # the plugin reads at most MAX_INPUT + 1 bytes (json_codec), so it can refuse "over 1 MiB"
ENV_LIMIT = 1 << 20  # the whole environment; Linux's own limit on argv + envp is 2 MiB
MAX_REQUEST = STDIN_LIMIT + ENV_LIMIT + (1 << 16)
MAX_ANSWER = 1 << 22  # a CNI result or error object is a few KiB

REQUEST_TAG = b"Q"
ANSWER_TAG = b"A"
DECLINE_TAG = b"D"
MAX_REASON = 1024


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class Declined(Exception):
    """The agent did not take the call and ran nothing of it: the caller runs it itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def encode_request(cwd: bytes, stdin: bytes, environ: dict[bytes, bytes]) -> bytes:
    """The whole request frame, ready to send."""
    if len(stdin) > STDIN_LIMIT:
        raise ProtocolError(f"stdin of {len(stdin)} bytes exceeds {STDIN_LIMIT}")
    items = [cwd, stdin]
    items += [key + b"=" + value for key, value in environ.items()]
    parts = [REQUEST_TAG]
    for item in items:
        parts.append(len(item).to_bytes(LENGTH_BYTES, "big"))
        parts.append(item)
    payload = b"".join(parts)
    if len(payload) > MAX_REQUEST:
        raise ProtocolError(f"request of {len(payload)} bytes exceeds {MAX_REQUEST}")
    return frame(payload)


class ForwardedCall:
    """A decoded request: working folder, stdin and environment, still as bytes."""

    __slots__ = ("cwd", "stdin", "environ")

    def __init__(self, cwd: bytes, stdin: bytes, environ: dict[bytes, bytes]) -> None:
        self.cwd = cwd
        self.stdin = stdin
        self.environ = environ


def decode_request(payload: bytes) -> ForwardedCall:
    if payload[:1] != REQUEST_TAG:
        raise ProtocolError("not a request")
    items = _items(payload, 1)
    if len(items) < 2:
        raise ProtocolError("request lacks its working folder or stdin")
    cwd, stdin = items[0], items[1]
    if len(stdin) > STDIN_LIMIT:
        raise ProtocolError(f"stdin of {len(stdin)} bytes exceeds {STDIN_LIMIT}")
    environ: dict[bytes, bytes] = {}
    for entry in items[2:]:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise ProtocolError("environment entry without KEY=")
        environ[key] = value
    return ForwardedCall(cwd, stdin, environ)


def encode_answer(text: bytes, status: int) -> bytes:
    if not 0 <= status <= 255:
        raise ProtocolError(f"exit status {status} is not 0-255")
    if len(text) + 2 > MAX_ANSWER:
        raise ProtocolError(f"answer of {len(text)} bytes exceeds {MAX_ANSWER}")
    return frame(ANSWER_TAG + bytes((status,)) + text)


def encode_decline(reason: str) -> bytes:
    return frame(DECLINE_TAG + reason.encode("utf-8", "replace")[:MAX_REASON])


def decode_answer(payload: bytes) -> tuple[bytes, int]:
    """(the text to print, the exit status); Declined when the agent declined the call."""
    if payload[:1] == DECLINE_TAG:
        raise Declined(payload[1 : 1 + MAX_REASON].decode("utf-8", "replace"))
    if len(payload) < 2 or payload[:1] != ANSWER_TAG:
        raise ProtocolError("not an answer")
    return payload[2:], payload[1]


def _items(payload: bytes, start: int) -> list[bytes]:
    items = []
    at, end = start, len(payload)
    while at < end:
        if at + LENGTH_BYTES > end:
            raise ProtocolError("truncated item length")
        size = int.from_bytes(payload[at : at + LENGTH_BYTES], "big")
        at += LENGTH_BYTES
        if at + size > end:
            raise ProtocolError("truncated item")
        items.append(payload[at : at + size])
        at += size
    return items


class FrameReader:
    """Collects bytes until one whole frame has arrived; refuses a frame over `limit`.

    Feed it whatever recv returned; `payload` is set once the frame is complete. Bytes
    after the frame are an error: each connection carries exactly one frame each way.
    """

    __slots__ = ("limit", "buffer", "payload")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.payload: bytes | None = None

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True once the frame is complete."""
        if self.payload is not None:
            if data:
                raise ProtocolError("bytes after the frame")
            return True
        self.buffer += data
        if len(self.buffer) < LENGTH_BYTES:
            return False
        size = int.from_bytes(self.buffer[:LENGTH_BYTES], "big")
        if size > self.limit:
            raise ProtocolError(f"frame of {size} bytes exceeds {self.limit}")
        have = len(self.buffer) - LENGTH_BYTES
        if have > size:
            raise ProtocolError("bytes after the frame")
        if have < size:
            return False
        self.payload = bytes(self.buffer[LENGTH_BYTES:])
        self.buffer = bytearray()
        return True

    def wanted(self) -> int:
        """How many more bytes the frame needs (at least 1 until the length is known)."""
        if len(self.buffer) < LENGTH_BYTES:
            return LENGTH_BYTES - len(self.buffer)
        return LENGTH_BYTES + int.from_bytes(self.buffer[:LENGTH_BYTES], "big") - len(self.buffer)
