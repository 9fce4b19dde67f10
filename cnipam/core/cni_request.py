"""A CNI invocation, read from the environment and stdin and validated
(shared/reference/cni-spec.md §1). Nothing here touches the store."""

from __future__ import annotations

from .cni_version import require_supported
from .errors import DecodeFailure, InvalidConfig, InvalidEnvironment
from .json_codec import loads
from .record import Record

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
_NAME_EXTRA = frozenset("_.-")


class Request(Record):
    """What the runtime asked: the verb, the attachment, and the whole network config."""

    __slots__ = ("command", "container_id", "ifname", "netns", "args", "config", "version", "network")

    def __init__(
        self,
        command: str,
        container_id: str,
        ifname: str,
        netns: str,
        args: str,
        config: dict[str, object],
        version: str,
        network: str,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.args = args
        self.config = config
        self.version = version
        self.network = network


def is_valid_name(text: str) -> bool:
    """CNI's rule for container ids and network names: ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"""
    return bool(text) and text.isascii() and text[0].isalnum() and all(c.isalnum() or c in _NAME_EXTRA for c in text)


def is_valid_ifname(text: str) -> bool:
    return 0 < len(text) <= 15 and text not in (".", "..") and not any(c in "/:" or c.isspace() for c in text)


def parse_request(command: str, env: dict[str, str], body: bytes) -> Request:
    """Validate the invocation. ecs-ipam never needed CNI_CONTAINERID (its owner is
    `ipam.id`), so it stays optional; what is given must be well-formed."""
    if command not in COMMANDS:
        raise InvalidEnvironment(f"unknown CNI_COMMAND: {command}")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and not is_valid_name(container_id):
        raise InvalidEnvironment(
            f"CNI_CONTAINERID={container_id!r} is invalid (expected letters, digits, '_', '.', '-')"
        )
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK") and not ifname:
        raise InvalidEnvironment("CNI_IFNAME env variable missing")
    if ifname and not is_valid_ifname(ifname):
        raise InvalidEnvironment(f"CNI_IFNAME={ifname!r} is invalid (1-15 characters, no '/', ':' or spaces)")
    config = loads(body, "network configuration on stdin")
    if not isinstance(config, dict):
        raise DecodeFailure("network configuration on stdin: expected a JSON object")
    version = require_supported(config.get("cniVersion"))
    network = config.get("name", "")
    if not isinstance(network, str) or (network and not is_valid_name(network)):
        raise InvalidConfig(f"name: {network!r} is not a valid network name (letters, digits, '_', '.', '-')")
    return Request(
        command, container_id, ifname, env.get("CNI_NETNS", ""), env.get("CNI_ARGS", ""), config, version, network
    )
