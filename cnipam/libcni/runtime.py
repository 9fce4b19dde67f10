"""What a runtime says about one attachment: the container, its netns, the interface name,
CNI_ARGS and capability arguments (libcni's RuntimeConf)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.cni_request import is_valid_ifname, is_valid_name
from .errors import InvalidArguments


@dataclass(frozen=True)
class RuntimeConf:
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS pairs, in order
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cni_args(self) -> str:
        """CNI_ARGS as plugins read it: `K=V;K=V`."""
        return ";".join(f"{k}={v}" for k, v in self.args)


def validate_attachment(network: str, rt: RuntimeConf) -> None:
    """The spec's rules for the names that become CNI_* values and the cache file name,
    checked before any plugin runs (libcni does the same on ADD)."""
    if not is_valid_name(rt.container_id):
        raise InvalidArguments(
            f"invalid container ID {rt.container_id!r}", "letters, digits, '_', '.', '-', not starting with a symbol"
        )
    if not is_valid_name(network):
        raise InvalidArguments(
            f"invalid network name {network!r}", "letters, digits, '_', '.', '-', not starting with a symbol"
        )
    if not is_valid_ifname(rt.ifname):
        raise InvalidArguments(
            f"invalid interface name {rt.ifname!r}", "1-15 characters, not '.' or '..', no '/', ':' or whitespace"
        )
