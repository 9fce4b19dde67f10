"""`check --report` and `release --from-report`: Calico's check, report, repair workflow
(`calicoctl ipam check --show-problem-ips -o FILE`, `ipam release --from-report FILE`).

A report lists what an operator may want released, each finding with the exact rows it
was computed from: leases outside every pool the operator names, this host's leases of
earlier boots (core.reboot), owners holding half of a dual-stack pair, positions of pools
that no longer explain them, and on etcd blocks whose bitmap claims addresses no lease
holds or whose host is gone. Applying it releases exactly those rows and only if each is
still exactly as reported (Store.release_exactly; a block by its revision): a report made
before the store changed is refused instead of being applied to something else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..core.addresses import format_ip
from ..core.docker_pools import NETWORK_PREFIX
from ..core.ipam_config import AddressRange, parse_pool_key
from ..core.leases import LEASE, Cursor, Lease
from ..store.base import Store
from ..store.cluster import ClusterStore
from ..store.orphans import PoolKeys
from .failures import BadInput
from .lease_json import cursor_from_json, cursor_to_json, lease_from_json, lease_to_json

KIND = "cnipam-check-report"
VERSION = 1
OUTSIDE, EARLIER_BOOT, HALF_PAIR, ORPHAN_CURSOR, ORPHAN_BLOCK = (
    "outside-pools",
    "earlier-boot",
    "half-pair",
    "orphan-cursor",
    "orphan-block",
)


@dataclass(frozen=True)
class Named:
    """What the operator says the store should hold: pools (ranges of configs, subnets),
    and the address families each named network's config hands out."""

    ranges: list[AddressRange] = field(default_factory=list)
    families: dict[str, set[int]] = field(default_factory=dict)


@dataclass
class Report:
    store: str
    boot: str
    made: float
    findings: list[dict[str, Any]]

    def leases(self) -> list[Lease]:
        """Every lease the findings name, once each, in address order."""
        found = {}
        for index, finding in enumerate(self.findings):
            for position, item in enumerate(finding.get("leases", [])):
                lease = lease_from_json(item, f"findings[{index}].leases[{position}]")
                found[lease.family, lease.address] = lease
        return [found[key] for key in sorted(found)]

    def cursors(self) -> dict[str, Cursor]:
        return {
            str(finding["pool"]): cursor_from_json(finding["cursor"], f"findings[{index}].cursor")
            for index, finding in enumerate(self.findings)
            if finding["problem"] == ORPHAN_CURSOR
        }

    def blocks(self) -> list[dict[str, Any]]:
        return [finding["block"] for finding in self.findings if finding["problem"] == ORPHAN_BLOCK]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "store": self.store,
            "boot": self.boot,
            "made": self.made,
            "findings": self.findings,
        }


def make_report(store: Store, name: str, named: Named) -> Report:
    leases = [lease for lease in store.leases() if lease.kind == LEASE and not lease.network.startswith(NETWORK_PREFIX)]
    findings = (
        _outside(leases, named) + _earlier_boots(store) + _half_pairs(leases, named) + _cursors(store, leases, named)
    )
    if isinstance(store, ClusterStore):
        findings += _blocks(store)
    return Report(name, store.boot, time.time(), findings)


def _lease_finding(problem: str, what: str, leases: list[Lease]) -> dict[str, Any]:
    return {"problem": problem, "what": what, "leases": [lease_to_json(lease) for lease in leases]}


def _outside(leases: list[Lease], named: Named) -> list[dict[str, Any]]:
    if not named.ranges:
        return []
    return [
        _lease_finding(OUTSIDE, f"{lease.ip} ({lease.describe_holder()}) lies outside every pool named", [lease])
        for lease in leases
        if not any(r.network.family == lease.family and r.first <= lease.address <= r.last for r in named.ranges)
    ]


def _earlier_boots(store: Store) -> list[dict[str, Any]]:
    return [
        _lease_finding(
            EARLIER_BOOT, f"{lease.ip} ({lease.describe_holder()}) was made in boot {lease.boot}, not this one", [lease]
        )
        for lease in store.earlier_boot_leases()
    ]


def _half_pairs(leases: list[Lease], named: Named) -> list[dict[str, Any]]:
    """Owners holding one family of a network that hands out both: the network's config
    says so when named, else another owner of the network holds both."""
    owners: dict[str, list[Lease]] = {}
    for lease in leases:
        if lease.handle is not None:
            owners.setdefault(lease.handle, []).append(lease)
    families = {network: set(found) for network, found in named.families.items()}
    for held in owners.values():
        if len({lease.family for lease in held}) == 2 and held[0].network not in named.families:
            families.setdefault(held[0].network, set()).update((4, 6))
    findings = []
    for handle, held in sorted(owners.items()):
        expected = families.get(held[0].network, set())
        if len(expected) == 2 and len({lease.family for lease in held}) == 1:
            what = f"{handle} holds only IPv{held[0].family} in dual-stack network {held[0].network!r}"
            findings.append(_lease_finding(HALF_PAIR, what, held))
    return findings


