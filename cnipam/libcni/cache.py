"""The result cache (shared/reference/cni-spec.md §4): one file per attachment,
`<cache_dir>/results/<network>-<containerID>-<ifname>`, in Go libcni's `cniCacheV1` format.

The files are shared with Go runtimes on the same host (a containerd that did the ADD, our
DEL, or the other way round), so they are written exactly as Go libcni 1.2 and later writes
them: the struct's field order, omitempty fields left out, `netns` kept, `config` as
standard padded base64, maps with sorted keys (see gojson), and the last plugin's result in
its own version as Go's typed result writes it (results.as_go_types). Entries of older
libcnis (1.1: no `netns`, `"dns":{}` in 1.x results) and the bare results before
`cniCacheV1` are read as well. Unlike libcni we write through a temporary file and rename,
so a crash never leaves a torn entry that a later DEL would have to drop.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from typing import Any

from .errors import CacheError
from .gojson import marshal
from .results import as_go_types, convert
from .runtime import RuntimeConf

KIND = "cniCacheV1"
RESULTS = "results"


def entry_path(cache_dir: str, network: str, container_id: str, ifname: str) -> str:
    if not (network and container_id and ifname):
        raise CacheError(
            f"cache file path requires network name ({network!r}), container ID ({container_id!r}), "
            f"and interface name ({ifname!r})"
        )
    return os.path.join(cache_dir, RESULTS, f"{network}-{container_id}-{ifname}")


def encode_entry(config: bytes, network: str, rt: RuntimeConf, result: dict[str, Any]) -> bytes:
    """The bytes Go libcni's cacheAdd writes for the same call: json.Marshal(&cachedInfo{...})
    with the result read into its typed struct and written out again."""
    fields = [
        ("kind", marshal(KIND)),
        ("containerId", marshal(rt.container_id)),
        ("config", marshal(base64.b64encode(config).decode())),
        ("ifName", marshal(rt.ifname)),
        ("networkName", marshal(network)),
    ]
    if rt.netns:
        fields.append(("netns", marshal(rt.netns)))
    if rt.args:
        fields.append(("cniArgs", marshal([list(pair) for pair in rt.args])))
    if rt.capability_args:
        fields.append(("capabilityArgs", marshal(dict(rt.capability_args))))
    if result:
        fields.append(("result", marshal(as_go_types(result))))
    return ("{" + ",".join(f'"{key}":{value}' for key, value in fields) + "}").encode()


def write_entry(path: str, data: bytes) -> None:
    """Atomically replace the entry: folder 0700 and file 0600, as libcni creates them."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=folder)  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
    except OSError as err:
        raise CacheError(f"failed to write cached result {path}: {err.strerror}") from None


def delete_entry(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CacheError(f"failed to delete cached result {path}: {err.strerror}") from None


def _load(path: str) -> Any:
    """The decoded file, or None when there is no file (no cache is not an error)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CacheError(f"failed to read cached result {path}: {err.strerror}") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CacheError(f"failed to decode cached result {path}: {err}") from None


def _is_v1(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == KIND


def read_entry(path: str) -> dict[str, Any] | None:
    """A cniCacheV1 entry, or None when there is no file; anything else is a CacheError."""
    doc = _load(path)
    if doc is None:
        return None
    if not _is_v1(doc):
        raise CacheError(f"cached entry {path} has wrong kind: {doc.get('kind') if isinstance(doc, dict) else None!r}")
    return dict(doc)


def read_result(path: str, version: str) -> dict[str, Any] | None:
    """The cached ADD result converted to `version`, or None when nothing is cached. A file
    that is not a cniCacheV1 entry is read as a legacy cache, which was the bare result."""
    doc = _load(path)
    if doc is None:
        return None
    result = doc.get("result") if _is_v1(doc) else doc
    if not isinstance(result, dict):
        raise CacheError(f"cached result {path} holds no result object")
    try:
        return convert(result, version)
    except CacheError:
        raise
    except Exception as err:  # a ResultError, or a malformed result the converter trips on
        raise CacheError(f'failed to convert cached result to config version "{version}": {err}') from None


def decode_config(entry: dict[str, Any]) -> bytes:
    """The configuration bytes an entry was written with (Go's []byte as base64)."""
    try:
        return base64.b64decode(entry.get("config") or "", validate=True)
    except (binascii.Error, ValueError) as err:
        raise CacheError(f"cached config is not base64: {err}") from None


def list_entries(cache_dir: str, container_id: str = "") -> list[dict[str, Any]]:
    """Every readable cniCacheV1 entry (of `container_id`, or of all containers when ""),
    sorted by file name, skipping what libcni's GetCachedAttachments skips."""
    folder = os.path.join(cache_dir, RESULTS)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise CacheError(f"failed to list {folder}: {err.strerror}") from None
    entries = []
    for name in names:
        if container_id:
            part = f"-{container_id}-"
            pos = name.find(part)
            if pos <= 0 or pos + len(part) >= len(name):
                continue
        try:
            doc = _load(os.path.join(folder, name))
        except CacheError:
            continue
        if not _is_v1(doc) or (container_id and doc.get("containerId") != container_id):
            continue
        if not doc.get("ifName") or not doc.get("networkName"):
            continue
        entries.append(doc)
    return entries


def runtime_of(entry: dict[str, Any]) -> RuntimeConf:
    """The RuntimeConf an entry's ADD ran with (what GC's DEL of a stale attachment reuses)."""
    args = entry.get("cniArgs") or []
    return RuntimeConf(
        container_id=str(entry.get("containerId", "")),
        netns=str(entry.get("netns", "")),
        ifname=str(entry.get("ifName", "")),
        args=tuple((str(k), str(v)) for k, v in args),
        capability_args=dict(entry.get("capabilityArgs") or {}),
    )
