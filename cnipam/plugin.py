"""The CNI plugin executable (`cnipam`, `ecs-ipam`): environment and stdin in, one JSON
document out. A thin shell: it reads, calls the core, and maps the core's exceptions to
CNI error codes in the one table below. It never prints a traceback.
"""

from __future__ import annotations

import os
import sys

from . import __version__, commands
from .cni_request import parse_request
from .cni_version import CURRENT, SUPPORTED
from .errors import (
    AddressConflict,
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
from .json_codec import MAX_INPUT, dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cni_request import Request
    from .store.base import Store

# CNI error codes (reference cni-spec.md section 1.2); 100 and up are this plugin's own.
CNI_CODES: dict[type[CnipamError], int] = {
    IncompatibleVersion: 1,
    InvalidEnvironment: 4,
    StoreIOError: 5,
    FileUnreadable: 5,
    DecodeFailure: 6,
    InvalidConfig: 7,
    StoreBusy: 11,
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        return _flags(args)
    env = dict(os.environ)
    command = env.get("CNI_COMMAND", "")
    if not command:
        sys.stderr.write(f"cnipam {__version__}: CNI IPAM plugin\nCNI protocol versions: {', '.join(SUPPORTED)}\n")
        return 0
    version = ""
    try:
        body = _read_stdin()
        if command == "VERSION":
            _emit(_version_answer(body))
            return 0
        request = parse_request(command, env, body)
        version = request.version
        answer = _dispatch(request, env)
        if answer is not None:
            _emit(answer)
        return 0
    except CnipamError as error:
        _emit(_error_object(version, cni_code(error), error.message, error.details))
    except Exception as error:  # a bug: still a CNI error object, never a traceback
        _emit(_error_object(version, INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}", ""))
    return 1


def _dispatch(request: Request, env: dict[str, str]) -> dict[str, object] | None:
    from .ipam_dialect import parse_ipam

    if request.command == "GC" and "ipam" not in request.config:  # GC needs no pools; the store is the host's
        with _open_store(env, None) as store:
            commands.collect_garbage(request, store)
        return None
    config = parse_ipam(request.config, request.args)  # fully validated before the store is opened
    if request.command == "ADD" and config.resolv_conf:
        from .resolv_conf import parse_resolv_conf

        config = config.with_dns(parse_resolv_conf(_read_text(config.resolv_conf, "ipam.resolvConf")))
    ipam = request.config["ipam"]
    with _open_store(env, config.data_dir, ipam.get("store") if isinstance(ipam, dict) else None) as store:
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


class _open_store:
    """The store for this call, closed on the way out whatever happens."""

    def __init__(self, env: dict[str, str], data_dir: str | None, store: object = None) -> None:
        from .store.opening import open_store
        from .store.settings import StoreSettings

        self.store: Store = open_store(StoreSettings.from_env(env, data_dir, store))

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _read_stdin() -> bytes:
    if sys.stdin is None:
        return b""
    try:
        return sys.stdin.buffer.read(MAX_INPUT + 1)
    except OSError as exc:
        raise StoreIOError(f"cannot read stdin: {exc.strerror}") from None


def _read_text(path: str, what: str) -> str:
    from .config_files import read_config_file

    return read_config_file(path, what, 1 << 16).decode("utf-8", "replace")


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


def _emit(document: dict[str, object]) -> None:
    sys.stdout.write(dumps(document) + "\n")
    sys.stdout.flush()


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
