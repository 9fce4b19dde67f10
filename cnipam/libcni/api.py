"""Running a network configuration list as a runtime does (shared/reference/cni-spec.md
§1.3, §3.4 and §4; libcni's api.go): ADD in order with prevResult chaining, CHECK and DEL
with the cached result, DEL in reverse order, GC and STATUS, VERSION and validation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..core.cni_version import at_least
from .cache import (
    decode_config,
    delete_entry,
    encode_entry,
    entry_path,
    list_entries,
    read_entry,
    read_result,
    runtime_of,
    write_entry,
)
from .config import NetworkConfigList
from .errors import CacheError, CNIError, MultipleErrors, UnsupportedVersion
from .gojson import marshal_bytes
from .invoke import exec_plugin, find_plugin, parse_result, plugin_env, require_version, version_info
from .results import convert
from .runtime import RuntimeConf, validate_attachment

DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_TIMEOUT = 60.0
_VALID = "cni.dev/valid-attachments"
_VALID_LEGACY = "cni.dev/attachments"  # the misspelling libcni also sends (cni#1101)


def request_config(
    net: NetworkConfigList, plugin: dict[str, Any], prev_result: dict[str, Any] | None, rt: RuntimeConf | None
) -> bytes:
    """The stdin of one plugin call: the plugin object with the list's `name` and
    `cniVersion`, `prevResult` when there is one, and `runtimeConfig` holding those
    capability args the plugin declares (`capabilities: {x: true}`). Like libcni we leave
    `capabilities` itself in (the spec says not to send it; plugins ignore it), and a
    plugin's own `runtimeConfig` is replaced only when some capability arg matches."""
    config = dict(plugin)
    config["name"] = net.name
    config["cniVersion"] = net.cni_version
    if prev_result is not None:
        config["prevResult"] = prev_result
    if rt is not None:
        capabilities = plugin.get("capabilities") or {}
        runtime_config = {k: v for k, v in rt.capability_args.items() if capabilities.get(k) is True}
        if runtime_config:
            config["runtimeConfig"] = runtime_config
    return marshal_bytes(config)


