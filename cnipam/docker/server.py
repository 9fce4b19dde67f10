"""`cnipam-docker`: the driver served over HTTP on a UNIX socket (or TCP: loopback, or
HTTPS that requires a client certificate).

The HTTP server is the standard library's (socketserver's threading UNIX server with
http.server's request handler), not aiohttp: the store is synchronous SQLite, so an
event loop would only push every request into a thread anyway; the plugin API is seven
POST methods with tiny bodies; and no dependency is added to a package whose CNI plugin
needs none. Store calls run on one thread, several to a durable transaction: those that
arrive while a commit is in flight join the next (group_commit.py).

TLS (TCP mode, `--tls-*`) is the standard library's `ssl` over the same server: the
listening socket is wrapped, each connection's handshake runs in its own thread within
the request deadline, and a client without a certificate the CA signed never gets to
send a request. The plugin API itself has no authentication; this is the only one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

from ..core.errors import (
    AddressConflict,
    AddressesCooling,
    CnipamError,
    DecodeFailure,
    InvalidConfig,
    NotFound,
    PoolExhausted,
    StoreBusy,
    StoreCorrupt,
    StoreIOError,
)
from ..service import (
    OUT_OF_DESCRIPTORS,
    Episode,
    SpareDescriptor,
    clear_stale_socket,
    log,
    make_folder,
    remove_if_ours,
    reserve_descriptors,
    socket_mode_0660,
    start_failed,
)
from .driver import Driver
from .group_commit import GroupCommit
from .requests import MAX_BODY, BodyTimedOut, BodyTooLarge, decode_body
from .settings import SOCKET_DIR, DriverSettings, DriverTLS, load

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from socketserver import _RequestType
    from typing import Any

    from _typeshed import WriteableBuffer

    from ..metrics.daemon import DaemonMetrics
    from ..metrics.pools import Reading

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
Socket = socket.socket  # the listeners' `socket` attribute hides the module inside their classes

# The one table from failures to HTTP statuses; the first matching class wins. dockerd
# treats every non-200 as an error and shows {"Err"} to the user.
STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (BodyTooLarge, 413),
    (BodyTimedOut, 408),
    (DecodeFailure, 400),
    (InvalidConfig, 400),
    (NotFound, 404),
    (AddressConflict, 409),
    (PoolExhausted, 503),
    (AddressesCooling, 503),
    (StoreBusy, 503),
    (StoreIOError, 500),  # StoreCorrupt too, which also stops the server
)


# The plugin API's methods, as metrics label them (`/IpamDriver.` left out).
METHODS = (
    "Plugin.Activate", "GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "ReleasePool", "RequestAddress",
    "ReleaseAddress",
)  # fmt: skip


def request_subject(body: bytes, reply: dict[str, object]) -> dict[str, object]:
    """The pool, subnet and address a request was about, from its reply or else its body,
    for its log line: what an operator looks for after `docker network create` or `run`."""
    try:
        asked = decode_body(body)
    except CnipamError:
        asked = {}
    found: dict[str, object] = {}
    for name, key in (("pool", "PoolID"), ("subnet", "Pool"), ("address", "Address")):
        value = reply.get(key) or asked.get(key)
        if isinstance(value, str) and value:
            found[name] = value[:200]
    return found


def status_of(error: BaseException) -> int:
    for kind, status in STATUSES:
        if isinstance(error, kind):
            return status
    return 500


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # dockerd's Go client keeps connections alive
    server: _Listener  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        settings = self.server.driver.settings
        if hasattr(self.connection, "do_handshake"):  # TLS: nothing is read before the client proved who it is
            self.connection.settimeout(settings.request_timeout)
            self.connection.do_handshake()
        self.reader = _RequestClock(self.connection, settings.read_timeout, settings.request_timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.next_request()
        super().handle_one_request()

    def parse_request(self) -> bool:
        """http.server's parsing, then the framing it lets through refused: a request
        whose length is ambiguous would let the bytes after it be read as another
        request (request smuggling), so anything but one plain Content-Length is 400."""
        if not super().parse_request():
            return False
        problem = framing_problem(self.headers)
        if problem is not None:
            self.send_error(400, problem)
            return False
        return True

    def do_POST(self) -> None:
        started = time.monotonic()
        body = b""
        try:
            body = self._body()
            reply, status = self.server.answer(self.path, body), 200
        except CnipamError as exc:
            reply, status = {"Err": exc.message}, status_of(exc)
        except Exception as exc:  # a bug: still a JSON error, and logged
            reply, status = {"Err": f"internal error: {type(exc).__name__}: {exc}"}, 500
            self.close_connection = True  # the body may be unread: never parse it as the next request
        self._send(status, reply)
        elapsed = time.monotonic() - started
        metrics = self.server.owner.metrics
        if metrics is not None:
            metrics.request(self.path.removeprefix("/IpamDriver.").removeprefix("/"), status, elapsed)
        fields: dict[str, object] = {
            "method": self.path,
            "status": status,
            **request_subject(body, reply),
            "ms": round(elapsed * 1000, 2),
        }
        if status != 200:
            fields["err"] = reply["Err"]
        log("request", **fields)

    def do_GET(self) -> None:
        self._send(
            405 if self.path in self.server.driver.methods else 404, {"Err": f"{self.command} {self.path}: use POST"}
        )

    do_PUT = do_DELETE = do_GET

    def _body(self) -> bytes:
        raw = self.headers.get("Content-Length", "0") or "0"
        # ASCII digits only, and short: str.isdigit() accepts "²", which int() refuses, and
        # int() refuses more than 4,300 digits; either would be a 500 instead of a 400.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
            self.close_connection = True
            raise DecodeFailure(f"bad Content-Length {raw[:40]!r}")
        length = int(raw)
        if length > MAX_BODY:
            self.close_connection = True
            self._discard(length)  # so the client reads our reply instead of a broken pipe
            raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {MAX_BODY}")
        try:
            return self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise BodyTimedOut(
                f"the request did not arrive whole within {self.server.driver.settings.request_timeout:g} s"
            ) from None

    def _discard(self, length: int) -> None:
        """Read and drop an oversized body in bounded chunks (up to 64 MiB; beyond that
        the connection is simply closed)."""
        left = length if length <= 64 * MAX_BODY else 0
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except TimeoutError:
            pass  # the reply says why; the connection closes after it

    def _send(self, status: int, reply: dict[str, object]) -> None:
        self.connection.settimeout(
            self.server.driver.settings.request_timeout
        )  # a client that stops reading is dropped too
        payload = json.dumps(reply).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, an oversized header) are
        HTML pages; dockerd reads {"Err"}, so they are JSON too, and end the connection."""
        self.close_connection = True
        self._send(code, {"Err": message or f"HTTP {code}"})

    def log_message(self, format: str, *args: object) -> None:  # http.server's own lines: as JSON
        log("http", message=format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # do_POST logs every request with its outcome


class _RequestClock(io.RawIOBase):
    """The connection's bytes, read against two clocks: a kept-alive connection may wait
    `idle` seconds for the first byte of its next request, and a request, once begun, must
    arrive whole within `whole` seconds. A per-read timeout alone would let a client that
    sends a byte every few seconds hold its thread for ever."""

    def __init__(self, sock: socket.socket, idle: float, whole: float) -> None:
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.whole = whole
        self.deadline: float | None = None  # None: between requests

    def next_request(self) -> None:
        self.deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.deadline is None:
            self.sock.settimeout(self.idle)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive whole in time")
            self.sock.settimeout(left)
        received = self.sock.recv_into(buffer)
        if received and self.deadline is None:
            self.deadline = time.monotonic() + self.whole
        return received


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def framing_problem(headers: Message) -> str | None:
    """Why these request headers cannot be trusted to delimit the body, or None.

    The email parser that http.server uses skips a line it cannot read as a header
    (`Transfer-Encoding : chunked`, a name with a space or a control character) and
    keeps it as "payload", and folds a continuation line into the previous value; a
    second Content-Length is kept beside the first. Each would make this server and a
    proxy or client disagree on where the body ends (RFC 9112 section 6.3)."""
    if headers.defects or headers.get_payload():
        return "malformed header line"
    for name, value in headers.items():
        if not name or not set(name) <= _TOKEN:
            return f"malformed header name {name[:40]!r}"
        if "\r" in value or "\n" in value:
            return f"header {name} is folded over several lines"
    if "Transfer-Encoding" in headers:
        return "Transfer-Encoding is not supported; send the body with one Content-Length"
    if len(headers.get_all("Content-Length", [])) > 1:
        return "more than one Content-Length"
    return None


class Server:
    """The driver behind its group commit, and the listening socket's life cycle."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.commits = GroupCommit(driver.store)
        self.http: socketserver.BaseServer | None = None
        self.metrics: DaemonMetrics | None = None  # with --metrics-address

    def answer(self, path: str, body: bytes) -> dict[str, object]:
        started = time.monotonic()

        def handle() -> dict[str, object]:
            if self.metrics is not None:
                self.metrics.queue_waited(time.monotonic() - started)
            return self.driver.handle(path, body)

        try:
            return self.commits.run(handle)
        except StoreCorrupt as exc:
            log("fatal", error=exc.message)
            self.stop()
            raise
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.failed(exc)
            raise

    def pool_readings(self) -> list[tuple[str, Callable[[], Reading]]]:
        """The driver's store for the pool gauges, read in its turn among the requests."""
        from ..metrics.pools import read_store

        def read() -> Reading:
            reply = self.commits.run(lambda: {"reading": read_store(self.driver.store)})
            return cast("Reading", reply["reading"])

        return [(self.driver.settings.store.name, read)]

    def stop(self) -> None:
        if self.http is not None:
            threading.Thread(target=self.http.shutdown, daemon=True).start()


def _connection_failed(server: socketserver.BaseServer, request: object, client_address: object) -> None:
    """socketserver prints a multi-line traceback to stderr when a connection fails outside
    a request (a client that hangs up before our reply: BrokenPipeError); the log is JSON
    lines, so it becomes one line, and a bug still names its exception."""
    error = sys.exc_info()[1]
    log("connection", error=f"{type(error).__name__}: {error}")


def refusal(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP answer that closes the connection, sent without a handler thread."""
    payload = json.dumps({"Err": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


OUT_OF_DESCRIPTORS_REFUSAL = refusal(
    503, "Service Unavailable", "cnipam-docker has run out of file descriptors; try again"
)


class _Listener:
    """What the UNIX and the TCP listener share: the Server behind them, as the Handler
    reaches it, and how they treat their connections: at most `max_connections` served at
    once (each is a thread), the rest answered 503 at once; out of descriptors, the one
    waiting is answered 503 with the spare one instead of being retried in a busy loop."""

    daemon_threads = True  # idle keep-alive connections must not hold the exit
    request_queue_size = 128  # dockerd retries a full backlog only with multi-second back-off
    handle_error = _connection_failed
    owner: Server
    socket: Socket

    def prepare_limits(self) -> None:
        self.active = 0
        self.active_lock = threading.Lock()
        self.full = Episode("connection-limit")
        self.spare = SpareDescriptor()
        limit = self.driver.settings.max_connections
        self.full_refusal = refusal(
            503, "Service Unavailable", f"cnipam-docker is serving its limit of {limit} connections; try again"
        )

    def answer(self, path: str, body: bytes) -> dict[str, object]:
        return self.owner.answer(path, body)

    @property
    def driver(self) -> Driver:
        return self.owner.driver

    def get_request(self) -> tuple[Socket, Any]:
        try:
            accepted = self.socket.accept()
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                self.spare.shed(self.socket, OUT_OF_DESCRIPTORS_REFUSAL, exc)
            raise  # socketserver then skips this round
        self.spare.recovered()
        return accepted

    def process_request(self, request: _RequestType, client_address: Any) -> None:
        assert isinstance(request, Socket)  # a stream server's request is its connection
        limit = self.driver.settings.max_connections
        with self.active_lock:
            admitted = self.active < limit
            if admitted:
                self.active += 1
        if not admitted:
            self.full.begin(limit=limit)
            try:
                request.setblocking(False)
                request.send(self.full_refusal)
            except OSError:
                pass
            self.shutdown_request(request)  # type: ignore[attr-defined]  # socketserver's
            return
        self.full.end()
        super().process_request(request, client_address)  # type: ignore[misc]  # ThreadingMixIn's

    def process_request_thread(self, request: _RequestType, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]  # ThreadingMixIn's
        finally:
            with self.active_lock:
                self.active -= 1


class _UnixHTTPServer(_Listener, socketserver.ThreadingUnixStreamServer):
    def __init__(self, path: str, server: Server) -> None:
        super().__init__(path, Handler, bind_and_activate=False)
        self.owner = server
        self.path = path
        self.prepare_limits()

    def server_bind(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        make_folder(folder, 0o755, parents=folder == SOCKET_DIR)  # dockerd's plugin folder, made before dockerd
        clear_stale_socket(self.path, "driver")
        with socket_mode_0660():
            super().server_bind()
        self.inode = os.stat(self.path).st_ino

    def finish_request(self, request: object, client_address: object) -> None:
        Handler(request, ("unix", 0), self)  # type: ignore[arg-type]

    def remove(self) -> None:
        remove_if_ours(self.path, self.inode)


class _TCPHTTPServer(_Listener, ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], server: Server) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = server
        super().__init__(address, Handler)
        self.prepare_limits()
        tls = server.driver.settings.tls
        if tls is not None:
            self.socket = tls_context(tls).wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


def tls_context(tls: DriverTLS) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by `tls.client_ca`."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(tls.cert, tls.key)
        context.load_verify_locations(cafile=tls.client_ca)
    except (OSError, ssl.SSLError) as exc:
        what = f"{tls.cert}, {tls.key} or {tls.client_ca}"
        raise InvalidConfig(f"TLS: cannot load {what}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def spec_document(settings: DriverSettings, url: str) -> str:
    """The spec file's text: NAME.spec is the URL; NAME.json (TLS) is Docker's JSON plugin
    spec, with the files dockerd connects with."""
    tls = settings.tls
    if tls is None:
        return url + "\n"
    config = {"InsecureSkipVerify": False, "CAFile": tls.spec_ca, "CertFile": tls.spec_cert, "KeyFile": tls.spec_key}
    return json.dumps({"Name": settings.name, "Addr": url, "TLSConfig": config}, indent=2) + "\n"


def serve(settings: DriverSettings) -> int:
    from ..store.opening import open_store

    reserve_descriptors(2 * settings.max_connections + 64)
    store = open_store(settings.store)
    try:
        problems = store.problems()
        if problems:
            raise StoreCorrupt(
                f"store ({settings.store.origin}) is inconsistent ({problems[0]}); run `cnipamctl check`. Not serving."
            )
        if settings.gipam_file and os.path.exists(settings.gipam_file):
            log(
                "notice",
                message=f"gipam lease file {settings.gipam_file} is not read; import it with `cnipamctl migrate gipam`",
            )
        server = Server(Driver(store, settings))
        endpoint = None
        if settings.metrics is not None:
            from ..metrics.daemon import DaemonMetrics

            server.metrics = store.events = DaemonMetrics(
                "docker", METHODS, "method", "code", "Requests cnipam-docker answered, by method and HTTP status."
            )
            server.metrics.add_pools(server.pool_readings)
            # The driver's delay is every pool's: known before a pool's first request of this
            # run, so its cooling addresses are counted from the first scrape.
            store.reuse_delays.update(dict.fromkeys((pool.key for pool in store.docker_pools()), settings.reuse.delay))
            endpoint, metrics_url = server.metrics.serve(*settings.metrics)
        spec_file = ""
        http: _UnixHTTPServer | _TCPHTTPServer
        if settings.address:
            host, _, port = settings.address.rpartition(":")
            http = _TCPHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), server)
            bound_host, bound_port = str(http.server_address[0]), http.server_address[1]
            scheme = "tcp" if settings.tls is None else "https"
            url = f"{scheme}://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
            if settings.tls is None or settings.tls.spec_cert is not None:
                os.makedirs(settings.spec_dir, mode=0o755, exist_ok=True)
                spec_file = settings.spec_file
                temporary = spec_file + ".tmp"
                with open(temporary, "w", encoding="utf-8") as out:
                    out.write(spec_document(settings, url))
                os.replace(temporary, spec_file)
            else:
                log("notice", message=f"no spec written: put {settings.name}.json on the dockerd host, naming {url}")
            ready: dict[str, object] = {"address": url, "spec": spec_file or None, "tls": settings.tls is not None}
        else:
            http = _UnixHTTPServer(settings.socket, server)
            http.server_bind()
            http.server_activate()
            ready = {"socket": settings.socket}
        server.http = http

        def on_signal(signum: int, frame: object) -> None:
            log("stopping", signal=signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if endpoint is not None:
            ready["metrics"] = metrics_url
        log("listening", **ready, store=settings.store.origin, max_connections=settings.max_connections)
        try:
            http.serve_forever(poll_interval=0.2)
        finally:
            server.commits.stop()  # what is queued is committed and answered first
            http.server_close()
            if isinstance(http, _UnixHTTPServer):
                http.remove()
            if spec_file:
                try:
                    os.unlink(spec_file)
                except OSError:
                    pass
            if endpoint is not None:
                endpoint.shutdown()
        log("stopped")
        return 0
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(sys.argv[1:] if argv is None else argv, dict(os.environ))
        return serve(settings)
    except Exception as exc:
        return start_failed(exc)


if __name__ == "__main__":
    sys.exit(main())
