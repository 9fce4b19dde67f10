"""Leases, round-robin positions and history records as JSON objects, and back.

One encoding serves `--json` and the export file, so a script reading either sees the
same keys. Addresses are text (Go's forms, as the store's `ip` column): an IPv6 address
as a JSON integer would lose digits in most JSON readers. Decoding checks every field,
because an import must refuse a bad file before the store sees it (the store's own
constraints would only say "conflict").
"""

from __future__ import annotations

from ..core.addresses import format_ip, parse_cidr, parse_ip
from ..core.docker_pools import DockerPool
from ..core.errors import InvalidConfig
from ..core.history import EVENTS, HistoryRecord
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
from .failures import BadInput

FIELDS = ("family", "address", "kind", "pool", "slot", "handle", "network", "container_id", "ifname", "created")
LATER_FIELDS = ("boot", "netns")  # since schema 3; files written before lack them
_TEXT_FIELDS = ("pool", "slot", "network", "container_id", "ifname")


def lease_to_json(lease: Lease) -> dict[str, object]:
    """Every Lease field, in the Lease's own order, with the addresses as text (`gateway`,
    the reservation a lease depends on, null when none)."""
    return {
        "family": lease.family,
        "address": format_ip(lease.family, lease.address),
        "kind": lease.kind,
        "pool": lease.pool,
        "slot": lease.slot,
        "handle": lease.handle,
        "network": lease.network,
        "container_id": lease.container_id,
        "ifname": lease.ifname,
        "created": lease.created,
        "boot": lease.boot,
        "netns": lease.netns,
        "gateway": None if lease.gateway is None else format_ip(lease.family, lease.gateway),
    }


def lease_view(lease: Lease) -> dict[str, object]:
    """What `--json` prints for a lease: `ip` first (what a script looks for), then every field."""
    return {"ip": lease.ip, **lease_to_json(lease)}


