"""Choosing the config dialect by the keys present in `ipam`."""

from __future__ import annotations

from .ecs_config import is_ecs, parse_ecs
from .errors import InvalidConfig
from .host_local_config import is_host_local, parse_host_local

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ipam_config import IPAMConfig


def parse_ipam(config: dict[str, object], cni_args: str = "") -> IPAMConfig:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise InvalidConfig("'ipam' field missing or not an object in the network configuration")
    ecs, host_local = is_ecs(ipam), is_host_local(ipam, config)
    if ecs and host_local:
        raise InvalidConfig("ipam: mixes the ecs keys (ipv4-subnet, ipv6-subnet) with host-local's (subnet, ranges); use one")
    if ecs:
        return parse_ecs(ipam)
    if host_local:
        return parse_host_local(ipam, config, cni_args)
    raise InvalidConfig("ipam: no subnet configured (ecs: ipv4-subnet/ipv6-subnet; host-local: subnet or ranges)")
