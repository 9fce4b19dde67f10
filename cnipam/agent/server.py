"""`cnipamd`: the listening socket, one thread per forwarded call, and the shutdown.

Each connection carries one request frame and one answer frame (cnipam.agent_protocol).
The call is answered by `cnipam.plugin.run`, the very function a plugin runs when it
works on its own, with the store taken from the agent's cache instead of opened for the
call; so an answer through the agent is byte for byte the answer the plugin would have
printed, and agent and direct calls on one store go through the same transactions.

Who may call: the kernel names the caller of each connection (peer.py). Root's calls are
answered here; by default nobody else's: their plugin is told to run the call itself
(a "decline", which it obeys at once). With `--allow-group`, members of that group are
answered by a child process holding their own credentials (forker.py), never by the
agent's root threads.

The standard library's plain sockets, not socketserver or asyncio: the loop is twenty
lines, and it must do three things neither offers cleanly on SIGTERM: unlink the socket
first (so new plugins run directly instead of connecting), then accept what is already
queued in the backlog (those plugins have sent their request and would otherwise get
"try again later"), then wait for every call in flight.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import sys
import threading
import time

from ..agent_protocol import encode_decline
from ..core.errors import CnipamError, InvalidConfig
from ..plugin import store_settings
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
from ..store.opening import open_store
from .connection import decline, serve_call
from .forker import Forker
from .peer import peer_of
from .reconciler import Reconciler
from .settings import AgentSettings, load
from .store_cache import StoreCache, file_identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

    from ..metrics.daemon import DaemonMetrics
    from ..metrics.pools import Reading

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")  # the CNI verbs, as metrics label them
BACKLOG = 512  # a node starting many pods at once connects in a burst
SWEEP_INTERVAL = 30.0  # how often idle stores are looked for, at most


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.stores = StoreCache(open_store, limit=settings.max_stores)  # type: ignore[arg-type]  # keyed by StoreSettings
        self.stopping = threading.Event()
        self.reconciler = Reconciler(settings.cache_dir, settings.reconcile_grace)
        self.calls: set[threading.Thread] = set()
        self.calls_lock = threading.Lock()
        self.metrics: DaemonMetrics | None = None  # with --metrics-address
        self.forker = Forker(settings.max_calls, settings.request_timeout) if settings.allow_group is not None else None
        self.full = Episode("call-limit")
        self.spare = SpareDescriptor()

    def measure(self, metrics: DaemonMetrics) -> None:
        """Report calls, waits, the collector and the held stores' pools to `metrics`."""
        self.metrics = metrics
        self.stores.events = metrics
        metrics.add_pools(self.pool_readings)
        metrics.add_collector(self.reconciler)

    # -- one forwarded call ------------------------------------------------------------

    def admit(self, conn: socket.socket) -> None:
        """Answer root (and the agent's own user) here, hand a member of the allowed group to
        the forker, decline anyone else."""
        try:
            peer = peer_of(conn)
        except OSError as exc:
            log("declined", reason=f"the caller's credentials are unknown: {exc}")
            decline(conn, "cnipamd could not learn who is calling")
            conn.close()
            return
        if peer.uid in (0, os.geteuid()):  # root, or an agent a user runs for itself
            with self.calls_lock:
                busy = len(self.calls)
            if busy < self.settings.max_calls:
                self.full.end()
                self.start_call(conn)
                return
            self.full.begin(limit=self.settings.max_calls)
            decline(conn, f"cnipamd is answering its limit of {self.settings.max_calls} calls")
            conn.close()
            return
        group = self.settings.allow_group
        if group is None or not peer.in_group(group):
            reason = "cnipamd answers only root" if group is None else f"cnipamd answers only root and group {group}"
        elif self.forker is not None and self.forker.hand_over(conn, peer):
            conn.close()  # the forking process holds its own copy
            return
        else:
            reason = "cnipamd's process for other users' calls is gone"
        log("declined", caller=peer.describe(), reason=reason)
        decline(conn, f"{reason}; uid {peer.uid} runs its call itself")
        conn.close()

    def serve_connection(self, conn: socket.socket) -> None:
        try:
            answered = self.metrics.request if self.metrics is not None else None
            serve_call(conn, self.settings.request_timeout, self.stores.using, answered)
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
                    released = self.reconciler.reconcile(store)
            except (CnipamError, OSError) as exc:
                log("reconcile-failed", store=str(path), error=getattr(exc, "message", str(exc)))
                continue
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


