"""The CNI verbs: what ADD, DEL, CHECK, GC and STATUS mean for a store.

Each takes a validated request, its parsed IPAM config and a store, and returns the
result object to print (ADD) or None. Store-agnostic: they speak only `Store`.
"""

from __future__ import annotations

from .core.addresses import format_ip
from .core.cni_result import encode_result, result_addresses
from .core.cni_version import at_least
from .core.errors import IncompatibleVersion, InvalidConfig, InvalidEnvironment, LeaseMissing, Unavailable
from .core.ipam_config import ECS, HOST_LOCAL
from .core.leases import LEASE, Owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .core.cni_request import Request
    from .core.ipam_config import IPAMConfig
    from .store.base import Store


def _owner(request: Request, config: IPAMConfig, store: Store) -> Owner:
    """Who the call acts for, in which network namespace and boot (the store's: the
    caller's, core.reboot). host-local's dialect owns leases by attachment, so, as skel
    (and so host-local) does, it refuses ADD, CHECK and DEL without a container id instead
    of making an anonymous lease that no later DEL of that container could find."""
    if config.dialect == HOST_LOCAL and not request.container_id:
        raise InvalidEnvironment(
            f"CNI_CONTAINERID env variable missing: {request.command} needs the container id to own the lease"
        )
    return Owner.for_request(
        config.owner_id, request.network, request.container_id, request.ifname, request.netns, store.boot
    )


def add(request: Request, config: IPAMConfig, store: Store) -> dict[str, object]:
    leases = store.allocate(_owner(request, config, store), config.pools)
    return encode_result(request.version, config.pools, leases, config.routes, config.dns)


def delete(request: Request, config: IPAMConfig, store: Store) -> None:
    """With an ecs id: release every address of that id. In the ecs dialect with only
    addresses named: release exactly those (whoever holds them, as upstream documents).
    Otherwise: release the attachment's leases, and only those. In host-local's dialect a
    requested address on DEL is never a key: runtimes repeat the ADD's arguments on DEL
    and DEL after every failed ADD, so a refused `--ip` would otherwise free the address
    of the container that holds it (issue 12). Releasing what is not held succeeds (DEL
    is idempotent)."""
    owner = _owner(request, config, store)
    named = [(spec.family, spec.requested) for spec in config.pools if spec.requested is not None]
    if config.owner_id:
        store.release(owner.handle)
    elif named and config.dialect == ECS:
        store.release(owner.handle, named)
    elif owner.handle:
        store.release(owner.handle)
    else:
        raise InvalidEnvironment(
            "DEL needs ipam.id, an ipv4-address/ipv6-address, or CNI_CONTAINERID to know what to release"
        )


def check(request: Request, config: IPAMConfig, store: Store) -> None:
    if not at_least(request.version, "0.4.0"):
        raise IncompatibleVersion("CHECK needs cniVersion 0.4.0 or later", f'config is "{request.version}"')
    owner = _owner(request, config, store)
    if owner.handle is None:
        raise InvalidEnvironment("CHECK needs ipam.id or CNI_CONTAINERID to know whose leases to check")
    held = [lease for lease in store.held_by(owner.handle) if lease.kind == LEASE]
    for spec in config.pools:
        if not any(lease.slot == spec.slot and spec.allows(lease.address) for lease in held):
            raise LeaseMissing(f"{owner.describe()} holds no address in {spec}")
    if "prevResult" in request.config:
        mine = {(lease.family, lease.address) for lease in held}
        for family, address in result_addresses(request.config["prevResult"]):
            if (family, address) not in mine:
                raise LeaseMissing(f"{format_ip(family, address)} from prevResult is not held by {owner.describe()}")


def collect_garbage(request: Request, store: Store) -> None:
    """Spec 1.1.0 GC. An absent or null list means no attachment is valid, as libcni
    itself reads it (it has already DELed every cached attachment by then). The runtime's
    list is the authority, so one pass releases (core.collector with no grace), each
    owner whole; a config with `disableGC` releases nothing."""
    if not at_least(request.version, "1.1.0"):
        raise IncompatibleVersion("GC needs cniVersion 1.1.0 or later", f'config is "{request.version}"')
    from .core.collector import gc_disabled  # GC only: the plugin imports per call

    if gc_disabled(request.config):
        return
    listed = request.config.get("cni.dev/valid-attachments", request.config.get("cni.dev/attachments"))
    if listed is None:
        listed = []
    if not isinstance(listed, list):
        raise InvalidConfig("cni.dev/valid-attachments: expected a list of {containerID, ifname}")
    valid = set()
    for index, item in enumerate(listed):
        if not (
            isinstance(item, dict) and isinstance(item.get("containerID"), str) and isinstance(item.get("ifname"), str)
        ):
            raise InvalidConfig(
                f'cni.dev/valid-attachments[{index}]: expected {{"containerID": string, "ifname": string}}'
            )
        valid.add((item["containerID"], item["ifname"]))
    store.collect_garbage(request.network, valid)


def status(request: Request, config: IPAMConfig, store: Store) -> None:
    if not at_least(request.version, "1.1.0"):
        raise IncompatibleVersion("STATUS needs cniVersion 1.1.0 or later", f'config is "{request.version}"')
    full = store.exhausted(config.pools)
    if full:
        raise Unavailable("no free address left in " + "; ".join(str(spec) for spec in full))
