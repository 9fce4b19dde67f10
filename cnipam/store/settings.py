"""Which store a call uses and how long to wait for it: sans-I/O, from the config and
the environment.

Same variables as ecs-ipam: `IPAM_DB_PATH` (default `/data/eni-ipam.db`) and
`IPAM_DB_CONNECTION_TIMEOUT` (a Go duration, default 5s). Unlike upstream, a bad value
is refused with its name and value (B12), a bare file name is relative to the working
directory, `0` means "do not wait" instead of "wait forever", and a config's
`ipam.dataDir` (host-local's key) may choose the folder.

A cluster shares its address space through etcd: a network's `ipam.store` object, or
`CNIPAM_STORE` (the same object as JSON) for every network on a host, selects it:
`{"type": "etcd", "endpoints": ["https://10.0.0.5:2379"], "prefix": "/cnipam/",
"host": "node-1", "username": "cnipam", "passwordFile": "/etc/cnipam/etcd-password",
"tls": {"ca": "...", "cert": "...", "key": "..."}, "lockDir": "/run/cnipam",
"blockIdle": "15m"}` (an empty block its host has not used for `blockIdle` goes back to
the shared pool; "0" never). A username with an `http://` endpoint is refused unless
`"allowInsecure": true`: the password, and the token etcd returns for it, would cross the
network in clear text.
`{"type": "sqlite", "path": "..."}` names the embedded store explicitly. Precedence:
`ipam.store`, `ipam.dataDir`, `CNIPAM_STORE`, `IPAM_DB_PATH`, the default.

The store's path, and etcd's `lockDir`, may not pass through a folder other users could
change (store/trusted_path.py); `CNIPAM_ALLOW_SHARED_FOLDERS=1` is the operator's opt-in.
"""

from __future__ import annotations

from ..core.errors import CnipamError, InvalidConfig, InvalidEnvironment
from ..core.ipam_config import optional_text
from ..core.record import Record

DEFAULT_PATH = "/data/eni-ipam.db"
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 24 * 3600.0


STORE_FILE = "cnipam.db"  # the file name inside a config's dataDir
DEFAULT_PREFIX = "/cnipam/"
DEFAULT_LOCK_DIR = "/run/cnipam"
DEFAULT_BLOCK_IDLE = 900.0  # seconds an empty etcd block stays with a host that does not use it
SHARED_FOLDERS_VARIABLE = "CNIPAM_ALLOW_SHARED_FOLDERS"


class EtcdSettings(Record):
    """An etcd store as configured. The password itself may sit in a file the edge reads
    (`passwordFile`), so CNI configs, which are often world-readable, need not hold it;
    `host` None means the machine's node name, resolved at the edge."""

    __slots__ = (
        "endpoints",
        "prefix",
        "host",
        "username",
        "password",
        "password_file",
        "ca_file",
        "cert_file",
        "key_file",
        "lock_dir",
        "block_idle",
    )

    def __init__(
        self,
        endpoints: tuple[str, ...],
        prefix: str = DEFAULT_PREFIX,
        host: str | None = None,
        username: str | None = None,
        password: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        lock_dir: str | None = DEFAULT_LOCK_DIR,
        block_idle: float = DEFAULT_BLOCK_IDLE,
    ) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.host = host
        self.username = username
        self.password = password
        self.password_file = password_file
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.lock_dir = lock_dir
        self.block_idle = block_idle

    def describe(self) -> str:
        """How messages name the store: never with credentials."""
        return f"etcd {','.join(self.endpoints)} prefix {self.prefix}"


