"""`cnipamd`: the listening socket, one thread per forwarded call, and the shutdown.

Each connection carries one request frame and one answer frame (cnipam.agent_protocol).
The call is answered by `cnipam.plugin.run`, the very function a plugin runs when it
works on its own, with the store taken from the agent's cache instead of opened for the
call; so an answer through the agent is byte for byte the answer the plugin would have
printed, and agent and direct calls on one store go through the same transactions.

The standard library's plain sockets, not socketserver or asyncio: the loop is twenty
lines, and it must do three things neither offers cleanly on SIGTERM: unlink the socket
first (so new plugins run directly instead of connecting), then accept what is already
queued in the backlog (those plugins have sent their request and would otherwise get
"try again later"), then wait for every call in flight.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import sys
import threading
import time

from ..agent_protocol import MAX_REQUEST, FrameReader, ProtocolError, decode_request, encode_answer
from ..core.errors import CnipamError, InvalidConfig
from ..plugin import run, store_settings
from ..service import clear_stale_socket, log, make_folder, remove_if_ours, socket_mode_0660, start_failed
from ..store.opening import open_store
from .reconciler import reconcile
from .settings import AgentSettings, load
from .store_cache import StoreCache, file_identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

    from ..metrics.daemon import DaemonMetrics
    from ..metrics.pools import Reading

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")  # the CNI verbs, as metrics label them
BACKLOG = 512  # a node starting many pods at once connects in a burst
REQUEST_TIMEOUT = 10.0  # a forwarding plugin sends its request at once; a silent peer is dropped


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.stores = StoreCache(open_store)  # type: ignore[arg-type]  # keyed by StoreSettings
        self.stopping = threading.Event()
        self.calls: set[threading.Thread] = set()
        self.calls_lock = threading.Lock()
        self.metrics: DaemonMetrics | None = None  # with --metrics-address

    def measure(self, metrics: DaemonMetrics) -> None:
        """Report calls, waits and the held stores' pools to `metrics`."""
        self.metrics = metrics
        self.stores.events = metrics
        metrics.add_pools(self.pool_readings)

    # -- one forwarded call ------------------------------------------------------------

    def answer(self, payload: bytes) -> tuple[bytes, dict[str, object]]:
        """The answer frame for one request payload, and what to log about it."""
        request = decode_request(payload)
        env = {os.fsdecode(key): os.fsdecode(value) for key, value in request.environ.items()}
        started = time.monotonic()
        text, status = run(env, request.stdin, os.fsdecode(request.cwd), self.stores.using)
        if self.metrics is not None:
            self.metrics.request(env.get("CNI_COMMAND", ""), cni_code(text, status), time.monotonic() - started)
        fields: dict[str, object] = {
            "command": env.get("CNI_COMMAND", ""),
            "container": env.get("CNI_CONTAINERID", ""),
            "ifname": env.get("CNI_IFNAME", ""),
            "status": status,
        }
        if status:
            fields["answer"] = text.strip()
        return encode_answer(text.encode("utf-8", "surrogateescape"), status), fields

    def serve_connection(self, conn: socket.socket) -> None:
        started = time.monotonic()
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            reader = FrameReader(MAX_REQUEST)
            while True:
                chunk = conn.recv(min(reader.wanted(), 1 << 16))
                if not chunk or reader.feed(chunk):
                    break
            if reader.payload is None:
                log("dropped", reason="the plugin closed the connection before sending a whole request")
                return
            frame, fields = self.answer(reader.payload)
            conn.settimeout(None)
            # Logged before the answer goes out: once the plugin has its answer, the log
            # already shows the call (what an operator, or a test, reads next).
            log("call", **fields, ms=round((time.monotonic() - started) * 1000, 2))
            conn.sendall(frame)
        except ProtocolError as exc:
            log("dropped", reason=f"not a cnipamd request: {exc}")
        except OSError as exc:
            log("dropped", reason=f"connection failed: {exc}")
        except Exception as exc:  # a bug: logged as one line, the plugin answers 11, the agent goes on
            log("internal-error", error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self.calls_lock:
                self.calls.discard(threading.current_thread())

    def start_call(self, conn: socket.socket) -> None:
        worker = threading.Thread(target=self.serve_connection, args=(conn,), name="call")
        with self.calls_lock:
            self.calls.add(worker)
        worker.start()

    def wait_for_calls(self) -> None:
        while True:
            with self.calls_lock:
                running = list(self.calls)
            if not running:
                return
            for worker in running:
                worker.join()

    # -- the reconciler ------------------------------------------------------------------

    def reconcile_forever(self, interval: float) -> None:
        while not self.stopping.wait(interval):
            self.reconcile_once()

    def reconcile_once(self) -> None:
        for path, held in self.distinct_stores():
            try:
                with self.stores.using(held) as store:
                    candidates, released = reconcile(store, self.settings.cache_dir, self.settings.reconcile_grace)
            except (CnipamError, OSError) as exc:
                log("reconcile-failed", store=str(path), error=getattr(exc, "message", str(exc)))
                continue
            if self.metrics is not None:
                self.metrics.collector_pass(candidates, len(released))
            for lease in released:
                log(
                    "released-leak",
                    store=str(path),
                    network=lease.network,
                    container=lease.container_id,
                    ifname=lease.ifname,
                    ip=lease.ip,
                    created=round(lease.created, 3),
                )

    def distinct_stores(self) -> Iterator[tuple[str, Hashable]]:
        """Each store held, once (one file may be held under several spellings or
        timeouts): its name, and the settings it is held under."""
        seen: set[object] = set()
        for held in self.stores.held():
            identity = file_identity(held) or held
            if identity in seen:
                continue
            seen.add(identity)
            yield str(getattr(held, "name", held)), held

    def pool_readings(self) -> Iterator[tuple[str, Callable[[], Reading]]]:
        """The held stores for the pool gauges, each read under the cache's lock for it."""
        from ..metrics.pools import read_store

        for name, held in self.distinct_stores():

            def read(held: Hashable = held) -> Reading:
                with self.stores.using(held, reported=False) as store:
                    return read_store(store)

            yield name, read


def cni_code(text: str, status: int) -> int:
    """The CNI error code of a call's answer (0 for success)."""
    if not status:
        return 0
    try:
        return int(json.loads(text)["code"])
    except (ValueError, KeyError, TypeError):
        return 999


# -- the socket --------------------------------------------------------------------------


def claim_socket(path: str) -> int:
    """Make `path` ours: take the agent's lock, then remove a stale socket left by a
    killed agent. Refuses while another agent lives. Returns the lock's descriptor,
    held for the life of the process."""
    make_folder(os.path.dirname(path), 0o750)
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise InvalidConfig(f"{path}: another cnipamd is running (it holds {path}.lock)") from None
    try:
        clear_stale_socket(path, "process")  # not a cnipamd: that would hold the lock
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd


def listen(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket_mode_0660():
        listener.bind(path)
    os.chmod(path, 0o660)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


def accept_queued(agent: Agent, listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of descriptors, for example: the plugin retries or runs directly
            log("accept-failed", error=str(exc))
            return
        conn.setblocking(True)
        agent.start_call(conn)


def serve(settings: AgentSettings) -> int:
    agent = Agent(settings)
    endpoint = url = None
    if settings.metrics is not None:
        from ..metrics.daemon import DaemonMetrics

        metrics = DaemonMetrics(
            "cni", COMMANDS, "command", "code", "CNI calls cnipamd answered, by command and CNI error code (0: done)."
        )
        agent.measure(metrics)
        endpoint, url = metrics.serve(*settings.metrics)
    for path in settings.stores:  # open now: a broken store is reported at start, and reconciled from the start
        with agent.stores.using(store_settings({"IPAM_DB_PATH": path}, None, ""), reported=False):
            pass
    lock_fd = claim_socket(settings.socket)
    listener = listen(settings.socket)
    inode = os.stat(settings.socket).st_ino
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    stop_signal: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        stop_signal.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reconciler = None
    if settings.reconcile_interval is not None:
        reconciler = threading.Thread(
            target=agent.reconcile_forever, args=(settings.reconcile_interval,), name="reconciler"
        )
        reconciler.start()
    log(
        "listening",
        socket=settings.socket,
        pid=os.getpid(),
        reconcile_interval=settings.reconcile_interval,
        reconcile_grace=settings.reconcile_grace,
        cni_cache_dir=settings.cache_dir,
        metrics=url,
    )
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    try:
        while not stop_signal:
            for fd, _ in poller.poll():
                if fd == wake_read:
                    try:
                        os.read(wake_read, 512)
                    except BlockingIOError:
                        pass
                else:
                    accept_queued(agent, listener)
        log("stopping", signal=stop_signal[0])
    finally:
        agent.stopping.set()
        remove_if_ours(settings.socket, inode)  # new plugins now run directly
        accept_queued(agent, listener)  # those already queued have sent their request: answer them
        listener.close()
        if reconciler is not None:
            reconciler.join()
        agent.wait_for_calls()
        if endpoint is not None:
            endpoint.shutdown()
        agent.stores.close()
        os.close(lock_fd)
    log("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = load(sys.argv[1:] if argv is None else argv, dict(os.environ))
    try:
        return serve(settings)
    except Exception as exc:
        return start_failed(exc)


if __name__ == "__main__":
    sys.exit(main())