class CNI:
    """A runtime's view of CNI: where plugins live and where the result cache is."""

    def __init__(
        self,
        plugin_dirs: Sequence[str],
        cache_dir: str = DEFAULT_CACHE_DIR,
        timeout: float = DEFAULT_TIMEOUT,
        forward_stderr: bool = True,
    ) -> None:
        self.plugin_dirs = list(plugin_dirs)
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.forward_stderr = forward_stderr

    # -- one plugin call -------------------------------------------------------------

    def _run(
        self, command: str, net: NetworkConfigList, plugin: dict[str, Any], stdin: bytes, rt: RuntimeConf | None
    ) -> bytes:
        label = {"DEL": "delete"}.get(command, command.lower())
        try:
            path = find_plugin(str(plugin["type"]), self.plugin_dirs)
            if rt is None:
                env = plugin_env(command, "", "", "", "", os.pathsep.join(self.plugin_dirs))
            else:
                env = plugin_env(
                    command, rt.container_id, rt.netns, rt.ifname, rt.cni_args, os.pathsep.join(self.plugin_dirs)
                )
            return exec_plugin(path, stdin, env, self.timeout, self.forward_stderr)
        except CNIError as err:
            raise err.in_plugin(str(plugin["type"]), label, net.name) from None

    def _cache_path(self, net: NetworkConfigList, rt: RuntimeConf) -> str:
        return entry_path(self.cache_dir, net.name, rt.container_id, rt.ifname)

    # -- the verbs -------------------------------------------------------------------

    def add_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any]:
        """ADD every plugin in order, each getting the previous one's result as prevResult;
        the last result is returned in net.cni_version and cached in the plugin's own, as
        libcni caches it. A failure stops the list and leaves cleaning up to the caller's
        DEL, as the spec requires."""
        validate_attachment(net.name, rt)
        answer: dict[str, Any] = {}
        result: dict[str, Any] | None = None
        for plugin in net.plugins:
            stdout = self._run("ADD", net, plugin, request_config(net, plugin, result, rt), rt)
            try:
                answer = parse_result(stdout, net.cni_version)
                result = convert(answer, net.cni_version)
            except CNIError as err:
                raise err.in_plugin(str(plugin["type"]), "add", net.name) from None
        assert result is not None  # a list has at least one plugin
        write_entry(self._cache_path(net, rt), encode_entry(net.raw, net.name, rt, answer))
        return result

    def check_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order with the cached ADD result as prevResult."""
        if not at_least(net.cni_version, "0.4.0"):
            raise UnsupportedVersion(f'configuration version "{net.cni_version}" does not support the CHECK command')
        if net.disable_check:
            return
        validate_attachment(net.name, rt)
        cached = self.get_cached_result(net, rt)
        for plugin in net.plugins:
            self._run("CHECK", net, plugin, request_config(net, plugin, cached, rt), rt)

    def del_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order (>= 0.4.0: with the cached result as
        prevResult), then forget the cache entry. An unreadable entry is dropped and DEL
        goes on without prevResult, as libcni does: DEL must be able to clean up. Unlike
        libcni the entry is also removed for configs < 0.4.0 (libcni leaves those behind)."""
        validate_attachment(net.name, rt)
        path = self._cache_path(net, rt)
        cached = None
        if at_least(net.cni_version, "0.4.0"):
            try:
                cached = read_result(path, net.cni_version)
            except CacheError:
                delete_entry(path)
        for plugin in reversed(net.plugins):
            self._run("DEL", net, plugin, request_config(net, plugin, cached, rt), rt)
        delete_entry(path)

    def gc_network_list(self, net: NetworkConfigList, valid_attachments: list[dict[str, str]] | None) -> None:
        """DEL every cached attachment of this network that is not in `valid_attachments`
        (None: nothing is known to be valid, so all of them), then, for >= 1.1.0 and unless
        the list says disableGC, GC each plugin with the valid attachments under both
        `cni.dev/valid-attachments` and libcni's legacy `cni.dev/attachments` (absent when
        None). Keeps going after a failure; raises MultipleErrors with all of them at the end."""
        valid = None
        if valid_attachments is not None:
            valid = [
                {"containerID": str(a.get("containerID", "")), "ifname": str(a.get("ifname", ""))}
                for a in valid_attachments
            ]
        keep = {(a["containerID"], a["ifname"]) for a in valid or []}
        errors: list[CNIError] = []
        for entry in list_entries(self.cache_dir):
            if entry.get("networkName") != net.name or (entry.get("containerId"), entry.get("ifName")) in keep:
                continue
            rt = runtime_of(entry)
            try:
                self.del_network_list(net, rt)
            except CNIError as err:
                errors.append(
                    CNIError(f"failed to delete stale attachment {rt.container_id} {rt.ifname}: {err}", code=err.code)
                )
        if at_least(net.cni_version, "1.1.0") and not net.disable_gc:
            for plugin in net.plugins:
                config = {**plugin, "name": net.name, "cniVersion": net.cni_version}
                if valid is not None:
                    config[_VALID] = valid
                    config[_VALID_LEGACY] = valid
                try:
                    self._run("GC", net, plugin, marshal_bytes(config), None)
                except CNIError as err:
                    errors.append(err)
        if errors:
            raise MultipleErrors(errors)

    def get_status_network_list(self, net: NetworkConfigList) -> None:
        """STATUS each plugin in order, raising the first failure (50/51: cannot service
        ADD now). Configs older than 1.1.0 have no STATUS: nothing is run, as in libcni."""
        if not at_least(net.cni_version, "1.1.0"):
            return
        for plugin in net.plugins:
            self._run(
                "STATUS", net, plugin, marshal_bytes({**plugin, "name": net.name, "cniVersion": net.cni_version}), None
            )

    # -- the cache -------------------------------------------------------------------

    def get_cached_result(self, net: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any] | None:
        """The cached ADD result of this attachment in net.cni_version, or None."""
        return read_result(self._cache_path(net, rt), net.cni_version)

    def get_cached_config(self, net: NetworkConfigList, rt: RuntimeConf) -> tuple[bytes, RuntimeConf] | None:
        """The configuration bytes and runtime arguments the cached ADD ran with, or None
        (libcni's GetNetworkListCachedConfig)."""
        entry = read_entry(self._cache_path(net, rt))
        if entry is None:
            return None
        cached = runtime_of(entry)
        return decode_config(entry), RuntimeConf(
            rt.container_id, rt.netns, rt.ifname, cached.args or rt.args, cached.capability_args
        )

    def get_cached_attachments(self, container_id: str) -> list[dict[str, Any]]:
        """The cache entries (as stored: containerId, networkName, ifName, netns, cniArgs,
        capabilityArgs, config in base64, result) of one container, or of all for ""."""
        return list_entries(self.cache_dir, container_id)

    # -- versions --------------------------------------------------------------------

    def get_version_info(self, plugin_type: str) -> list[str]:
        """The spec versions the plugin says it supports (its VERSION answer)."""
        return version_info(find_plugin(plugin_type, self.plugin_dirs), self.timeout)

    def validate_network_list(self, net: NetworkConfigList) -> list[str]:
        """Every plugin exists and supports net.cni_version (errors for all plugins at once);
        returns the sorted union of the capabilities the plugins enable."""
        errors: list[CNIError] = []
        capabilities: set[str] = set()
        for plugin in net.plugins:
            kind = str(plugin["type"])
            try:
                require_version(kind, self.get_version_info(kind), net.cni_version)
            except CNIError as err:
                errors.append(err)
            capabilities.update(k for k, enabled in (plugin.get("capabilities") or {}).items() if enabled is True)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise MultipleErrors(errors)
        return sorted(capabilities)
