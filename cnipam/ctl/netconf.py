"""Reading the network config a host's runtime gives the plugin (`--config FILE`).

The file may be a single network config or a conflist (`plugins`); in a conflist the
IPAM section lives in one of the plugins (bridge, ptp, ...), so the first plugin whose
`ipam` parses is taken, with the list's `name` and `cniVersion`, exactly as libcni
builds that plugin's stdin. The commands need the parsed pools (where leases belong),
the network name (what leases record), and `ipam.dataDir` (where the plugin's store is).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import CnipamError, InvalidConfig
from ..core.ipam_config import IPAMConfig
from ..core.ipam_dialect import parse_ipam
from .failures import BadInput
from .json_files import load_json_file


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    ipam: IPAMConfig
    store: object = None  # its ipam.store object, which picks the store as for the plugin


def load_network_config(path: str, network: str | None = None) -> NetworkConfig:
    document = load_json_file(path, "config")
    if not isinstance(document, dict):
        raise BadInput(f"config {path}: expected a JSON object (a network config or a conflist)")
    candidates = [document]
    if isinstance(document.get("plugins"), list):
        shared = {key: document[key] for key in ("name", "cniVersion") if key in document}
        candidates = [
            {**plugin, **shared} for plugin in document["plugins"] if isinstance(plugin, dict) and "ipam" in plugin
        ]
        if not candidates:
            raise BadInput(f"config {path}: no plugin of the conflist has an ipam section")
    first_error: CnipamError | None = None
    for candidate in candidates:
        try:
            ipam = parse_ipam(candidate)
        except CnipamError as error:
            first_error = first_error or error
            continue
        name = network or candidate.get("name")
        if not isinstance(name, str) or not name:
            raise BadInput(f"config {path} has no network name; give --network")
        return NetworkConfig(name, ipam, candidate["ipam"].get("store"))
    assert first_error is not None
    raise InvalidConfig(f"config {path}: {first_error.message}")
