"""A small client for etcd's /v3 JSON gateway (etcd >= 3.4), standard library only.

Why its own: the CNI plugin is a new process per call, and every Python etcd library
pulls in gRPC, protobuf or requests, costing several whole ADDs to import
(shared/reference/distributed.md §2). For the same reason it speaks HTTP/1.1 over
`_socket` itself: `http.client` imports `email.*` and `socket` imports `enum` and
`selectors`. JSON goes through json_codec (the C
accelerator without `re`), base64 through `binascii`; `ssl` is imported only when an
https endpoint is dialled.

One client holds one keep-alive connection and is not thread-safe: give each thread
its own. Every public call has one deadline, `timeout` seconds, covering
authentication, connect, send and receive, so an unreachable or leaderless etcd
becomes `StoreBusy` (CNI code 11, "try again later") within the configured timeout.
A caller that makes several calls for one operation sets `deadline` (a `monotonic()`
instant) and no call outlives it: the operation as a whole keeps the timeout.

Several endpoints: a process starts on one chosen by its pid (spreading fresh plugin
processes over the members) and keeps the one that answered. A read gets an equal share
of the time left per endpoint not yet tried and moves on to the next when its share runs
out, so a member that accepts connections but never answers (stopped, partitioned) costs
a read at most a share, not the whole timeout. A write is never sent twice: it keeps the
whole time left on the member that answered the read before it.
Configuration and protocol problems (bad credentials, bad certificates, refused
requests, malformed answers) are `StoreIOError`: retrying them will not help.

The gateway's JSON is protobuf's: bytes are base64, int64 values are decimal strings,
and fields holding their default value (0, false, empty) are left out.
"""

from __future__ import annotations

import _socket
import binascii
import os
from time import monotonic

from ..core.errors import DecodeFailure, FileUnreadable, StoreBusy, StoreIOError
from ..core.json_codec import dumps, loads
from ..core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from ssl import SSLContext
    from typing import TypeVar

    JsonObject = dict[str, object]
    _T = TypeVar("_T")

MAX_RESPONSE = 64 << 20  # a safety net only: the engine's ranges are bounded far below this
_MAX_HEADER_LINE = 16 << 10
TLS_FILE_LIMIT = 1 << 20  # a CA bundle is a few hundred KiB at most

# etcd's words for "the cluster cannot serve right now": a later try may succeed.
_BUSY_TEXTS = (
    "connection is closing",
    "no leader",
    "request timed out",
    "too many requests",
    "leader changed",
    "timed out",
    "unhealthy",
)
# gRPC codes the gateway passes through: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE.
_BUSY_CODES = (4, 8, 14)
_BUSY_STATUS = (408, 429, 503, 504)
# The token expired or the server forgot it (simple tokens do not survive a restart).
_TOKEN_TEXTS = ("invalid auth token", "token expired", "auth store is old")


class KeyValue(Record):
    """One key as etcd stores it; revisions are etcd's, `lease` is 0 without a lease."""

    __slots__ = ("key", "value", "create_revision", "mod_revision", "version", "lease")

    def __init__(
        self, key: bytes, value: bytes, create_revision: int, mod_revision: int, version: int, lease: int
    ) -> None:
        self.key = key
        self.value = value
        self.create_revision = create_revision
        self.mod_revision = mod_revision
        self.version = version
        self.lease = lease


class TxnResult(Record):
    """`responses` has one entry per op of the branch taken: the KeyValues of a range op, None for put and delete."""

    __slots__ = ("succeeded", "revision", "responses")

    def __init__(self, succeeded: bool, revision: int, responses: list[list[KeyValue] | None]) -> None:
        self.succeeded = succeeded
        self.revision = revision
        self.responses = responses


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# -- builders for txn(): the gateway's JSON for Compare and RequestOp ---------------------


def create_revision_is(key: bytes, revision: int) -> JsonObject:
    """Compare CREATE == revision; revision 0 means "the key does not exist"."""
    return {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": str(revision)}


def mod_revision_is(key: bytes, revision: int) -> JsonObject:
    """Compare MOD == revision: nobody wrote the key since it was read."""
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(revision)}


def unchanged_since(key: bytes, range_end: bytes, revision: int) -> JsonObject:
    """Compare MOD < revision + 1 over every key of [key, range_end): none of them written
    after `revision`, so none created since a read at that revision either."""
    return {
        "key": _b64(key), "range_end": _b64(range_end), "result": "LESS", "target": "MOD",
        "mod_revision": str(revision + 1),
    }  # fmt: skip