# -- the socket --------------------------------------------------------------------------


def claim_socket(path: str, group: int | None) -> int:
    """Make `path` ours: take the agent's lock, then remove a stale socket left by a
    killed agent. Refuses while another agent lives. Returns the lock's descriptor,
    held for the life of the process."""
    folder = os.path.dirname(path)
    make_folder(folder, 0o750, group)
    if group is not None:
        info = os.stat(folder)
        if not (info.st_mode & 0o001 or (info.st_gid == group and info.st_mode & 0o010)):
            mode = f"mode {info.st_mode & 0o7777:o}, group {info.st_gid}"
            log("notice", message=f"members of group {group} cannot reach {folder} ({mode})")
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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


def release_socket_lock(path: str, lock_fd: int) -> None:
    """Remove the agent's lock file (while still holding it, and only if it is still the
    file held: another agent may have started since) and let it go."""
    try:
        if os.stat(path + ".lock").st_ino == os.fstat(lock_fd).st_ino:
            os.unlink(path + ".lock")
    except OSError:
        pass
    os.close(lock_fd)


def listen(path: str, group: int | None) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket_mode_0660():
        listener.bind(path)
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, 0o660)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


OUT_OF_DESCRIPTORS_DECLINE = encode_decline("cnipamd has run out of file descriptors")


def accept_queued(agent: Agent, listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:  # the waiting plugin is told to run its call itself
                agent.spare.shed(listener, OUT_OF_DESCRIPTORS_DECLINE, exc)
            else:
                log("accept-failed", error=str(exc))
            return
        agent.spare.recovered()
        conn.setblocking(True)
        agent.admit(conn)


def serve(settings: AgentSettings) -> int:
    reserve_descriptors(2 * settings.max_calls + 5 * settings.max_stores + 64)
    agent = Agent(settings)
    endpoint = None
    url = None
    if settings.metrics is not None:
        from ..metrics.daemon import DaemonMetrics

        metrics = DaemonMetrics(
            "cni", COMMANDS, "command", "code", "CNI calls cnipamd answered, by command and CNI error code (0: done)."
        )
        agent.measure(metrics)
        endpoint, url = metrics.serve(*settings.metrics)
    if agent.forker is not None:
        agent.forker.start()  # first: it must not inherit open stores, threads or the listener
    for path in settings.stores:  # open now: a broken store is reported at start, repaired after a reboot, reconciled
        named = store_settings({**settings.boot_env, "IPAM_DB_PATH": path}, None, "")
        agent.stores.pin(named)
        with agent.stores.using(named, reported=False) as store:
            repaired = store.release_earlier_boots()
        if repaired:
            log("released-earlier-boots", store=path, leases=len(repaired), boot=store.boot)
    lock_fd = claim_socket(settings.socket, settings.allow_group)
    try:
        listener = listen(settings.socket, settings.allow_group)
    except BaseException:
        release_socket_lock(settings.socket, lock_fd)
        raise
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
        allow_group=settings.allow_group,
        max_calls=settings.max_calls,
        max_stores=settings.max_stores,
        reconcile_interval=settings.reconcile_interval,
        reconcile_grace=settings.reconcile_grace,
        cni_cache_dir=settings.cache_dir,
        metrics=url,
    )
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    sweep = min(settings.store_idle / 2, SWEEP_INTERVAL)
    swept = time.monotonic()
    try:
        while not stop_signal:
            if time.monotonic() - swept >= sweep:
                for closed in agent.stores.close_idle(settings.store_idle):
                    log("store-closed", store=getattr(closed, "name", str(closed)), idle=settings.store_idle)
                swept = time.monotonic()
            for fd, _ in poller.poll(sweep * 1000):
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
        if agent.forker is not None:
            agent.forker.stop()
        if endpoint is not None:
            endpoint.shutdown()
        agent.stores.close()
        release_socket_lock(settings.socket, lock_fd)
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
