"""The exceptions of cnipam.libcni.

Every failure is a CNIError carrying a CNI error code, a message and details, so a caller
(cnitool, a runtime) can print or map it without parsing text. A plugin's own error object
keeps the plugin's code, msg and details; failures the library finds itself use the spec's
codes where one fits (7 invalid config, 4 invalid arguments, 1 incompatible version) and
999 (the spec's "internal") where none does.
"""

from __future__ import annotations

from collections.abc import Sequence

INTERNAL = 999


class CNIError(Exception):
    """A failure of a CNI operation; `plugin_type`/`command` say which plugin call failed.

    str() is libcni's wording, `plugin type="bridge" name="net" failed (add): <msg>[; <details>]`,
    because operators grep for it."""

    default_code = INTERNAL

    def __init__(
        self,
        msg: str,
        details: str = "",
        code: int | None = None,
        plugin_type: str | None = None,
        command: str | None = None,
        network: str | None = None,
    ) -> None:
        self.code: int = self.default_code if code is None else code
        self.msg = msg
        self.details = details
        self.plugin_type = plugin_type
        self.command = command
        self.network = network
        super().__init__(str(self))

    @property
    def plain(self) -> str:
        """The error without the plugin prefix: `msg[; details]`, as Go's types.Error prints it."""
        return f"{self.msg}; {self.details}" if self.details else self.msg

    def __str__(self) -> str:
        if self.plugin_type is None:
            return self.plain
        name = f' name="{self.network}"' if self.network else ""
        return f'plugin type="{self.plugin_type}"{name} failed ({self.command}): {self.plain}'

    def in_plugin(self, plugin_type: str, command: str, network: str) -> CNIError:
        """Attach which plugin call failed, unless an inner call already did."""
        if self.plugin_type is None:
            self.plugin_type, self.command, self.network = plugin_type, command, network
            self.args = (str(self),)
        return self


class PluginError(CNIError):
    """The plugin ran and exited non-zero; code/msg/details are the plugin's own."""


class InvalidNetworkConfig(CNIError):
    """A network configuration (list) that cannot be used: bad JSON, missing keys, bad types."""

    default_code = 7


class ConfigNotFound(InvalidNetworkConfig):
    """No configuration file in the folder defines the requested network."""


class InvalidArguments(CNIError):
    """A runtime argument (container id, network name, interface name) breaks the spec's rules."""

    default_code = 4


class UnsupportedVersion(CNIError):
    """The operation or the plugin does not support the configuration's spec version."""

    default_code = 1


class PluginNotFound(CNIError):
    """No regular file named like the plugin's `type` in any plugin folder."""


class PluginTimeout(CNIError):
    """The plugin ran longer than the per-call timeout and was killed."""


class CacheError(CNIError):
    """A result cache entry cannot be read, decoded or written."""


class ResultError(CNIError):
    """A plugin result that is not a result, or cannot be expressed in the wanted version."""


class MultipleErrors(CNIError):
    """Several independent steps failed (GC keeps going, like libcni's errors.Join)."""

    def __init__(self, errors: Sequence[CNIError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__("\n".join(str(e) for e in self.errors), code=first.code)
