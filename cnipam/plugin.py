"""The CNI plugin executable (`cnipam`, `ecs-ipam`): environment and stdin in, one JSON
document out. A thin shell: it reads, calls the core, and maps the core's exceptions to
CNI error codes in the one table below. It never prints a traceback.

`run` is the call itself, apart from the process: the plugin calls it for a call it runs
on its own, and `cnipamd` calls it for a call a plugin forwarded, so the two paths
cannot drift apart.
"""

from __future__ import annotations

import posix
import sys

from . import __version__, commands
from .core.cni_request import parse_request
from .core.cni_version import CURRENT, SUPPORTED
from .core.errors import (
    AddressConflict,
    AddressesCooling,
    CnipamError,
    DecodeFailure,
    FileUnreadable,
    IncompatibleVersion,
    InvalidConfig,
    InvalidEnvironment,
    LeaseMissing,
    PoolExhausted,
    StoreBusy,
    StoreIOError,
    Unavailable,
)
from .core.json_codec import MAX_INPUT, dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from .core.cni_request import Request
    from .store.base import Store
    from .store.settings import StoreSettings

    # Gives the store for some settings for the length of a `with` block.
    StoreOpener = Callable[[StoreSettings], AbstractContextManager[Store]]

# CNI error codes (shared/reference/cni-spec.md §1.2); 100 and up are this plugin's own.
CNI_CODES: dict[type[CnipamError], int] = {
    IncompatibleVersion: 1,
    InvalidEnvironment: 4,
    StoreIOError: 5,
    FileUnreadable: 5,
    DecodeFailure: 6,
    InvalidConfig: 7,
    StoreBusy: 11,
    AddressesCooling: 11,
    Unavailable: 50,
    AddressConflict: 100,
    PoolExhausted: 101,
    LeaseMissing: 102,
}
INTERNAL_ERROR = 999


def cni_code(error: CnipamError) -> int:
    for kind in type(error).__mro__:
        if kind in CNI_CODES:
            return CNI_CODES[kind]
    return INTERNAL_ERROR


