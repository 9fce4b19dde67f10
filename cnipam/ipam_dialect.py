"""Choosing the config dialect by the keys present in `ipam`."""

from __future__ import annotations

from .ecs_config import is_ecs, parse_ecs
from .errors import InvalidConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ipam_config import IPAMConfig


def parse_ipam(config: dict[str, object]) -> IPAMConfig:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise InvalidConfig("'ipam' field missing or not an object in the network configuration")
    if is_ecs(ipam):
        return parse_ecs(ipam)
    raise InvalidConfig("ipam: no subnet configured (expected ipv4-subnet and/or ipv6-subnet)")
