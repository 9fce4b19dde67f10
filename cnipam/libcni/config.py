"""Network configuration lists: parsing, version negotiation and the /etc/cni/net.d lookup
(shared/reference/cni-spec.md §3.1-3.3, libcni's conf.go)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..core.cni_version import CURRENT, parse
from ..core.errors import IncompatibleVersion
from .errors import ConfigNotFound, InvalidNetworkConfig
from .gojson import marshal_bytes


@dataclass(frozen=True)
class NetworkConfigList:
    """A parsed network configuration list, with the bytes it came from (the cache keeps
    them so that a later DEL can be run with the configuration the ADD used)."""

    name: str
    cni_version: str
    disable_check: bool
    disable_gc: bool
    plugins: list[dict[str, Any]]
    raw: bytes
    load_only_inlined_plugins: bool = False


def _version_key(version: str, what: str) -> tuple[int, int, int]:
    try:
        return parse(version)
    except IncompatibleVersion as err:
        raise InvalidNetworkConfig(
            f"error parsing configuration list: invalid {what} {version!r}", err.message
        ) from None


def negotiate_version(doc: dict[str, Any]) -> str:
    """`cniVersions` entries not newer than the spec we implement, plus `cniVersion`; the
    highest wins (libcni's NetworkConfFromBytes). A list naming no version gets 0.1.0,
    which is what an absent version means, so plugins always see an explicit one."""
    version = doc.get("cniVersion", "")
    if not isinstance(version, str):
        raise InvalidNetworkConfig(
            f"error parsing configuration list: invalid cniVersion type {type(version).__name__}"
        )
    if "cniVersions" in doc:
        versions = doc["cniVersions"]
        if not isinstance(versions, list):
            raise InvalidNetworkConfig("error parsing configuration list: cniVersions must be a list of strings")
        current = parse(CURRENT)
        candidates = []
        for index, entry in enumerate(versions):
            if not isinstance(entry, str):
                raise InvalidNetworkConfig(
                    f"error parsing configuration list: invalid type for cniVersions index {index}"
                )
            if _version_key(entry, f"cniVersions entry at index {index}") <= current:
                candidates.append(entry)
        if version and _version_key(version, "cniVersion") <= current:
            candidates.append(version)
        if candidates:
            version = max(candidates, key=lambda v: parse(v))
    version = version or "0.1.0"
    _version_key(version, "cniVersion")
    return version


def _read_bool(doc: dict[str, Any], key: str) -> bool:
    """JSON booleans or the strings "true"/"false" in any case, as libcni accepts."""
    value = doc.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidNetworkConfig(f"error parsing configuration list: invalid value {value!r} for {key}")


def _decode(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidNetworkConfig(f"error parsing configuration: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidNetworkConfig("error parsing configuration: expected a JSON object")
    return doc


def _check_plugin(plugin: object, index: int) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise InvalidNetworkConfig(f"failed to parse plugin config {index}: expected a JSON object")
    kind = plugin.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidNetworkConfig(f"failed to parse plugin config {index}: missing 'type'")
    capabilities = plugin.get("capabilities", {})
    if not isinstance(capabilities, dict) or not all(isinstance(v, bool) for v in capabilities.values()):
        raise InvalidNetworkConfig(f"failed to parse plugin config {index}: capabilities must map names to booleans")
    return plugin


def wrap_plugin_config(doc: dict[str, Any]) -> bytes:
    """A single-plugin config as the one-plugin list libcni's ConfListFromConf builds, in the
    same bytes (Go re-marshals it with sorted keys), so caches of both agree."""
    name, version = doc.get("name", ""), doc.get("cniVersion", "")
    if not isinstance(name, str) or not isinstance(version, str):
        raise InvalidNetworkConfig("error parsing configuration: name and cniVersion must be strings")
    return marshal_bytes({"name": name, "cniVersion": version, "plugins": [doc]})


def network_list_from_bytes(data: bytes) -> NetworkConfigList:
    """A .conflist, or a single-plugin .conf (has `type`, no `plugins`) wrapped into a list."""
    doc = _decode(data)
    if "type" in doc and "plugins" not in doc:
        data = wrap_plugin_config(doc)
        doc = _decode(data)
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidNetworkConfig(
            "error parsing configuration list: no name"
            if name is None
            else "error parsing configuration list: invalid name type"
        )
    plugins = doc.get("plugins")
    if not isinstance(plugins, list):
        raise InvalidNetworkConfig(
            "error parsing configuration list: 'plugins' must be a list"
            if plugins is not None
            else "no plugin configs found"
        )
    if not plugins:
        raise InvalidNetworkConfig("error parsing configuration list: no plugins in list")
    return NetworkConfigList(
        name=name,
        cni_version=negotiate_version(doc),
        disable_check=_read_bool(doc, "disableCheck"),
        disable_gc=_read_bool(doc, "disableGC"),
        plugins=[_check_plugin(p, i) for i, p in enumerate(plugins)],
        raw=bytes(data),
        load_only_inlined_plugins=_read_bool(doc, "loadOnlyInlinedPlugins"),
    )


def network_list_from_file(path: str) -> NetworkConfigList:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise InvalidNetworkConfig(f"error reading {path}: {err.strerror}") from None
    try:
        return network_list_from_bytes(data)
    except InvalidNetworkConfig as err:
        raise InvalidNetworkConfig(f"{path}: {err.msg}", err.details) from None


def _files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigNotFound(f"cannot read {directory}: {err.strerror}") from None
    return [e.path for e in entries if os.path.splitext(e.name)[1] in extensions and not e.is_dir()]


def _names_network(path: str, name: str) -> bool:
    """Whether a file that failed to load at least claims to define `name` (then its error
    is the answer; otherwise the file is unrelated and skipped)."""
    try:
        with open(path, "rb") as file:
            doc = json.loads(file.read())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("name") == name


def load_network_list(directory: str, name: str) -> NetworkConfigList:
    """The network `name` from a config folder: `*.conflist` in file-name order first, then
    `*.conf`/`*.json` in file-name order; the first whose name matches.

    libcni aborts the lookup on any broken file; here a broken file that does not name this
    network is skipped (one bad file in /etc/cni/net.d should not take every network down),
    and one that does name it raises its own error."""
    skipped: list[str] = []
    for extensions in ((".conflist",), (".conf", ".json")):
        for path in _files(directory, extensions):
            try:
                net = network_list_from_file(path)
            except InvalidNetworkConfig as err:
                if _names_network(path, name):
                    raise
                skipped.append(f"{os.path.basename(path)}: {err.msg}")
                continue
            if net.name == name:
                return net
    details = f"skipped unreadable files: {'; '.join(skipped)}" if skipped else ""
    raise ConfigNotFound(f'no net configuration with name "{name}" in {directory}', details)
