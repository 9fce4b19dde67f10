"""`hosts`: the cluster engine's hosts and blocks, and releasing a dead host.

On etcd every host claims blocks of addresses and allocates inside them. A host that
dies keeps its leases and blocks until an operator says it is gone: nothing else can
tell a dead host from a quiet one. `hosts` shows when each host last wrote; `hosts
release` frees a host's leases and gives up its blocks, refused while the host wrote
within the grace period.
"""

from __future__ import annotations

import sys
import time

import click

from ..core.addresses import format_ip
from ..core.durations import parse_go_duration
from ..store.cluster import ClusterStore
from .failures import CtlError
from .lease_json import lease_view
from .options import json_option, store_options
from .output import Listing, age, emit_json, print_lines
from .session import Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

    from ..store.base import Store


@click.group()
def hosts() -> None:
    """The hosts of a cluster store (etcd): their blocks, and releasing a dead one."""


@hosts.command(name="list")
@json_option
@store_options
@click.pass_obj
def list_hosts(session: Session, as_json: bool) -> None:
    """Every host: when it last wrote, its blocks, its leases and gateway reservations.

    Only a host's plugin, agent and driver write its last write: cnipamctl never does."""
    with _cluster(session) as store:
        found = store.hosts()
    now = time.time()
    if as_json:
        emit_json(
            [
                {"host": h.host, "seen": h.seen, "blocks": h.blocks, "leases": h.leases, "gateways": h.gateways}
                for h in found
            ]
        )
        return
    table = Listing(
        "host", "last write", "blocks", "leases", "gateways", wide=("host",), right=("blocks", "leases", "gateways")
    )
    for record in found:
        table.add(
            record.host,
            age(record.seen, now) + " ago" if record.seen else "never",
            str(record.blocks),
            str(record.leases),
            str(record.gateways),
        )
    table.print()


@hosts.command()
@click.option("--host", "only", metavar="HOST", help="only this host's blocks")
@json_option
@store_options
@click.pass_obj
def blocks(session: Session, only: str | None, as_json: bool) -> None:
    """Every claimed block: its addresses, its host, how many are taken."""
    with _cluster(session) as store:
        found = [block for block in store.blocks() if only is None or block.host == only]
    rows = [(f"{format_ip(b.family, b.first)}/{b.prefix}", b.host or "-", b.taken, b.size) for b in found]
    if as_json:
        emit_json([{"block": block, "host": host, "taken": taken} for block, host, taken, _ in rows])
        return
    table = Listing("block", "host", "taken", wide=("host",), right=("taken",))
    for block, host, taken, size in rows:
        table.add(block, host, f"{taken}/{size}")
    table.print()


@hosts.command()
@click.argument("host")
@click.option(
    "--grace", default="1h", show_default=True, metavar="DURATION", help="refuse if HOST wrote more recently than this"
)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@json_option
@store_options
@click.pass_obj
def release(session: Session, host: str, grace: str, yes: bool, as_json: bool) -> None:
    """Release a dead host's leases and give up its blocks."""
    try:
        seconds = parse_go_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(
            f"{grace!r} is not a duration such as 10m or 1h ({exc})", param_hint="--grace"
        ) from None
    if not yes and not sys.stdin.isatty():
        raise CtlError(f"releasing host {host!r} needs confirmation, but stdin is not a terminal: pass --yes")
    with _cluster(session) as store:
        if not yes:
            click.confirm(f"Release every lease of host {host!r} and give up its blocks?", abort=True, err=True)
        released, given_up = store.release_host(host, seconds)
    if as_json:
        emit_json({"released": [lease_view(lease) for lease in released], "blocks": given_up})
        return
    print_lines([f"released {lease.ip}  {lease.describe_holder()}" for lease in released])
    click.echo(f"host {host}: {len(released)} lease(s) released, {given_up} block(s) given up")


class _cluster:
    """The session's store, which must be a cluster store."""

    def __init__(self, session: Session) -> None:
        self.context = session.existing()

    def __enter__(self) -> ClusterStore:
        store: Store = self.context.__enter__()
        if not isinstance(store, ClusterStore):
            self.context.__exit__(None, None, None)
            raise CtlError("hosts and blocks exist only in a cluster store: select etcd with --store or CNIPAM_STORE")
        return store

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.context.__exit__(kind, error, trace)
