"""host-local's config dialect (shared/reference/cni-spec.md §3.5 and §6.1).

`ranges` is a list of range sets; the owner gets one address per set, so dual-stack is
two sets. The single-range keys (`subnet`, `rangeStart`, `rangeEnd`, `gateway`) are a
range set prepended to `ranges`, and `runtimeConfig.ipRanges` are prepended before that,
in host-local's order. Canonicalisation and refusals follow host-local: a subnet with
host bits, a range too small to allocate from, bounds outside the subnet, overlapping
ranges or range sets. Requested addresses come from `args.cni.ips` and
`runtimeConfig.ips`, or else from `CNI_ARGS` `IP=` (the conventions say `args` wins;
host-local merges them and then fails).

Every input costs work in proportion to its size, whatever its shape: overlaps are found
by sorting the ranges once and comparing neighbours (n log n, not every pair), each
requested address finds its range by bisection, and a config may name at most
MAX_RANGES ranges and MAX_REQUESTED addresses (ipam_config), refused before any is
parsed.
"""

from __future__ import annotations

from .addresses import BITS, format_ip, parse_cidr, parse_ip
from .cni_args import parse_cni_args
from .cni_version import parse as parse_version
from .errors import InvalidConfig
from .ipam_config import (
    HOST_LOCAL,
    MAX_RANGES,
    MAX_REQUESTED,
    AddressRange,
    IPAMConfig,
    PoolSpec,
    default_bounds,
    optional_text,
    parse_routes,
    pool_key,
)
from .reuse import NO_DELAY, parse_reuse


def parse_host_local(ipam: dict[str, object], config: dict[str, object], cni_args: str) -> IPAMConfig:
    sets = _range_sets(ipam, config)
    overlap = _first_overlap([(r, index) for index, one in enumerate(sets) for r in one])
    if overlap is not None:
        raise InvalidConfig(f"ipam: range set {overlap[0]} overlaps with range set {overlap[1]}")
    version = config.get("cniVersion")
    if parse_version(version if isinstance(version, str) else "") < (0, 3, 0):
        for family in (4, 6):
            if sum(1 for one in sets if one[0].network.family == family) > 1:
                raise InvalidConfig(
                    f"cniVersion {version} allows one IPv{family} range set; use 0.3.0 or later for more"
                )
    requested = _requested(config, cni_args)
    reuse = NO_DELAY  # host-local's order exactly, unless the config asks for a delay
    if ipam.get("reuseDelay") is not None or ipam.get("whenOnlyCooling") is not None:
        reuse = parse_reuse(
            ipam.get("reuseDelay"), ipam.get("whenOnlyCooling"), "ipam.reuseDelay", "ipam.whenOnlyCooling"
        )
    taken = _take_requested(sets, requested)
    pools = []
    for ranges, address in zip(sets, taken, strict=True):
        key = pool_key(ranges)
        pools.append(PoolSpec(key, key, ranges, address, release_moves_cursor=False, reuse=reuse))
    left = [pair for pair in requested if pair[1] not in taken]
    if left:
        text = ", ".join(format_ip(family, address) for family, address in left)
        raise InvalidConfig(f"requested address {text} is outside every range")
    return IPAMConfig(
        HOST_LOCAL,
        tuple(pools),
        parse_routes(ipam.get("routes"), None, "ipam.routes"),
        {},
        None,
        optional_text(ipam, "resolvConf", "ipam"),
        optional_text(ipam, "dataDir", "ipam"),
    )


def _runtime(config: dict[str, object]) -> dict[str, object]:
    runtime = config.get("runtimeConfig")
    return runtime if isinstance(runtime, dict) else {}


def _range_sets(ipam: dict[str, object], config: dict[str, object]) -> list[tuple[AddressRange, ...]]:
    sources: list[tuple[str, object]] = []
    runtime_sets = _runtime(config).get("ipRanges")
    if runtime_sets is not None:
        sources.extend(_listed(runtime_sets, "runtimeConfig.ipRanges"))
    if "subnet" in ipam:
        single = {key: ipam[key] for key in ("subnet", "rangeStart", "rangeEnd", "gateway") if key in ipam}
        sources.append(("ipam", [single]))
    if ipam.get("ranges") is not None:
        sources.extend(_listed(ipam["ranges"], "ipam.ranges"))
    if not sources:
        raise InvalidConfig("ipam: no IP ranges specified (subnet or ranges)")
    count = sum(len(raw) if isinstance(raw, list) else 1 for _, raw in sources)
    if count > MAX_RANGES:
        raise InvalidConfig(f"ipam: {count} ranges in all; a config may name at most {MAX_RANGES}")
    return [_range_set(raw, where) for where, raw in sources]


def _listed(value: object, where: str) -> list[tuple[str, object]]:
    if not isinstance(value, list):
        raise InvalidConfig(f"{where}: expected a list of range sets")
    return [(f"{where}[{index}]", item) for index, item in enumerate(value)]