def main(argv: list[str] | None = None, stdin: bytes | None = None, exiting: bool = False) -> int:
    """The process: flags, or one call answered by `run`. `stdin` is what the launcher's
    forward path already read before it found no agent to take the call; `exiting`: the
    process ends right after this (the launcher's `_exit`), so the store is left open
    for the exit to drop (`call_opener`)."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        return _flags(args)
    env = _environment()
    if not env.get("CNI_COMMAND", ""):
        sys.stderr.write(f"cnipam {__version__}: CNI IPAM plugin\nCNI protocol versions: {', '.join(SUPPORTED)}\n")
        return 0
    try:
        cwd = posix.getcwd()
    except OSError:  # the folder was removed under us: relative paths stay relative, as before
        cwd = ""
    if stdin is None:
        try:
            stdin = _read_stdin()
        except CnipamError as error:
            _write(_error_text("", error))
            return 1
    text, status = run(env, stdin, cwd, call_opener(env["CNI_COMMAND"], exiting))
    _write(text)
    return status


def run(env: dict[str, str], stdin: bytes, cwd: str, open_store: StoreOpener | None = None) -> tuple[str, int]:
    """One CNI call: (what the plugin prints, its exit status).

    The single path every call takes, whether the plugin runs it itself or `cnipamd`
    runs it for a forwarding plugin, so both answer byte for byte alike. `cwd` is the
    caller's working folder: relative file names in the environment or config are the
    caller's, not those of the process running the call. `open_store` gives the store for
    some settings as a context manager; by default a store opened for this call only.
    An opener may raise agent_protocol.Declined (cnipamd at its limits): nothing has
    been done, and it passes through to the caller, who lets the plugin run the call.
    """
    command = env.get("CNI_COMMAND", "")
    if not command:
        return "", 0
    version = ""
    try:
        if command == "VERSION":
            return _text(_version_answer(stdin)), 0
        request = parse_request(command, env, stdin)
        version = request.version
        answer = _dispatch(request, env, cwd, open_store or call_opener(command, exiting=False))
        return ("" if answer is None else _text(answer)), 0
    except CnipamError as error:
        return _error_text(version, error), 1
    except Exception as error:  # a bug: still a CNI error object, never a traceback
        from .agent_protocol import Declined  # only cnipamd's opener raises it: its plugin runs the call itself

        if isinstance(error, Declined):
            raise
        return _text(_error_object(version, INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}", "")), 1


def _dispatch(request: Request, env: dict[str, str], cwd: str, open_store: StoreOpener) -> dict[str, object] | None:
    from .core.ipam_dialect import parse_ipam

    if request.command == "GC" and "ipam" not in request.config:  # GC needs no pools; the store is the host's
        with open_store(store_settings(env, None, cwd)) as store:
            commands.collect_garbage(request, store)
        return None
    config = parse_ipam(request.config, request.args)  # fully validated before the store is opened
    if request.command == "ADD" and config.resolv_conf:
        from .core.resolv_conf import parse_resolv_conf

        config = config.with_dns(parse_resolv_conf(_read_text(config.resolv_conf, "ipam.resolvConf", cwd)))
    ipam = request.config["ipam"]
    chosen = ipam.get("store") if isinstance(ipam, dict) else None
    with open_store(store_settings(env, config.data_dir, cwd, chosen)) as store:
        if request.command == "ADD":
            return commands.add(request, config, store)
        if request.command == "GC":
            commands.collect_garbage(request, store)
        elif request.command == "DEL":
            commands.delete(request, config, store)
        elif request.command == "CHECK":
            commands.check(request, config, store)
        else:
            commands.status(request, config, store)
    return None


def store_settings(env: dict[str, str], data_dir: str | None, cwd: str, store: object = None) -> StoreSettings:
    """The store a call uses (`store`: the config's `ipam.store`), its file names anchored
    at the caller's working folder, opened for the caller's boot (core.reboot)."""
    from .boot_id import current_boot
    from .store.settings import StoreSettings

    settings = StoreSettings.from_env(env, data_dir, store).with_boot(current_boot(env))
    return settings.anchored(cwd) if cwd else settings


def call_opener(command: str, exiting: bool) -> StoreOpener:
    """How a call opens its store when no cnipamd runs it: for reading only when it only
    reads (CHECK, STATUS: readable on a full or read-only disk too), and closed after the
    call unless the process is `exiting` right after it (the launcher's path).

    An exit drops the connection as a crash would, which loses nothing: every commit is
    in the WAL, synced to the disk before it returned. Closing it instead would cost the
    call the checkpoint SQLite makes when a file's last connection closes (two syncs), and
    delete the -wal and -shm that the next call would then make again (store/sqlite.py,
    Durability)."""
    reading = command in READS

    def opener(settings: StoreSettings) -> _CallStore:
        return _CallStore(settings, reading, close=not exiting)

    return opener


class _CallStore:
    """The store of one call for the length of a `with` block."""

    def __init__(self, settings: StoreSettings, reading: bool, close: bool) -> None:
        from .store.opening import open_store  # the same opener cnipamd's cache uses

        self.store = open_store(settings, reading)
        self.close = close

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        if self.close:
            self.store.close()


READS = ("CHECK", "STATUS")


def _environment() -> dict[str, str]:
    """The environment as text, decoded as `os.environ` decodes it: the plugin's path does
    not import `os`, whose own imports (`_collections_abc`, `posixpath`, `stat`) would cost
    every call about a millisecond."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {key.decode(encoding, errors): value.decode(encoding, errors) for key, value in posix.environ.items()}


def _read_stdin() -> bytes:
    if sys.stdin is None:
        return b""
    try:
        return sys.stdin.buffer.read(MAX_INPUT + 1)
    except OSError as exc:
        raise StoreIOError(f"cannot read stdin: {exc.strerror}") from None


def _read_text(path: str, what: str, cwd: str) -> str:
    from .config_files import read_config_file
    from .store.settings import anchored_at

    return read_config_file(anchored_at(cwd, path), what, 1 << 16).decode("utf-8", "replace")


def _version_answer(body: bytes) -> dict[str, object]:
    """VERSION echoes the requested version when it is one we speak, as the spec asks."""
    requested = CURRENT
    try:
        config = loads(body) if body.strip() else {}
        if isinstance(config, dict) and config.get("cniVersion") in SUPPORTED:
            requested = config["cniVersion"]
    except CnipamError:
        pass
    return {"cniVersion": requested, "supportedVersions": list(SUPPORTED)}


def _error_object(version: str, code: int, message: str, details: str) -> dict[str, object]:
    error: dict[str, object] = {"cniVersion": version} if version else {}
    error["code"] = code
    error["msg"] = message
    if details:
        error["details"] = details
    return error


def _error_text(version: str, error: CnipamError) -> str:
    return _text(_error_object(version, cni_code(error), error.message, error.details))


def _text(document: dict[str, object]) -> str:
    return dumps(document) + "\n"


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _emit(document: dict[str, object]) -> None:
    _write(_text(document))


def _flags(args: list[str]) -> int:
    """The ECS agent's flags: it runs `--capabilities` and `--version` before using a plugin."""
    flag = args[0].lstrip("-")
    if flag == "capabilities":
        _emit({"capabilities": ["awsvpc-network-mode"]})
        return 0
    if flag == "version":
        _emit({"version": __version__, "dirty": False, "gitShortHash": _git_hash()})
        return 0
    sys.stderr.write(f"cnipam: unknown flag {args[0]!r}; a CNI plugin takes its request from CNI_COMMAND and stdin\n")
    return 2


def _git_hash() -> str:
    try:
        from ._build_info import GIT_SHORT_HASH  # type: ignore[import-not-found,import-untyped,unused-ignore]  # setup.py
    except ImportError:
        return ""
    return str(GIT_SHORT_HASH)
