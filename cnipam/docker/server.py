"""`cnipam-docker`: the driver served over HTTP on a UNIX socket (or loopback TCP).

The HTTP server is the standard library's (socketserver's threading UNIX server with
http.server's request handler), not aiohttp: the store is synchronous SQLite, so an
event loop would only push every request into a thread anyway; the plugin API is seven
POST methods with tiny bodies; and no dependency is added to a package whose CNI plugin
needs none. Store calls are serialised by one lock (one SQLite connection); each is one
short durable transaction, so no request waits behind another for long.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..core.errors import (
    AddressConflict,
    CnipamError,
    DecodeFailure,
    InvalidConfig,
    NotFound,
    PoolExhausted,
    StoreBusy,
    StoreCorrupt,
    StoreIOError,
)
from ..service import clear_stale_socket, log, make_folder, remove_if_ours, socket_mode_0660, start_failed
from .driver import Driver
from .requests import MAX_BODY, BodyTimedOut, BodyTooLarge
from .settings import DriverSettings, load

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..metrics.daemon import DaemonMetrics
    from ..metrics.pools import Reading

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"

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
    (StoreBusy, 503),
    (StoreIOError, 500),  # StoreCorrupt too, which also stops the server
)


# The plugin API's methods, as metrics label them (`/IpamDriver.` left out).
METHODS = (
    "Plugin.Activate", "GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "ReleasePool", "RequestAddress",
    "ReleaseAddress",
)  # fmt: skip


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
        self.connection.settimeout(self.server.driver.settings.read_timeout)  # every read and write of this connection

    def do_POST(self) -> None:
        started = time.monotonic()
        try:
            reply, status = self.server.answer(self.path, self._body()), 200
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
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise DecodeFailure("chunked request bodies are not supported; send Content-Length")
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
                f"the request body did not arrive within {self.server.driver.settings.read_timeout:g} s"
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


class Server:
    """The driver behind one lock, and the listening socket's life cycle."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.lock = threading.Lock()
        self.http: socketserver.BaseServer | None = None
        self.metrics: DaemonMetrics | None = None  # with --metrics-address

    def answer(self, path: str, body: bytes) -> dict[str, object]:
        started = time.monotonic()
        with self.lock:
            if self.metrics is not None:
                self.metrics.queue_waited(time.monotonic() - started)
            try:
                return self.driver.handle(path, body)
            except StoreCorrupt as exc:
                log("fatal", error=exc.message)
                self.stop()
                raise
            except Exception as exc:
                if self.metrics is not None:
                    self.metrics.failed(exc)
                raise

    def pool_readings(self) -> list[tuple[str, Callable[[], Reading]]]:
        """The driver's store for the pool gauges, read under the driver's lock."""
        from ..metrics.pools import read_store

        def read() -> Reading:
            with self.lock:
                return read_store(self.driver.store)

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


class _Listener:
    """What the UNIX and the TCP listener share: the Server behind them, as the Handler
    reaches it, and how they treat their connections."""

    daemon_threads = True  # idle keep-alive connections must not hold the exit
    request_queue_size = 128  # dockerd retries a full backlog only with multi-second back-off
    handle_error = _connection_failed
    owner: Server

    def answer(self, path: str, body: bytes) -> dict[str, object]:
        return self.owner.answer(path, body)

    @property
    def driver(self) -> Driver:
        return self.owner.driver


class _UnixHTTPServer(_Listener, socketserver.ThreadingUnixStreamServer):
    def __init__(self, path: str, server: Server) -> None:
        super().__init__(path, Handler, bind_and_activate=False)
        self.owner = server
        self.path = path

    def server_bind(self) -> None:
        make_folder(os.path.dirname(os.path.abspath(self.path)), 0o755)
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
        super().__init__(address, Handler)
        self.owner = server


def serve(settings: DriverSettings) -> int:
    from ..store.opening import open_store

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
            endpoint, metrics_url = server.metrics.serve(*settings.metrics)
        spec_file = ""
        http: _UnixHTTPServer | _TCPHTTPServer
        if settings.address:
            host, _, port = settings.address.rpartition(":")
            http = _TCPHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), server)
            bound_host, bound_port = str(http.server_address[0]), http.server_address[1]
            url = f"tcp://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
            os.makedirs(settings.spec_dir, mode=0o755, exist_ok=True)
            spec_file = settings.spec_file
            temporary = spec_file + ".tmp"
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(url + "\n")
            os.replace(temporary, spec_file)
            ready: dict[str, object] = {"address": url, "spec": spec_file}
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
        log("listening", **ready, store=settings.store.origin)
        try:
            http.serve_forever(poll_interval=0.2)
        finally:
            with server.lock:  # the request in progress finishes and replies first
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
        return start_failed(exc, "cnipam-docker")


if __name__ == "__main__":
    sys.exit(main())
