"""gipam's lease file (`lease.json`), read into Docker pools and their address leases.

gipam (archekb/gipam, shared/reference/docker-ipam.md §2) keeps its whole state in one
JSON file, written by Go's encoder from these structures:

    {"v6": CIDR or "", "v6ab": N, "v6idx": N, "v4": CIDR or "", "v4ab": N, "v4idx": N,
     "allocated": [BLOCK, ...] or null, "free": [BLOCK, ...] or null}
    BLOCK = {"id": 16 alphanumerics, "v": 4 or 6, "pool": CIDR, "idx": N,
             "allocated": [address, ...] or null, "free": [address, ...] or null}

`v6idx`/`v4idx` are left out when 0, a block's lists are `null` until first used. The
`allocated` blocks are the pools dockerd holds, under the ids it keeps sending; inside a
block, `allocated` are the addresses handed out and `free` those released (gipam reuses
them before its `idx`). The top-level `free` blocks were released by dockerd and are not
referred to again. The main pools (`v4`, `v6`) are configuration, not state.

Free of I/O: bytes in, a GipamPlan out, or one GipamFileError naming what is wrong.
A file that is not exactly this (bad JSON, wrong types, bad CIDRs, an address outside
its block, a duplicate id, block or address) is refused whole, because guessing what a
damaged state meant could hand one address to two containers. What is well-formed but
cannot be served as it stands (the IPv4 broadcast gipam hands out by mistake, a block too
small for cnipam-docker) becomes a refusal with its reason, as in the other migrations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..core.addresses import BITS, Network, format_ip, parse_cidr, parse_ip
from ..core.docker_pools import DockerPool
from ..core.errors import CnipamError, InvalidConfig
from ..core.json_codec import json_kind
from ..core.leases import Lease

ADDRESS_SPACE = "CnipamLocal"  # gipam answered "" for both spaces; dockerd only keeps the ids
MAIN_KEYS = {4: ("v4", "v4ab", "v4idx"), 6: ("v6", "v6ab", "v6idx")}


class GipamFileError(CnipamError):
    """The file is not a gipam lease file; the message names the first fault."""


@dataclass(frozen=True)
class MainPool:
    """gipam's main pool of one family: what `-v4`/`-v4ab` (or `-v6`/`-v6ab`) were."""

    network: Network
    block: int  # prefix length of a dynamic block


@dataclass
class GipamPlan:
    pools: list[DockerPool] = field(default_factory=list)  # to import, under gipam's ids
    leases: list[Lease] = field(default_factory=list)  # each of a pool in `pools`
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    released_blocks: list[str] = field(default_factory=list)  # top-level free blocks: not imported
    mains: dict[int, MainPool] = field(default_factory=dict)


def plan_gipam(raw: bytes, now: float) -> GipamPlan:
    """The pools and leases a gipam lease file holds, checked; raises GipamFileError."""
    document = _decode(raw)
    result = GipamPlan()
    for family, (pool_key, block_key, index_key) in MAIN_KEYS.items():
        main = _main_pool(document, family, pool_key, block_key)
        _count(document.get(index_key), index_key)
        if main is not None:
            result.mains[family] = main
    ids: set[str] = set()
    networks: list[tuple[Network, str]] = []
    for where in ("allocated", "free"):
        for position, value in enumerate(_list(document.get(where), where)):
            block = _block(value, f"{where}[{position}]")
            if block.id in ids:
                raise GipamFileError(f"pool id {block.id!r} appears twice")
            ids.add(block.id)
            for other, other_id in networks:
                if other.overlaps(block.network):
                    raise GipamFileError(f"block {block.id} ({block.network}) overlaps block {other_id} ({other})")
            networks.append((block.network, block.id))
            if where == "free":
                result.released_blocks.append(f"{block.id} ({block.network})")
            else:
                _plan_block(block, now, result)
    return result


@dataclass(frozen=True)
class _Block:
    id: str
    network: Network
    allocated: list[int]


