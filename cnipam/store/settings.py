"""Where the store lives and how long to wait for it, from the environment.

Same variables as ecs-ipam: `IPAM_DB_PATH` (default `/data/eni-ipam.db`) and
`IPAM_DB_CONNECTION_TIMEOUT` (a Go duration, default 5s). Unlike upstream, a bad value
is refused with its name and value (B12), a bare file name is relative to the working
directory, `0` means "do not wait" instead of "wait forever", and a config's
`ipam.dataDir` (host-local's key) may choose the folder.
"""

from __future__ import annotations

from ..errors import InvalidEnvironment
from ..record import Record

DEFAULT_PATH = "/data/eni-ipam.db"
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 24 * 3600.0


STORE_FILE = "cnipam.db"  # the file name inside a config's dataDir


class StoreSettings(Record):
    """The store file, the lock timeout, and what chose the file (for error messages).

    A config's `ipam.dataDir` (host-local's key, per network) wins over `IPAM_DB_PATH`
    (ecs-ipam's, per host), which wins over the default.
    """

    __slots__ = ("path", "timeout", "origin")

    def __init__(self, path: str, timeout: float, origin: str = "default") -> None:
        self.path = path
        self.timeout = timeout
        self.origin = origin

    @classmethod
    def from_env(cls, env: dict[str, str], data_dir: str | None = None) -> StoreSettings:
        path = env.get("IPAM_DB_PATH", "").strip()
        origin = f"IPAM_DB_PATH={path}" if path else f"default {DEFAULT_PATH}"
        if data_dir:
            path, origin = data_dir.rstrip("/") + "/" + STORE_FILE, f"ipam.dataDir={data_dir}"
        path = path or DEFAULT_PATH
        if "\x00" in path or path.endswith("/"):
            raise InvalidEnvironment(f"IPAM_DB_PATH={path!r} is not a file path")
        raw = env.get("IPAM_DB_CONNECTION_TIMEOUT", "").strip()
        timeout = DEFAULT_TIMEOUT
        if raw:
            from ..durations import parse_go_duration  # only when the variable is set

            try:
                timeout = parse_go_duration(raw)
            except ValueError as exc:
                raise InvalidEnvironment(f"IPAM_DB_CONNECTION_TIMEOUT={raw!r} is not a duration such as 5s or 1500ms ({exc})") from None
            if timeout < 0 or timeout > MAX_TIMEOUT:
                raise InvalidEnvironment(f"IPAM_DB_CONNECTION_TIMEOUT={raw!r} must be between 0 and 24h")
        return cls(path, timeout, origin)