def _cursors(store: Store, leases: list[Lease], named: Named) -> list[dict[str, Any]]:
    """Positions outside their own pool, and when configs are named, positions of pools no
    lease and no named config uses."""
    inside = PoolKeys().inside
    used = {lease.pool for lease in leases} | {",".join(sorted(str(r) for r in named.ranges))}
    configured = {str(r) for r in named.ranges}
    findings = []
    for pool, cursor in sorted(store.cursors().items()):
        where = format_ip(cursor.family, cursor.address)
        if not inside(pool, cursor.family, cursor.address):
            what = f"the position of pool {pool} ({where}) lies outside it"
        elif named.families and pool not in used and not set(pool.split(",")) <= configured:
            what = f"the position of pool {pool} ({where}) belongs to no lease and no config named"
        else:
            continue
        findings.append({"problem": ORPHAN_CURSOR, "what": what, "pool": pool, "cursor": cursor_to_json(cursor)})
    return findings


def _blocks(store: ClusterStore) -> list[dict[str, Any]]:
    held = {(lease.family, lease.address) for lease in store.leases()}
    hosts = {seen.host for seen in store.hosts() if seen.seen}
    findings = []
    for block in store.blocks():
        unexplained = 0
        used = block.used
        while used:
            bit = used & -used
            used ^= bit
            if (block.family, block.first + bit.bit_length() - 1) not in held:
                unexplained |= bit
        gone = bool(block.host) and block.host not in hosts and not block.used & ~unexplained
        if not unexplained and not gone:
            continue
        network = f"{format_ip(block.family, block.first)}/{block.prefix}"
        reasons = [f"{unexplained.bit_count()} address(es) taken that no lease holds"] if unexplained else []
        reasons += [f"host {block.host!r} is gone"] if gone else []
        what = f"block {network}: {' and '.join(reasons)}"
        fix = {
            "family": block.family,
            "number": block.number,
            "revision": block.revision,
            "clear": f"{unexplained:x}",
            "disown": gone,
        }
        findings.append({"problem": ORPHAN_BLOCK, "what": what, "block": fix})
    return findings


def named_pools(configs: list[Any], subnets: list[Any]) -> Named:
    """From parsed network configs (ctl.netconf.NetworkConfig) and --subnet networks."""
    named = Named()
    for config in configs:
        for spec in config.ipam.pools:
            named.ranges.extend(spec.ranges)
            named.families.setdefault(config.name, set()).add(spec.family)
    for network in subnets:
        named.ranges.extend(parse_pool_key(str(network)))
    return named


def read_report(document: object, path: str) -> Report:
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise BadInput(f"{path} is not a report of `cnipamctl check --report`")
    if document.get("version") != VERSION:
        raise BadInput(f"{path}: report version {document.get('version')!r}; this cnipamctl reads version {VERSION}")
    findings = document.get("findings")
    if not isinstance(findings, list) or not all(
        isinstance(item, dict) and isinstance(item.get("problem"), str) for item in findings
    ):
        raise BadInput(f"{path}: findings: expected a list of objects with a problem")
    for index, finding in enumerate(findings):
        if finding["problem"] not in (OUTSIDE, EARLIER_BOOT, HALF_PAIR, ORPHAN_CURSOR, ORPHAN_BLOCK):
            raise BadInput(f"{path}: findings[{index}]: unknown problem {finding['problem']!r}")
        if finding["problem"] == ORPHAN_BLOCK:
            block = finding.get("block")
            keys = {"family": int, "number": int, "revision": int, "clear": str, "disown": bool}
            if not isinstance(block, dict) or any(type(block.get(key)) is not kind for key, kind in keys.items()):
                raise BadInput(f"{path}: findings[{index}].block: expected family, number, revision, clear and disown")
        elif finding["problem"] == ORPHAN_CURSOR and not isinstance(finding.get("pool"), str):
            raise BadInput(f"{path}: findings[{index}].pool: expected a pool key")
        elif finding["problem"] != ORPHAN_CURSOR and not isinstance(finding.get("leases"), list):
            raise BadInput(f"{path}: findings[{index}].leases: expected a list")
    store, boot, made = document.get("store"), document.get("boot", ""), document.get("made")
    if not isinstance(store, str) or not isinstance(boot, str) or not isinstance(made, (int, float)):
        raise BadInput(f"{path}: expected the store's name, the boot and the time it was made")
    report = Report(store, boot, float(made), findings)
    report.leases()  # every lease decodes, or the file is refused before anything is done
    report.cursors()
    return report


def apply_report(store: Store, report: Report) -> tuple[list[Lease], int, int]:
    """Release exactly what the report names. Returns the leases, the positions and the blocks."""
    leases, cursors, blocks = report.leases(), report.cursors(), report.blocks()
    if blocks and not isinstance(store, ClusterStore):
        raise BadInput("the report names etcd blocks, but this store has none")
    if leases or cursors:
        store.release_exactly(leases, cursors)
    for block in blocks:
        assert isinstance(store, ClusterStore)
        store.repair_block(
            block["family"], block["number"], block["revision"], int(block["clear"] or "0", 16), block["disown"]
        )
    return leases, len(cursors), len(blocks)