class StoreSettings(Record):
    """The store file, the lock timeout, and what chose the file (for error messages).

    A config's `ipam.dataDir` (host-local's key, per network) wins over `IPAM_DB_PATH`
    (ecs-ipam's, per host), which wins over the default. `boot` is the caller's kernel
    boot (Store.boot): set by the edges that run CNI calls, "" elsewhere.
    """

    __slots__ = ("path", "timeout", "origin", "etcd", "boot", "shared_folders")

    def __init__(
        self,
        path: str,
        timeout: float,
        origin: str = "default",
        etcd: EtcdSettings | None = None,
        boot: str = "",
        shared_folders: bool = False,
    ) -> None:
        self.path = path  # the SQLite file, when `etcd` is None
        self.timeout = timeout
        self.origin = origin
        self.etcd = etcd
        self.boot = boot
        self.shared_folders = shared_folders  # folders other users may change are accepted on the store's path

    def with_boot(self, boot: str) -> StoreSettings:
        return StoreSettings(self.path, self.timeout, self.origin, self.etcd, boot, self.shared_folders)

    def with_origin(self, origin: str) -> StoreSettings:
        return StoreSettings(self.path, self.timeout, origin, self.etcd, self.boot, self.shared_folders)

    def anchored(self, folder: str) -> StoreSettings:
        """The same settings with every relative file name (the SQLite file, the etcd
        password, TLS and lock files) made absolute at `folder`, the caller's working
        folder: a call forwarded to cnipamd must find what the plugin itself would have."""

        def at(path: str) -> str:
            return anchored_at(folder, path)

        def maybe(path: str | None) -> str | None:
            return None if path is None else at(path)

        etcd = self.etcd
        if etcd is not None:
            etcd = EtcdSettings(
                etcd.endpoints, etcd.prefix, etcd.host, etcd.username, etcd.password, maybe(etcd.password_file),
                maybe(etcd.ca_file), maybe(etcd.cert_file), maybe(etcd.key_file), maybe(etcd.lock_dir), etcd.block_idle,
            )  # fmt: skip
        return StoreSettings(at(self.path), self.timeout, self.origin, etcd, self.boot, self.shared_folders)

    @property
    def name(self) -> str:
        """The store as reports name it: its file, or its etcd cluster and prefix."""
        return self.etcd.describe() if self.etcd is not None else self.path

    @classmethod
    def for_file(cls, env: dict[str, str], path: str, flag: str = "--db") -> StoreSettings:
        """An operator's `--db PATH`: that SQLite file, whatever CNIPAM_STORE says (naming a
        file means that file), with the timeout the environment sets."""
        others = {key: value for key, value in env.items() if key != "CNIPAM_STORE"}
        settings = cls.from_env({**others, "IPAM_DB_PATH": path})
        return cls(settings.path, settings.timeout, f"{flag} {path}", None, shared_folders=settings.shared_folders)

    @classmethod
    def for_store(cls, env: dict[str, str], text: str, flag: str = "--store") -> StoreSettings:
        """An operator's `--store JSON`: that store object, whatever CNIPAM_STORE says, with
        every message about it naming the flag."""
        from ..core.json_codec import loads

        try:
            store = loads(text.encode(), flag)
        except CnipamError as exc:
            raise InvalidConfig(exc.message) from None
        others = {key: value for key, value in env.items() if key != "CNIPAM_STORE"}
        return cls.from_env(others, None, store, flag)

    @classmethod
    def from_env(
        cls, env: dict[str, str], data_dir: str | None = None, store: object = None, store_origin: str = "ipam.store"
    ) -> StoreSettings:
        """`store` is the config's `ipam.store` object, if any (`store_origin` names where it
        came from in messages)."""
        path = env.get("IPAM_DB_PATH", "").strip()
        origin = f"IPAM_DB_PATH={path}" if path else f"default {DEFAULT_PATH}"
        etcd = None
        if store is None and not data_dir and env.get("CNIPAM_STORE", "").strip():
            from ..core.json_codec import loads

            try:
                store = loads(env["CNIPAM_STORE"].encode(), "CNIPAM_STORE")
            except CnipamError as exc:
                raise InvalidEnvironment(exc.message) from None
            where = "CNIPAM_STORE"
        else:
            where = store_origin
        if store is not None:
            chosen = _parse_store(store, where)
            if isinstance(chosen, EtcdSettings):
                etcd, origin = chosen, f"{where} {chosen.describe()}"
                if etcd.host is None and env.get("CNIPAM_HOST", "").strip():
                    etcd.host = env["CNIPAM_HOST"].strip()
            elif chosen is not None:
                path, origin = chosen, f"{where} path {chosen}"
        elif data_dir:
            path, origin = data_dir.rstrip("/") + "/" + STORE_FILE, f"ipam.dataDir={data_dir}"
        path = path or DEFAULT_PATH
        if "\x00" in path or path.endswith("/"):
            raise InvalidEnvironment(f"IPAM_DB_PATH={path!r} is not a file path")
        raw = env.get("IPAM_DB_CONNECTION_TIMEOUT", "").strip()
        timeout = DEFAULT_TIMEOUT
        if raw:
            from ..core.durations import parse_go_duration  # only when the variable is set

            try:
                timeout = parse_go_duration(raw)
            except ValueError as exc:
                raise InvalidEnvironment(
                    f"IPAM_DB_CONNECTION_TIMEOUT={raw!r} is not a duration such as 5s or 1500ms ({exc})"
                ) from None
            if timeout < 0 or timeout > MAX_TIMEOUT:
                raise InvalidEnvironment(f"IPAM_DB_CONNECTION_TIMEOUT={raw!r} must be between 0 and 24h")
        shared = env.get(SHARED_FOLDERS_VARIABLE, "").strip()
        if shared not in ("", "0", "1"):
            raise InvalidEnvironment(f"{SHARED_FOLDERS_VARIABLE}={shared!r}: expected 1 (accept) or 0 (refuse)")
        return cls(path, timeout, origin, etcd, shared_folders=shared == "1")


