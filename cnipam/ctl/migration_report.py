"""What a migration imported, kept and refused, for the operator and for scripts.

Every refusal carries its reason, because the operator has to decide about each one
(fix the config, free the address, or `--skip-refused`); a count alone would not let
them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

import click

from ..core.addresses import format_ip
from ..core.leases import GATEWAY, Cursor, Lease
from .output import Listing, emit_json


@dataclass(kw_only=True)
class MigrationReport(ABC):
    """What every migration reports; each source adds what it imports (`planned`, `table`)."""

    source_kind: str
    source: str
    store: str
    dry_run: bool
    refused: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aborted: bool = False
    already: int = 0  # items the store holds exactly as the source has them (this migration, run before)

    @property
    def imported(self) -> bool:
        return not (self.dry_run or self.aborted)

    def headline(self) -> str:
        return f"{self.source_kind} {self.source} -> {self.store}"

    @abstractmethod
    def planned(self) -> str:
        """What is (or would be) imported, in words: "12 rows"."""

    @abstractmethod
    def planned_count(self) -> int:
        """How many items are (or would be) imported."""

    @abstractmethod
    def details(self) -> dict[str, object]:
        """The source-specific part of the JSON report."""

    @abstractmethod
    def table(self) -> None:
        """The source-specific lines between the headline and the refusals."""

    def as_json(self) -> dict[str, object]:
        head = {"source": {"kind": self.source_kind, "path": self.source}, "store": self.store, "dry_run": self.dry_run}
        tail = {"refused": [{"what": what, "why": why} for what, why in self.refused], "notes": self.notes}
        return {**head, "aborted": self.aborted, **self.details(), "already": self.already, **tail}

    def show(self, as_json: bool) -> None:
        if as_json:
            emit_json(self.as_json())
            return
        verb = "would import" if self.dry_run or self.aborted else "imported"
        click.echo(self.headline())
        if self.already and not self.planned_count() and not self.refused:
            click.echo(f"nothing to import: the store holds all {self.already} already (this migration was done)")
            return
        click.echo(f"{verb} {self.planned()}" + (" (dry run)" if self.dry_run else ""))
        if self.already:
            click.echo(f"already in the store as the source has them, left as they are: {self.already}")
        self.table()
        if self.refused:
            click.echo(f"refused {len(self.refused)}:")
            for what, why in self.refused:
                click.echo(f"  {what}: {why}")
        for note in self.notes:
            click.echo(f"note: {note}")


def plural(count: int, noun: str, suffix: str = "s") -> str:
    return f"{count} {noun}{suffix if count != 1 else ''}"


@dataclass(kw_only=True)
class Report(MigrationReport):
    """A CNI network's leases (from host-local's files or ecs-ipam's boltdb)."""

    network: str
    leases: list[Lease] = field(default_factory=list)  # what is (or would be) imported
    cursors: dict[str, Cursor] = field(default_factory=dict)

    def per_pool(self) -> dict[str, dict[str, int]]:
        counts: Counter[tuple[str, str]] = Counter((lease.pool, lease.kind) for lease in self.leases)
        pools = sorted({pool for pool, _ in counts})
        return {pool: {"leases": counts[pool, "lease"], "gateways": counts[pool, GATEWAY]} for pool in pools}

    def planned(self) -> str:
        return plural(len(self.leases), "row")

    def planned_count(self) -> int:
        return len(self.leases)

    def details(self) -> dict[str, object]:
        return {
            "network": self.network,
            "planned": len(self.leases),
            "imported": len(self.leases) if self.imported else 0,
            "pools": self.per_pool(),
            "positions": {
                pool: format_ip(cursor.family, cursor.address) for pool, cursor in sorted(self.cursors.items())
            },
        }

    def headline(self) -> str:
        return f"{super().headline()} (network {self.network!r})"

    def table(self) -> None:
        if self.leases:
            table = Listing("pool", "leases", "gateways", wide=("pool",), right=("leases", "gateways"))
            for pool, counts in self.per_pool().items():
                table.add(pool, str(counts["leases"]), str(counts["gateways"]))
            table.print()
        if self.cursors:
            click.echo(f"round-robin positions {'kept' if self.imported else 'to keep'}:")
            for pool, cursor in sorted(self.cursors.items()):
                click.echo(f"  {pool}: {format_ip(cursor.family, cursor.address)}")