def _range_set(raw: object, where: str) -> tuple[AddressRange, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidConfig(f"{where}: a range set is a non-empty list of ranges")
    ranges = tuple(_range(item, where if where == "ipam" else f"{where}[{index}]") for index, item in enumerate(raw))
    if len({r.network.family for r in ranges}) > 1:
        raise InvalidConfig(f"{where}: mixed address families in one range set")
    overlap = _first_overlap([(r, index) for index, r in enumerate(ranges)])
    if overlap is not None:
        raise InvalidConfig(f"{where}: ranges {overlap[0]} and {overlap[1]} overlap")
    return ranges


def _range(raw: object, where: str) -> AddressRange:
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{where}: expected an object with subnet, rangeStart, rangeEnd, gateway")
    if raw.get("subnet") is None:
        raise InvalidConfig(f"{where}.subnet: missing")
    written, network = parse_cidr(raw["subnet"], f"{where}.subnet")
    if written != network.value:
        raise InvalidConfig(f"{where}.subnet: {raw['subnet']} has host bits set (the network is {network})")
    if network.prefix > BITS[network.family] - 2:
        raise InvalidConfig(f"{where}.subnet: {network} is too small to allocate from")
    first, last = default_bounds(network)
    gateway = network.value + 1
    for key in ("rangeStart", "rangeEnd", "gateway"):
        if raw.get(key) is None:
            continue
        family, address = parse_ip(raw[key], f"{where}.{key}")
        if family != network.family:
            raise InvalidConfig(f"{where}.{key}: {raw[key]} is not in the family of {network}")
        if key == "gateway":
            gateway = address  # host-local does not require the gateway to be in the subnet
        elif address not in network:
            raise InvalidConfig(f"{where}.{key}: {raw[key]} is not within {network}")
        elif key == "rangeStart":
            first = address
        else:
            last = address
    if first > last:
        raise InvalidConfig(
            f"{where}: rangeStart {format_ip(network.family, first)} "
            f"is after rangeEnd {format_ip(network.family, last)}"
        )
    return AddressRange(network, first, last, gateway)


def _first_overlap(tagged: list[tuple[AddressRange, int]]) -> tuple[int, int] | None:
    """Two different tags whose ranges share an address (lower tag first), or None.

    Sorted by family and first address, a range overlaps an earlier one exactly when it
    starts at or before the furthest end seen so far in its family; so one pass over the
    sorted list finds an overlap if there is any (n log n). Tags are the range's index in
    its set, or its set's index: ranges with the same tag are never compared here."""
    ordered = sorted(tagged, key=lambda item: (item[0].network.family, item[0].first))
    family, reach, holder = 0, -1, -1
    for address_range, tag in ordered:
        if address_range.network.family != family:
            family, reach, holder = address_range.network.family, -1, -1
        if address_range.first <= reach and tag != holder:
            return min(tag, holder), max(tag, holder)
        if address_range.last > reach:
            reach, holder = address_range.last, tag
    return None


def _requested(config: dict[str, object], cni_args: str) -> list[tuple[int, int]]:
    """Requested addresses in order: args.cni.ips, then runtimeConfig.ips; CNI_ARGS IP only
    when neither is given. CNI_ARGS is validated either way."""
    from_env = parse_cni_args(cni_args, ("IP",)).get("IP")
    listed: list[tuple[str, object]] = []
    args = config.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("ips") is not None:
        listed.append(("args.cni.ips", cni["ips"]))
    if _runtime(config).get("ips") is not None:
        listed.append(("runtimeConfig.ips", _runtime(config)["ips"]))
    texts: list[tuple[str, object]] = []
    for where, value in listed:
        if not isinstance(value, list):
            raise InvalidConfig(f"{where}: expected a list of addresses")
        texts.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    if not texts and from_env is not None:
        texts = [("CNI_ARGS IP", from_env)]
    if len(texts) > MAX_REQUESTED:
        raise InvalidConfig(f"{len(texts)} requested addresses; a call may request at most {MAX_REQUESTED}")
    requested: dict[tuple[int, int], None] = {}  # in order, each once
    for where, text in texts:
        address = text.partition("/")[0] if isinstance(text, str) else text
        requested.setdefault(parse_ip(address, where))
    return list(requested)


def _take_requested(sets: list[tuple[AddressRange, ...]], requested: list[tuple[int, int]]) -> list[int | None]:
    """Per range set, the first requested address inside its ranges (or None). Ranges do
    not overlap (checked before), so each address lies in at most one range, found by
    bisecting the ranges sorted by family and first address."""
    taken: list[int | None] = [None] * len(sets)
    if not requested:
        return taken
    from bisect import bisect_right

    ordered = sorted(
        ((r.network.family, r.first, r.last, index, r) for index, one in enumerate(sets) for r in one),
        key=lambda item: item[:2],
    )
    starts = [item[:2] for item in ordered]
    for family, address in requested:
        at = bisect_right(starts, (family, address)) - 1
        if at < 0 or ordered[at][0] != family or not ordered[at][1] <= address <= ordered[at][2]:
            continue
        index, address_range = ordered[at][3], ordered[at][4]
        if taken[index] is not None:
            continue
        if address == address_range.gateway:
            raise InvalidConfig(
                f"requested address {format_ip(family, address)} is the gateway of {address_range.network}"
            )
        taken[index] = address
    return taken
