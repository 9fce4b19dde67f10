"""What a migration imported, kept and refused, for the operator and for scripts.

Every refusal carries its reason, because the operator has to decide about each one
(fix the config, free the address, or `--skip-refused`); a count alone would not let
them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import click

from ..addresses import format_ip
from ..leases import GATEWAY, Cursor, Lease
from .output import Listing, emit_json


@dataclass
class Report:
    source_kind: str
    source: str
    network: str
    store: str
    dry_run: bool
    leases: list[Lease] = field(default_factory=list)  # what is (or would be) imported
    cursors: dict[str, Cursor] = field(default_factory=dict)
    refused: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aborted: bool = False

    @property
    def imported(self) -> bool:
        return not (self.dry_run or self.aborted)

    def per_pool(self) -> dict[str, dict[str, int]]:
        counts: Counter[tuple[str, str]] = Counter((lease.pool, lease.kind) for lease in self.leases)
        pools = sorted({pool for pool, _ in counts})
        return {pool: {"leases": counts[pool, "lease"], "gateways": counts[pool, GATEWAY]} for pool in pools}

    def as_json(self) -> dict[str, object]:
        return {
            "source": {"kind": self.source_kind, "path": self.source},
            "network": self.network,
            "store": self.store,
            "dry_run": self.dry_run,
            "aborted": self.aborted,
            "planned": len(self.leases),
            "imported": len(self.leases) if self.imported else 0,
            "pools": self.per_pool(),
            "positions": {pool: format_ip(cursor.family, cursor.address) for pool, cursor in sorted(self.cursors.items())},
            "refused": [{"what": what, "why": why} for what, why in self.refused],
            "notes": self.notes,
        }

    def show(self, as_json: bool) -> None:
        if as_json:
            emit_json(self.as_json())
            return
        verb = "would import" if self.dry_run or self.aborted else "imported"
        click.echo(f"{self.source_kind} {self.source} -> {self.store} (network {self.network!r})")
        click.echo(f"{verb} {len(self.leases)} row{'s' if len(self.leases) != 1 else ''}" + (" (dry run)" if self.dry_run else ""))
        if self.leases:
            table = Listing("pool", "leases", "gateways", wide=("pool",), right=("leases", "gateways"))
            for pool, counts in self.per_pool().items():
                table.add(pool, str(counts["leases"]), str(counts["gateways"]))
            table.print()
        if self.cursors:
            click.echo(f"round-robin positions {'kept' if self.imported else 'to keep'}:")
            for pool, cursor in sorted(self.cursors.items()):
                click.echo(f"  {pool}: {format_ip(cursor.family, cursor.address)}")
        if self.refused:
            click.echo(f"refused {len(self.refused)}:")
            for what, why in self.refused:
                click.echo(f"  {what}: {why}")
        for note in self.notes:
            click.echo(f"note: {note}")
