"""Run CNI plugins the way a container runtime does: Python's equivalent of Go's libcni.

    net = load_network_list("/etc/cni/net.d", "mynet")
    cni = CNI(["/opt/cni/bin"])
    result = cni.add_network_list(net, RuntimeConf("c1", "/run/netns/c1"))
    cni.del_network_list(net, RuntimeConf("c1", "/run/netns/c1"))

Reference: shared/reference/cni-spec.md §1-4. This package is for runtimes and
tools; the plugin itself never imports it.
"""

from __future__ import annotations

from .api import CNI
from .config import NetworkConfigList, load_network_list, network_list_from_bytes, network_list_from_file
from .errors import (
    CacheError,
    CNIError,
    ConfigNotFound,
    InvalidArguments,
    InvalidNetworkConfig,
    MultipleErrors,
    PluginError,
    PluginNotFound,
    PluginTimeout,
    ResultError,
    UnsupportedVersion,
)
from .results import convert as convert_result
from .runtime import RuntimeConf

__all__ = [
    "CNI",
    "CNIError",
    "CacheError",
    "ConfigNotFound",
    "InvalidArguments",
    "InvalidNetworkConfig",
    "MultipleErrors",
    "NetworkConfigList",
    "PluginError",
    "PluginNotFound",
    "PluginTimeout",
    "ResultError",
    "RuntimeConf",
    "UnsupportedVersion",
    "convert_result",
    "load_network_list",
    "network_list_from_bytes",
    "network_list_from_file",
]