def nothing_in(key: bytes, range_end: bytes) -> JsonObject:
    """Compare VERSION == 0 over [key, range_end): etcd compares every key of a range, and
    an empty range as one absent key, so this holds exactly when the range has no key."""
    return {"key": _b64(key), "range_end": _b64(range_end), "result": "EQUAL", "target": "VERSION", "version": "0"}


def value_is(key: bytes, value: bytes) -> JsonObject:
    """Compare VALUE == value (a missing key never matches)."""
    return {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(value)}


def put_op(key: bytes, value: bytes, lease: int = 0) -> JsonObject:
    return {"request_put": _put_request(key, value, lease)}


def delete_op(key: bytes, range_end: bytes | None = None) -> JsonObject:
    return {"request_delete_range": _key_range(key, range_end)}


def range_op(key: bytes, range_end: bytes | None = None, limit: int = 0) -> JsonObject:
    return {"request_range": _range_request(key, range_end, limit)}


def _put_request(key: bytes, value: bytes, lease: int) -> JsonObject:
    request: JsonObject = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return request


def _key_range(key: bytes, range_end: bytes | None) -> JsonObject:
    request: JsonObject = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    return request


def _range_request(
    key: bytes, range_end: bytes | None, limit: int, keys_only: bool = False, serializable: bool = False
) -> JsonObject:
    request = _key_range(key, range_end)
    if limit:
        request["limit"] = str(limit)
    if keys_only:
        request["keys_only"] = True
    if serializable:
        request["serializable"] = True
    return request


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (clientv3's GetPrefixRangeEnd).

    A prefix of only 0xff bytes (or empty) has no such key: b"\\x00" then means "to the
    end of the keyspace" to etcd.
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


# -- decoding answers --------------------------------------------------------------------


class _Malformed(Exception):
    """An answer that is not what the gateway sends; reported as StoreIOError by the caller."""


def _int(obj: JsonObject, name: str) -> int:
    value = obj.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Malformed(f"{name} is {value!r}")
    try:
        return int(value)
    except ValueError:
        raise _Malformed(f"{name} is {value!r}") from None


def _object(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not an object")
    return value


def _bytes(obj: JsonObject, name: str) -> bytes:
    value = obj.get(name, "")
    if not isinstance(value, str):
        raise _Malformed(f"{name} is not a string")
    try:
        return binascii.a2b_base64(value)
    except binascii.Error:
        raise _Malformed(f"{name} is not base64") from None


def _revision(answer: JsonObject) -> int:
    return _int(_object(answer.get("header", {}), "header"), "revision")


def _kvs(answer: JsonObject) -> list[KeyValue]:
    items = answer.get("kvs", [])
    if not isinstance(items, list):
        raise _Malformed("kvs is not a list")
    result = []
    for item in items:
        kv = _object(item, "kv")
        result.append(
            KeyValue(
                _bytes(kv, "key"),
                _bytes(kv, "value"),
                _int(kv, "create_revision"),
                _int(kv, "mod_revision"),
                _int(kv, "version"),
                _int(kv, "lease"),
            )
        )
    return result


# -- transport ---------------------------------------------------------------------------


class _Closed(Exception):
    """The peer closed the connection; `received` says whether any of the answer came."""

    def __init__(self, received: bool) -> None:
        super().__init__("connection closed")
        self.received = received


class _TokenRejected(Exception):
    """The server no longer accepts our auth token."""


class _Endpoint(Record):
    __slots__ = ("url", "tls", "host", "port", "netloc")

    def __init__(self, url: str, tls: bool, host: str, port: int, netloc: str) -> None:
        self.url = url
        self.tls = tls
        self.host = host
        self.port = port
        self.netloc = netloc  # the Host header


def _parse_endpoint(url: str) -> _Endpoint:
    if "@" in url:  # never echo user:password@ in a message
        raise StoreIOError("etcd endpoint with credentials in its URL: use a username and a password instead")
    text = url.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise StoreIOError(f"etcd endpoint {url!r} is not of the form http://host:port or https://host:port")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        port_text = port_text[1:] if port_text.startswith(":") else port_text
        if not bracket:
            raise StoreIOError(f"etcd endpoint {url!r}: unclosed [")
    else:
        host, _, port_text = rest.partition(":")
    if not port_text:
        port = 2379
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise StoreIOError(f"etcd endpoint {url!r}: bad port {port_text!r}")
    return _Endpoint(f"{scheme}://{rest}", scheme == "https", host, port, rest)


class _Connection:
    """One HTTP/1.1 keep-alive connection and its read buffer; every read honours the caller's deadline."""

    __slots__ = ("sock", "endpoint", "buffer", "used", "received")

    def __init__(self, sock: _socket.socket, endpoint: _Endpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.buffer = bytearray()
        self.used = False  # an earlier request was answered on it
        self.received = False  # some of the current answer arrived

    def idle_closed(self) -> bool:
        """Whether the server closed this idle connection (an etcd restart, an idle timeout).

        Checked before reuse, so a request is never sent into a dead connection: that is
        the one case where a retry could not know whether etcd had applied it.
        """
        import select  # only when a connection is reused

        try:
            poller = select.poll()  # not select.select: it fails on descriptors past 1023
            poller.register(self.sock.fileno(), select.POLLIN)
            readable = poller.poll(0)
        except (OSError, ValueError):
            return True
        # An idle HTTP connection has nothing to read; anything readable is EOF, a reset,
        # or a TLS close_notify: reconnecting is right (and cheap) in each case.
        return bool(readable)

    def send(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(_remaining(deadline))
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        self.sock.settimeout(_remaining(deadline))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed(self.received)
        self.received = True
        self.buffer += chunk

    def line(self, deadline: float) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > _MAX_HEADER_LINE:
                raise _Malformed("header line too long")
            self._fill(deadline)

    def exactly(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self._fill(deadline)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def until_eof(self, deadline: float) -> bytes:
        try:
            while len(self.buffer) <= MAX_RESPONSE:
                self._fill(deadline)
        except _Closed:
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _remaining(deadline: float) -> float:
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _read_response(conn: _Connection, deadline: float) -> tuple[int, bytes, bool]:
    """(status, body, keep the connection) of one HTTP/1.1 response."""
    status_line = conn.line(deadline)
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Malformed(f"status line {status_line[:80]!r}")
    status = int(parts[1])
    keep = parts[0] == b"HTTP/1.1"
    length = -1
    chunked = False
    while True:
        line = conn.line(deadline)
        if not line:
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise _Malformed(f"Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif name == b"connection":
            keep = value.lower() != b"close" and (keep or value.lower() == b"keep-alive")
    if chunked:
        pieces = []
        total = 0
        while True:
            size_text = conn.line(deadline).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Malformed(f"chunk size {size_text[:40]!r}") from None
            if size == 0:
                while conn.line(deadline):  # trailers (the gateway sends Grpc-Trailer-*)
                    pass
                break
            total += size
            if total > MAX_RESPONSE:
                raise _Malformed(f"answer larger than {MAX_RESPONSE} bytes")
            pieces.append(conn.exactly(size, deadline))
            if conn.exactly(2, deadline) != b"\r\n":
                raise _Malformed("chunk not followed by CRLF")
        return status, b"".join(pieces), keep
    if length >= 0:
        if length > MAX_RESPONSE:
            raise _Malformed(f"answer of {length} bytes")
        return status, conn.exactly(length, deadline), keep
    return status, conn.until_eof(deadline), False


class EtcdClient:
    """A connection to one etcd cluster through the /v3 JSON gateway.

    `endpoints` are tried in order and the first that answers is kept for later calls;
    a connect attempt gets an equal share of what is left of the deadline, so one
    black-holed endpoint cannot use up the time the next one needs.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token_file: str | None = None,
    ) -> None:
        """`token_file`: where processes of this host keep the auth token they share (store/etcd_token.py)."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self._endpoints = [_parse_endpoint(url) for url in endpoints]
        if not self._endpoints:
            raise StoreIOError("no etcd endpoint given")
        if timeout <= 0:
            raise StoreIOError(f"etcd timeout must be positive, not {timeout!r}")
        if (username is None) != (password is None):
            raise StoreIOError("etcd username and password go together")
        if key_file and not cert_file:
            raise StoreIOError("etcd key_file needs cert_file")
        self.timeout = timeout
        self._username = username
        self._password = password
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._ssl_context: SSLContext | None = None
        self._current = os.getpid() % len(self._endpoints)  # the endpoint that answered last
        self.deadline: float | None = None  # the caller's deadline, when one operation makes several calls
        self._conn: _Connection | None = None
        self._token: str | None = None
        self._token_file = token_file if username is not None else None

    # -- KV ---------------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        limit: int = 0,
        keys_only: bool = False,
        serializable: bool = False,
    ) -> tuple[list[KeyValue], int]:
        """(KeyValues in key order, the store's revision). Bound `range_end`: etcd 3.4 counts
        every key of the range even with a limit (shared/reference/distributed.md §3.1)."""
        answer = self._call(
            "/v3/kv/range", _range_request(key, range_end, limit, keys_only, serializable), replayable=True
        )
        return self._decode(answer, lambda a: (_kvs(a), _revision(a)))

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """The revision of the write."""
        answer = self._call("/v3/kv/put", _put_request(key, value, lease))
        return self._decode(answer, _revision)

    def delete(self, key: bytes, range_end: bytes | None = None) -> int:
        """How many keys were deleted."""
        answer = self._call("/v3/kv/deleterange", _key_range(key, range_end))
        return self._decode(answer, lambda a: _int(a, "deleted"))

    def txn(
        self,
        compare: Sequence[dict[str, object]],
        success: Sequence[dict[str, object]],
        failure: Sequence[dict[str, object]] = (),
    ) -> TxnResult:
        """All compares hold → `success` ops, else `failure` ops, atomically (build them with the *_is/*_op helpers)."""
        request: JsonObject = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        reads_only = all("request_range" in op for op in (*success, *failure))  # a batch of reads: safe to send again
        answer = self._call("/v3/kv/txn", request, replayable=reads_only)
        return self._decode(answer, _txn_result)

    # -- leases -----------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        """A new lease's ID; keys put with it vanish `ttl` seconds after its last keep-alive."""
        answer = self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return self._decode(answer, lambda a: _int(a, "ID"))

    def lease_revoke(self, lease_id: int) -> None:
        """Delete the lease and its keys. A lease that is already gone is not an error:
        the keys are gone too, which is what the caller wanted."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease_id)})
        except StoreIOError as exc:
            if "lease not found" not in exc.message:
                raise

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; its TTL afterwards, 0 when the lease no longer exists."""
        answer = self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, replayable=True)

        def ttl(doc: JsonObject) -> int:
            # A stream: each message is {"result": ...} or {"error": ...}.
            if "error" in doc:
                raise _Malformed(f"keepalive error {doc['error']!r}")
            return _int(_object(doc.get("result", {}), "result"), "TTL")

        return self._decode(answer, ttl)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _endpoint_url(self) -> str:
        return self._endpoints[self._current].url

    def _decode(self, answer: JsonObject, decode: Callable[[JsonObject], _T]) -> _T:
        try:
            return decode(answer)
        except _Malformed as exc:
            raise StoreIOError(f"etcd at {self._endpoint_url()}: malformed answer: {exc}") from None

    def _call(self, path: str, request: JsonObject, replayable: bool = False) -> JsonObject:
        """POST one request under one deadline, authenticating first (or again, once, when
        the server has forgotten our token)."""
        deadline = monotonic() + self.timeout
        if self.deadline is not None:
            if self.deadline <= monotonic():
                raise StoreBusy(f"etcd: the call used up its {self.timeout:g} s before this request")
            deadline = min(deadline, self.deadline)
        body = dumps(request).encode("ascii")
        if self._username is not None and self._token is None:
            if self._token_file is not None:
                from .etcd_token import load_token

                self._token = load_token(self._token_file, self._password or "")
            if self._token is None:
                self._authenticate(deadline)
        try:
            return self._post(path, body, deadline, replayable)
        except _TokenRejected as exc:
            if self._username is None:
                raise StoreIOError(f"etcd at {self._endpoint_url()}: {exc} (no username configured)") from None
            self._token = None
            self._authenticate(deadline)
            try:
                return self._post(path, body, deadline, replayable)
            except _TokenRejected as again:
                raise StoreIOError(f"etcd at {self._endpoint_url()}: {again} right after authenticating") from None

    def _authenticate(self, deadline: float) -> None:
        body = dumps({"name": self._username, "password": self._password}).encode("ascii")
        try:
            answer = self._post("/v3/auth/authenticate", body, deadline, replayable=True, with_token=False)
        except _TokenRejected as exc:  # not expected without a token; never retry it
            raise StoreIOError(
                f"etcd at {self._endpoint_url()}: authentication as {self._username!r} failed: {exc}"
            ) from None
        except StoreIOError as exc:
            raise StoreIOError(f"authentication as {self._username!r} failed: {exc.message}") from None
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise StoreIOError(f"etcd at {self._endpoint_url()}: authentication answer carries no token")
        self._token = token
        if self._token_file is not None:
            from .etcd_token import save_token

            save_token(self._token_file, self._password or "", token)

    def _post(self, path: str, body: bytes, deadline: float, replayable: bool, with_token: bool = True) -> JsonObject:
        token = f"Authorization: {self._token}\r\n" if with_token and self._token is not None else ""
        reconnect = True  # one more try for a read on a connection that died unseen
        untried = len(self._endpoints)  # a read may move on while some are left
        while True:
            conn = self._connect(deadline)
            endpoint = conn.endpoint
            untried -= 1
            # A read's share of the time left: equal for this endpoint and each one after it.
            until = (
                deadline if not replayable or untried <= 0 else monotonic() + (deadline - monotonic()) / (untried + 1)
            )
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{token}\r\n"
            )
            request = head.encode("latin-1") + body
            reused = conn.used
            conn.received = False
            try:
                conn.send(request, until)
                status, payload, keep = _read_response(conn, until)
            except TimeoutError:
                self._give_up_on_current()
                if until < deadline:
                    continue  # a read: the next endpoint gets its share
                raise StoreBusy(f"etcd at {endpoint.url}: no answer within {self.timeout:g} s") from None
            except _Malformed as exc:
                self.close()
                raise StoreIOError(f"etcd at {endpoint.url}: malformed HTTP answer: {exc}") from None
            except (_Closed, OSError) as exc:
                self.close()
                tls_error = self._tls_failure(exc)
                if tls_error:
                    raise StoreIOError(f"etcd at {endpoint.url}: TLS failure: {tls_error}") from None
                got_some = exc.received if isinstance(exc, _Closed) else conn.received
                if reconnect and reused and not got_some and replayable:
                    reconnect, untried = False, untried + 1
                    continue
                what = "closed the connection" if isinstance(exc, _Closed) else f"connection failed: {exc}"
                self._give_up_on_current()
                if replayable and untried > 0 and monotonic() < deadline:
                    continue
                raise StoreBusy(f"etcd at {endpoint.url}: {what}") from None
            conn.used = True
            if not keep:
                self.close()
            try:
                return self._answer(endpoint, path, status, payload)
            except StoreBusy:  # this member cannot serve now (no leader, overloaded); another may
                if replayable and untried > 0 and monotonic() < deadline:
                    continue
                raise

    def _give_up_on_current(self) -> None:
        """Drop the connection, and have the next call try the next endpoint first: a member
        that hangs or has lost its leader may stay that way while another one serves."""
        self.close()
        self._current = (self._current + 1) % len(self._endpoints)

    def _answer(self, endpoint: _Endpoint, path: str, status: int, payload: bytes) -> JsonObject:
        try:
            doc = loads(payload, f"etcd answer to {path}", MAX_RESPONSE)
        except DecodeFailure as exc:
            if status == 200:
                raise StoreIOError(f"etcd at {endpoint.url}: malformed answer: {exc.message}") from None
            doc = {}
        if not isinstance(doc, dict):
            raise StoreIOError(f"etcd at {endpoint.url}: answer to {path} is not a JSON object")
        if status == 200 and "error" not in doc:
            return doc
        error = doc.get("error")
        code = doc.get("code")
        if isinstance(error, dict):  # a streaming call's error message
            code = error.get("grpc_code", code)
            error = error.get("message")
        text = str(error or doc.get("message") or payload[:200].decode("utf-8", "replace").strip() or f"HTTP {status}")
        if any(marker in text for marker in _TOKEN_TEXTS):
            raise _TokenRejected(text)
        message = f"etcd at {endpoint.url}: {path}: {text} (HTTP {status})"
        if status in _BUSY_STATUS or code in _BUSY_CODES or any(marker in text for marker in _BUSY_TEXTS):
            self._give_up_on_current()
            raise StoreBusy(message)
        if status == 404 and not doc:
            message += "; is it etcd >= 3.4 with its gRPC gateway?"
        raise StoreIOError(message)

    def _connect(self, deadline: float) -> _Connection:
        conn = self._conn
        if conn is not None:
            if not conn.idle_closed():
                return conn
            self.close()
        failures = []
        count = len(self._endpoints)
        for step in range(count):
            index = (self._current + step) % count
            endpoint = self._endpoints[index]
            left = deadline - monotonic()
            if left <= 0:
                failures.append(f"{endpoint.url}: not tried, time is up")
                continue
            try:
                sock = self._dial(endpoint, left / (count - step))
            except _TLSSetupError as exc:
                raise StoreIOError(f"etcd at {endpoint.url}: {exc}") from None
            except OSError as exc:
                failures.append(f"{endpoint.url}: {_describe(exc)}")
                continue
            self._current = index
            self._conn = _Connection(sock, endpoint)
            return self._conn
        raise StoreBusy(f"etcd unreachable within {self.timeout:g} s: " + "; ".join(failures))

    def _dial(self, endpoint: _Endpoint, budget: float) -> _socket.socket:
        """A connected socket (TLS handshake done) within `budget` seconds, or OSError."""
        deadline = monotonic() + budget
        addresses = _socket.getaddrinfo(_host_bytes(endpoint.host), endpoint.port, 0, _socket.SOCK_STREAM)
        last: OSError = OSError(f"{endpoint.host} has no address")
        for family, kind, proto, _, address in addresses:
            sock = self._new_socket(endpoint, family, kind, proto)
            try:
                sock.settimeout(_remaining(deadline))
                sock.connect(address)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                if endpoint.tls:
                    sock.settimeout(_remaining(deadline))
                    return self._wrap_tls(sock, endpoint)
                return sock
            except TimeoutError:
                sock.close()
                last = TimeoutError(f"no connection within {budget:.2g} s")
            except OSError as exc:
                sock.close()
                tls_error = self._tls_failure(exc)
                if tls_error:
                    raise _TLSSetupError(f"TLS handshake failed: {tls_error}") from None
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last

    def _new_socket(self, endpoint: _Endpoint, family: int, kind: int, proto: int) -> _socket.socket:
        if endpoint.tls:
            import socket  # ssl wraps only socket.socket; it imports the module anyway

            return socket.socket(family, kind, proto)
        return _socket.socket(family, kind, proto)

    def _wrap_tls(self, sock: _socket.socket, endpoint: _Endpoint) -> _socket.socket:
        import socket

        context = self._ssl_context or self._make_ssl_context()
        assert isinstance(sock, socket.socket)
        return context.wrap_socket(sock, server_hostname=endpoint.host)

    def _make_ssl_context(self) -> SSLContext:
        import ssl

        from ..config_files import read_config_file

        try:
            # Each file is first read through read_config_file, which refuses anything but a
            # regular file: ssl's own reads would block for ever on a FIFO.
            named = [
                (path, what)
                for path, what in ((self._ca_file, "ca"), (self._cert_file, "cert"), (self._key_file, "key"))
                if path
            ]
            pem = {what: read_config_file(path, f"ipam.store.tls.{what}", TLS_FILE_LIMIT) for path, what in named}
            ca = pem["ca"].decode("utf-8", "replace") if "ca" in pem else None
            context = ssl.create_default_context(cadata=ca)
            if self._cert_file:
                context.load_cert_chain(self._cert_file, self._key_file)
        except FileUnreadable as exc:
            raise _TLSSetupError(f"cannot load TLS files: {exc.message}") from None
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self._ca_file, self._cert_file, self._key_file) if f)
            raise _TLSSetupError(f"cannot load TLS files ({files}): {exc}") from None
        self._ssl_context = context
        return context

    def _tls_failure(self, exc: BaseException) -> str | None:
        """The text of a TLS error that retrying will not cure (a certificate problem), else None.

        An EOF in the middle of TLS is a lost connection like any other."""
        if self._ssl_context is None:
            return None
        import ssl

        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or not isinstance(exc, ssl.SSLError):
            return None
        return str(exc)


class _TLSSetupError(Exception):
    """Certificates that cannot work; not a reason to try the next endpoint."""


def _host_bytes(host: str) -> bytes:
    """The host as getaddrinfo wants it. Given a str, _socket encodes it with the "idna"
    codec, whose import pulls in `re` and `unicodedata`, on every plugin call."""
    if host.isascii():
        return host.encode("ascii")
    return host.encode("idna")


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def _txn_result(answer: JsonObject) -> TxnResult:
    items = answer.get("responses", [])
    if not isinstance(items, list):
        raise _Malformed("responses is not a list")
    responses: list[list[KeyValue] | None] = []
    for item in items:
        op = _object(item, "response")
        ranged = op.get("response_range")
        responses.append(_kvs(_object(ranged, "response_range")) if ranged is not None else None)
    succeeded = answer.get("succeeded", False)
    if not isinstance(succeeded, bool):
        raise _Malformed(f"succeeded is {succeeded!r}")
    return TxnResult(succeeded, _revision(answer), responses)