def lease_from_json(item: object, where: str) -> Lease:
    if not isinstance(item, dict):
        raise BadInput(f"{where}: expected an object with {', '.join(FIELDS)}")
    missing = [name for name in FIELDS if name not in item]
    if missing:
        raise BadInput(f"{where}: missing {', '.join(missing)}")
    family, address = _address(item["family"], item["address"], where)
    kind = item["kind"]
    if kind not in (LEASE, GATEWAY):
        raise BadInput(f"{where}.kind: expected {LEASE!r} or {GATEWAY!r}, got {kind!r}")
    for name in _TEXT_FIELDS:
        if not isinstance(item[name], str):
            raise BadInput(f"{where}.{name}: expected a string, got {item[name]!r}")
    handle = item["handle"]
    if handle is not None and not isinstance(handle, str):
        raise BadInput(f"{where}.handle: expected a string or null, got {handle!r}")
    if kind == GATEWAY and handle is not None:
        raise BadInput(f"{where}: a gateway reservation has no handle")
    created = item["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise BadInput(f"{where}.created: expected a number (seconds since 1970), got {created!r}")
    later = [item.get(name, "") for name in LATER_FIELDS]
    for name, value in zip(LATER_FIELDS, later, strict=True):
        if not isinstance(value, str):
            raise BadInput(f"{where}.{name}: expected a string, got {value!r}")
    boot, netns = later
    gateway = None
    if item.get("gateway") is not None:
        _, gateway = _address(family, item["gateway"], f"{where}.gateway")
    return Lease(
        family,
        address,
        kind,
        item["pool"],
        item["slot"],
        handle,
        item["network"],
        item["container_id"],
        item["ifname"],
        float(created),
        boot,
        netns,
        gateway,
    )


def cursor_to_json(cursor: Cursor) -> dict[str, object]:
    return {
        "family": cursor.family,
        "address": format_ip(cursor.family, cursor.address),
        "moves_on_release": cursor.moves_on_release,
    }


def cursor_from_json(item: object, where: str) -> Cursor:
    if not isinstance(item, dict) or set(item) != {"family", "address", "moves_on_release"}:
        raise BadInput(f"{where}: expected an object with family, address and moves_on_release")
    family, address = _address(item["family"], item["address"], where)
    moves = item["moves_on_release"]
    if not isinstance(moves, bool):
        raise BadInput(f"{where}.moves_on_release: expected true or false, got {moves!r}")
    return Cursor(family, address, moves)


def pool_to_json(pool: DockerPool) -> dict[str, object]:
    """A Docker pool as the export file holds it (its addresses are leases of the file)."""
    return {
        "id": pool.id, "address_space": pool.address_space, "subnet": str(pool.network),
        "ip_range": None if pool.sub_pool is None else str(pool.sub_pool), "options": pool.options,
        "created": pool.created,
    }  # fmt: skip


def pool_from_json(item: object, where: str) -> DockerPool:
    names = {"id", "address_space", "subnet", "ip_range", "options", "created"}
    if not isinstance(item, dict) or set(item) != names:
        raise BadInput(f"{where}: expected an object with {', '.join(sorted(names))}")
    for name in ("id", "address_space", "options"):
        if not isinstance(item[name], str) or not item[name]:
            raise BadInput(f"{where}.{name}: expected a non-empty string, got {item[name]!r}")
    created = item["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise BadInput(f"{where}.created: expected a number (seconds since 1970), got {created!r}")
    try:
        network = parse_cidr(item["subnet"], f"{where}.subnet")[1]
        sub_pool = None if item["ip_range"] is None else parse_cidr(item["ip_range"], f"{where}.ip_range")[1]
    except InvalidConfig as error:
        raise BadInput(error.message) from None
    return DockerPool(item["id"], item["address_space"], network, sub_pool, item["options"], float(created))


RECORD_TEXT_FIELDS = ("event", "pool", "network", "container_id", "ifname", "netns", "host", "boot")


def record_to_json(record: HistoryRecord) -> dict[str, object]:
    """A history record's fields in its own order, the address as text."""
    return {
        "at": record.at, "event": record.event, "family": record.family,
        "address": format_ip(record.family, record.address), "pool": record.pool, "network": record.network,
        "handle": record.handle, "container_id": record.container_id, "ifname": record.ifname,
        "netns": record.netns, "host": record.host, "boot": record.boot, "held_from": record.held_from,
    }  # fmt: skip


def record_from_json(item: object, where: str) -> HistoryRecord:
    names = ("at", "family", "address", "handle", "held_from", *RECORD_TEXT_FIELDS)
    if not isinstance(item, dict) or not set(names) <= set(item):
        raise BadInput(f"{where}: expected an object with {', '.join(names)}")
    family, address = _address(item["family"], item["address"], where)
    for name in RECORD_TEXT_FIELDS:
        if not isinstance(item[name], str):
            raise BadInput(f"{where}.{name}: expected a string, got {item[name]!r}")
    if item["event"] not in EVENTS:
        raise BadInput(f"{where}.event: expected one of {', '.join(EVENTS)}, got {item['event']!r}")
    if item["handle"] is not None and not isinstance(item["handle"], str):
        raise BadInput(f"{where}.handle: expected a string or null, got {item['handle']!r}")
    for name in ("at", "held_from"):
        if isinstance(item[name], bool) or not isinstance(item[name], (int, float)):
            raise BadInput(f"{where}.{name}: expected a number (seconds since 1970), got {item[name]!r}")
    return HistoryRecord(
        float(item["at"]), item["event"], family, address, item["pool"], item["network"], item["handle"],
        item["container_id"], item["ifname"], item["netns"], item["host"], item["boot"], float(item["held_from"]),
    )  # fmt: skip


def _address(family: object, text: object, where: str) -> tuple[int, int]:
    if family not in (4, 6) or isinstance(family, bool):
        raise BadInput(f"{where}.family: expected 4 or 6, got {family!r}")
    try:
        parsed_family, address = parse_ip(text, f"{where}.address")
    except InvalidConfig as error:
        raise BadInput(error.message) from None
    if parsed_family != family:
        raise BadInput(f"{where}.address: {text} is not an IPv{family} address")
    return parsed_family, address
