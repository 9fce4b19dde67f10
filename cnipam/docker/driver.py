"""The driver's methods, free of I/O: a request's fields in, the reply's fields out.

Each method validates its request completely before touching the store and then makes
exactly one store call (one write transaction, durable before the reply). Failures are
the exceptions of cnipam.core.errors; the server maps them to HTTP statuses in one table.
"""

from __future__ import annotations

import json

from ..core.addresses import Network
from ..core.docker_pools import PoolClaim, address_use
from ..core.errors import InvalidConfig, NotFound
from . import requests as rq
from .settings import DriverSettings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store.base import Store

    Reply = dict[str, object]

SERIAL = "com.docker.network.ipam.serial"  # "true": addresses round-robin, as swarm asks of Docker's IPAM
LOCAL_SPACE = "CnipamLocal"  # non-empty and distinct: current moby keys its host-route
GLOBAL_SPACE = "CnipamGlobal"  # overlap check on the global space (shared/reference/docker-ipam.md §2, item 6)


class UnknownMethod(NotFound):
    """The path names no method of the plugin API (404, so dockerd sees "not implemented")."""


class Driver:
    def __init__(self, store: Store, settings: DriverSettings) -> None:
        self.store = store
        self.settings = settings
        self.methods: dict[str, Callable[[dict[str, object]], Reply]] = {
            "/Plugin.Activate": self.activate,
            "/IpamDriver.GetCapabilities": self.capabilities,
            "/IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }

    def handle(self, path: str, body: bytes) -> Reply:
        method = self.methods.get(path)
        if method is None:
            raise UnknownMethod(f"unknown method {path}")
        return method(rq.decode_body(body))

    def activate(self, fields: dict[str, object]) -> Reply:
        return {"Implements": ["IpamDriver"]}

    def capabilities(self, fields: dict[str, object]) -> Reply:
        # Our state is durable, so no replay. The MAC address is asked for so that an
        # endpoint's address can be told from an aux address on every Docker version
        # (core.docker_pools.address_use); dockerd then gives endpoints a random MAC.
        return {"RequiresMACAddress": True, "RequiresRequestReplay": False}

    def address_spaces(self, fields: dict[str, object]) -> Reply:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    def request_pool(self, fields: dict[str, object]) -> Reply:
        space = rq.text(fields, "AddressSpace") or LOCAL_SPACE
        pool_text, sub_text = rq.text(fields, "Pool"), rq.text(fields, "SubPool")
        v6 = rq.flag(fields, "V6")
        opts = rq.options(fields)
        family = 6 if v6 else 4
        network = sub_pool = None
        if pool_text:
            network = rq.subnet(pool_text, "Pool")
            if fields.get("V6") is not None and network.family != family:
                raise InvalidConfig(f"Pool {pool_text} is not an IPv{family} subnet but V6 is {str(v6).lower()}")
            family = network.family
        main, prefix = self.settings.main_pool(family)
        if network is not None and network.value == 0:  # 0.0.0.0/N or ::/N: "any /N"
            prefix, network = network.prefix, None
            if sub_text:
                raise InvalidConfig("SubPool needs an explicit Pool, not a size request")
        if network is not None:
            rq.usable(network, "Pool")
        if sub_text:
            if network is None:
                raise InvalidConfig("SubPool needs an explicit Pool")
            sub_pool = rq.subnet(sub_text, "SubPool")
            if sub_pool.family != network.family or not (
                network.value <= sub_pool.value and sub_pool.last <= network.last
            ):
                raise InvalidConfig(f"SubPool {sub_pool} is not inside Pool {network}")
        elif network is None and main is not None:
            if prefix < main.prefix:
                raise InvalidConfig(f"a /{prefix} block does not fit in main pool {main}")
            rq.usable(Network(family, 0, prefix), "Pool")
        claim = PoolClaim(space, family, network, sub_pool, prefix, main, json.dumps(opts, sort_keys=True))
        pool = self.store.claim_docker_pool(claim)
        return {"PoolID": pool.id, "Pool": str(pool.network), "Data": {}}

    def release_pool(self, fields: dict[str, object]) -> Reply:
        self.store.release_docker_pool(rq.text(fields, "PoolID", required=True))
        return {}

    def request_address(self, fields: dict[str, object]) -> Reply:
        pool_id = rq.text(fields, "PoolID", required=True)
        wanted = rq.text(fields, "Address")
        # The gateway request (RequestAddressType) is an ordinary address of the pool, the
        # named one or else the lowest free (.1 in a fresh pool), as in Docker's own IPAM.
        # Only the serial option changes the choice; the others say what the address is for.
        options = rq.options(fields)
        serial = options.get(SERIAL) == "true"
        requested = rq.address(wanted, "Address")[1] if wanted else None
        use = address_use(None if "Options" in fields and fields["Options"] is None else options)
        lease = self.store.request_docker_address(pool_id, requested, serial, self.settings.reuse, use)
        return {"Address": rq.with_prefix(lease.family, lease.address, _prefix_of(lease.pool)), "Data": {}}

    def release_address(self, fields: dict[str, object]) -> Reply:
        pool_id = rq.text(fields, "PoolID", required=True)
        family, value = rq.address(rq.text(fields, "Address", required=True), "Address")
        self.store.release_docker_address(pool_id, family, value)
        return {}


def _prefix_of(key: str) -> int:
    """The interface mask must be the pool's prefix; a Docker lease's pool key is the pool's CIDR."""
    return int(key.rpartition("/")[2])
