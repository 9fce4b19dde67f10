"""Choosing the config dialect by the keys present in `ipam`.

Only the chosen dialect's parser is imported: the plugin is a new process per call.
"""

from __future__ import annotations

from .errors import InvalidConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ipam_config import IPAMConfig

ECS_KEYS = ("ipv4-subnet", "ipv6-subnet")
HOST_LOCAL_KEYS = ("subnet", "ranges")


def parse_ipam(config: dict[str, object], cni_args: str = "") -> IPAMConfig:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise InvalidConfig("'ipam' field missing or not an object in the network configuration")
    runtime = config.get("runtimeConfig")
    ecs = any(key in ipam for key in ECS_KEYS)
    host_local = any(key in ipam for key in HOST_LOCAL_KEYS) or (
        isinstance(runtime, dict) and runtime.get("ipRanges") is not None
    )
    if ecs and host_local:
        raise InvalidConfig(
            "ipam: mixes the ecs keys (ipv4-subnet, ipv6-subnet) with host-local's (subnet, ranges); use one"
        )
    if ecs:
        from .ecs_config import parse_ecs

        return parse_ecs(ipam)
    if host_local:
        from .host_local_config import parse_host_local

        return parse_host_local(ipam, config, cni_args)
    raise InvalidConfig("ipam: no subnet configured (ecs: ipv4-subnet/ipv6-subnet; host-local: subnet or ranges)")