def anchored_at(folder: str, path: str) -> str:
    """`path` as seen from `folder` (os.path.join, without `os`: the plugin calls this on
    every call and does not import it)."""
    if path.startswith("/") or not folder:
        return path
    return folder + path if folder.endswith("/") else f"{folder}/{path}"


STORE_KEYS = {
    "type",
    "path",
    "endpoints",
    "prefix",
    "host",
    "username",
    "password",
    "passwordFile",
    "tls",
    "lockDir",
    "blockIdle",
    "allowInsecure",
}


def _parse_store(raw: object, where: str) -> EtcdSettings | str | None:
    """An `ipam.store` object: the etcd settings, or the SQLite path (None: the default)."""
    if not isinstance(raw, dict):
        raise InvalidConfig(f'{where}: expected an object such as {{"type": "etcd", "endpoints": [...]}}')
    unknown = sorted(set(raw) - STORE_KEYS)
    if unknown:
        raise InvalidConfig(f"{where}: unknown key {unknown[0]!r}")
    kind = raw.get("type", "sqlite")
    if kind == "sqlite":
        path = optional_text(raw, "path", where)
        if path is not None and path.endswith("/"):  # optional_text refused empty and NUL already
            raise InvalidConfig(f"{where}.path: {path!r} is not a file path")
        return path
    if kind != "etcd":
        raise InvalidConfig(f"{where}.type: {kind!r} is not a store type (sqlite, etcd)")
    endpoints = raw.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints or not all(isinstance(item, str) for item in endpoints):
        raise InvalidConfig(f'{where}.endpoints: expected a non-empty list of URLs such as "https://10.0.0.5:2379"')
    for endpoint in endpoints:
        if "@" in endpoint:  # user:password@host would be echoed by every message naming the endpoint
            raise InvalidConfig(
                f"{where}.endpoints: credentials in an endpoint URL are not accepted; use username and passwordFile"
            )
        if any(c.isspace() or not c.isprintable() for c in endpoint):  # it becomes the Host header
            raise InvalidConfig(f"{where}.endpoints: {endpoint[:80]!r} contains spaces or control characters")
        scheme, _, rest = endpoint.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
            raise InvalidConfig(f"{where}.endpoints: {endpoint!r} is not an http:// or https:// host:port")
    prefix = optional_text(raw, "prefix", where) or DEFAULT_PREFIX
    if not prefix.endswith("/"):
        raise InvalidConfig(f"{where}.prefix: {prefix!r} must end with '/'")
    tls = raw.get("tls", {})
    if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key"}:
        raise InvalidConfig(f"{where}.tls: expected an object with ca, cert and key file paths")
    files = [optional_text(tls, name, f"{where}.tls") for name in ("ca", "cert", "key")]
    if (files[1] is None) != (files[2] is None):
        raise InvalidConfig(f"{where}.tls: a client certificate needs both cert and key")
    if any(files) and not all(endpoint.startswith("https://") for endpoint in endpoints):
        raise InvalidConfig(f"{where}.tls: TLS files are given but an endpoint is not https://")
    username, password, password_file = (
        optional_text(raw, name, where) for name in ("username", "password", "passwordFile")
    )
    if (password is not None or password_file is not None) and not username:
        raise InvalidConfig(f"{where}: a password needs a username")
    if password is not None and password_file is not None:
        raise InvalidConfig(f"{where}: give password or passwordFile, not both")
    insecure = raw.get("allowInsecure", False)
    if not isinstance(insecure, bool):
        raise InvalidConfig(f"{where}.allowInsecure: expected true or false")
    plain = [endpoint for endpoint in endpoints if endpoint.startswith("http://")]
    if username and plain and not insecure:
        raise InvalidConfig(
            f"{where}: {plain[0]} is plain http://, so the password for {username!r} (and the token etcd returns "
            "for it) would cross the network in clear text; use https:// endpoints, or set "
            '"allowInsecure": true to send them anyway'
        )
    lock_dir = optional_text(raw, "lockDir", where) if "lockDir" in raw else DEFAULT_LOCK_DIR
    block_idle = DEFAULT_BLOCK_IDLE
    if raw.get("blockIdle") is not None:
        from ..core.durations import parse_go_duration

        text = raw["blockIdle"]
        try:
            block_idle = parse_go_duration(text) if isinstance(text, str) else -1.0
        except ValueError:
            block_idle = -1.0
        if not 0 <= block_idle <= 366 * 86400:
            raise InvalidConfig(f'{where}.blockIdle: expected a duration such as "15m" ("0": never give blocks back)')
    return EtcdSettings(
        tuple(item.rstrip("/") for item in endpoints), prefix, optional_text(raw, "host", where),
        username, password, password_file, files[0], files[1], files[2], lock_dir, block_idle,
    )  # fmt: skip