def _plan_block(block: _Block, now: float, result: GipamPlan) -> None:
    network = block.network
    longest = BITS[network.family] - (2 if network.family == 4 else 1)
    if network.prefix > longest:
        why = f"a /{network.prefix} block: cnipam-docker serves IPv{network.family} pools up to /{longest}"
        result.refused.append((f"pool {block.id} ({network})", why))
        return
    pool = DockerPool(block.id, ADDRESS_SPACE, network, None, "{}", now)
    result.pools.append(pool)
    whole = pool.whole
    for address in block.allocated:
        if whole.first <= address <= whole.last:
            result.leases.append(pool.lease(address, now))
        else:
            what = "broadcast" if network.family == 4 and address == network.last else "network"
            why = (
                f"the {what} address of {network}, which gipam hands out by mistake; "
                "give that container another address"
            )
            result.refused.append((f"{format_ip(network.family, address)} of pool {block.id}", why))


def _decode(raw: bytes) -> dict[str, object]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GipamFileError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise GipamFileError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise GipamFileError("nested too deeply") from None
    if not isinstance(document, dict):
        raise GipamFileError(f"expected a JSON object with v4/v6 and allocated, got {json_kind(document)}")
    if "allocated" not in document and not any(key in document for key in ("v4", "v6")):
        raise GipamFileError("no gipam keys (v4, v6, allocated) in it")
    return document


def _main_pool(document: dict[str, object], family: int, pool_key: str, block_key: str) -> MainPool | None:
    text = document.get(pool_key)
    block = _count(document.get(block_key), block_key)
    if text is None or text == "":
        return None
    network = _cidr(text, pool_key, family)
    if not network.prefix <= block <= BITS[family]:
        raise GipamFileError(f"{block_key}: /{block} blocks do not fit in {pool_key} {network}")
    return MainPool(network, block)


def _block(value: object, where: str) -> _Block:
    if not isinstance(value, dict):
        raise GipamFileError(f"{where}: expected a block object, got {json_kind(value)}")
    block_id = value.get("id")
    if not isinstance(block_id, str) or not block_id:
        raise GipamFileError(f"{where}: id must be a non-empty string, got {json_kind(block_id)}")
    where = f"block {block_id}"
    family = value.get("v")
    if family not in (4, 6) or isinstance(family, bool):
        raise GipamFileError(f"{where}: v must be 4 or 6, got {family!r}")
    network = _cidr(value.get("pool"), f"{where} pool", family)
    _count(value.get("idx"), f"{where} idx")
    allocated = _addresses(value.get("allocated"), f"{where} allocated", network)
    released = _addresses(value.get("free"), f"{where} free", network)
    both = set(allocated) & set(released)
    if both:
        raise GipamFileError(f"{where}: {format_ip(network.family, min(both))} is both allocated and free")
    return _Block(block_id, network, allocated)


def _addresses(value: object, where: str, network: Network) -> list[int]:
    found: list[int] = []
    seen: set[int] = set()
    for item in _list(value, where):
        if not isinstance(item, str):
            raise GipamFileError(f"{where}: expected address strings, got {json_kind(item)}")
        try:
            family, address = parse_ip(item.partition("/")[0], where)  # gipam strips a "/len" too
        except InvalidConfig as exc:
            raise GipamFileError(exc.message) from None
        if family != network.family or address not in network:
            raise GipamFileError(f"{where}: {item} is outside the block's pool {network}")
        if address in seen:
            raise GipamFileError(f"{where}: {item} appears twice")
        seen.add(address)
        found.append(address)
    return found


def _cidr(value: object, where: str, family: int) -> Network:
    try:
        address, network = parse_cidr(value, where)
    except InvalidConfig as exc:
        raise GipamFileError(exc.message) from None
    if network.family != family:
        raise GipamFileError(f"{where}: {value} is not an IPv{family} subnet")
    if address != network.value:
        raise GipamFileError(f"{where}: {value} has host bits set")
    return network


def _list(value: object, where: str) -> list[object]:
    if value is None:  # Go writes a nil slice as null
        return []
    if not isinstance(value, list):
        raise GipamFileError(f"{where}: expected a list, got {json_kind(value)}")
    return value


def _count(value: object, where: str) -> int:
    if value is None:  # omitted when 0
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GipamFileError(f"{where}: expected a non-negative integer, got {value!r}")
    return value
