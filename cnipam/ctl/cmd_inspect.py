"""`leases` and `show`: what the store holds, so nobody writes a program to find out.

`leases` is the overview with filters; `show` is everything about one address or one
owner, as an operator asks it ("who has 10.0.0.7?", "what does this container hold?").
A listing is read and written as it goes (Store.scan_leases, output.Listing.write), in
constant memory whatever the store's size, with its filters given to the store, and
`--limit`/`--after` page through it in address order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click

from ..core.addresses import parse_cidr
from ..core.errors import InvalidConfig
from ..core.leases import Lease
from ..store.base import Store
from ..store.lease_query import LeaseQuery
from .failures import BadInput
from .lease_json import lease_view
from .options import json_option, store_options
from .output import age, emit_json, emit_json_list, print_leases, print_lines, when
from .session import Session
from .targets import parse_address, select


@click.command()
@click.option("--network", help="only leases recorded for this network name")
@click.option("--subnet", metavar="CIDR", help="only addresses inside this prefix")
@click.option("--owner", help="only leases of this owner: an ecs id, or a handle (id:..., cni:...)")
@click.option("--container", help="only leases of this container id (a Docker endpoint: its name)")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="at most N rows (the next page: --after)")
@click.option("--after", metavar="ADDRESS", help="only addresses after this one, in address order (IPv4 first)")
@json_option
@store_options
@click.pass_obj
def leases(
    session: Session,
    network: str | None,
    subnet: str | None,
    owner: str | None,
    container: str | None,
    limit: int | None,
    after: str | None,
    as_json: bool,
) -> None:
    """List leases and gateway reservations.

    In address order, IPv4 first; the filters combine. Rows are written as they are
    read, so a store of any size lists in constant memory; --limit N stops after N rows
    and says on stderr where the next page starts (--after ADDRESS)."""
    for flag, value in (("--network", network), ("--owner", owner), ("--container", container)):
        if value is not None and not value.strip():
            raise click.BadParameter("an empty value matches nothing", param_hint=flag)
    within = None
    if subnet is not None:
        try:
            within = parse_cidr(subnet, "--subnet")[1]
        except InvalidConfig as error:
            raise BadInput(error.message) from None
    handle = None if owner is None else owner if owner.startswith(("id:", "cni:")) else "id:" + owner
    query = LeaseQuery(within, network, handle, container, None if after is None else parse_address(after, "--after"))
    with session.existing(reading=True) as store:
        page = _Page(store.scan_leases(query), limit)
        if as_json:
            emit_json_list(lease_view(lease) for lease in page)
        elif page.peek() is not None:
            print_leases(page)
        else:
            click.echo(f"no leases{_why_none(store, network)}", err=True)
    if page.next_after is not None:
        click.echo(f"cnipamctl: {limit} rows shown; the next page: --after {page.next_after}", err=True)


class _Page:
    """The leases of a listing up to its limit; `next_after` is the last one shown when
    there are more."""

    def __init__(self, leases: Iterator[Lease], limit: int | None) -> None:
        self.leases, self.limit = leases, limit
        self.first: Lease | None = next(leases, None)
        self.next_after: str | None = None

    def peek(self) -> Lease | None:
        return self.first

    def __iter__(self) -> Iterator[Lease]:
        shown, lease, last = 0, self.first, ""
        while lease is not None:
            if self.limit is not None and shown == self.limit:
                self.next_after = last
                return
            yield lease
            shown, last = shown + 1, lease.ip
            lease = next(self.leases, None)


def _why_none(store: Store, network: str | None) -> str:
    """A hint when a network filter names a network no lease records (a typo, most often)."""
    if network is not None and next(store.scan_leases(LeaseQuery(network=network)), None) is None:
        return f" (no lease in the store records network {network!r})"
    return ""


@click.command()
@click.argument("target", metavar="ADDRESS|OWNER")
@json_option
@store_options
@click.pass_obj
def show(session: Session, target: str, as_json: bool) -> None:
    """Everything about an address or an owner.

    OWNER is an ecs id, a handle (id:..., cni:...) or a container id."""
    with session.existing(reading=True) as store:
        selection = select(store, target)
    if as_json:
        emit_json([lease_view(lease) for lease in selection.leases])
        return
    now = time.time()
    for index, lease in enumerate(selection.leases):
        if index:
            click.echo()
        print_lines(_details(lease, now))


def _details(lease: Lease, now: float) -> list[str]:
    rows = [
        ("ip", lease.ip),
        ("kind", lease.kind),
        ("owner", lease.describe_holder()),
        ("handle", lease.handle or "-"),
        ("container", lease.container_id or "-"),
        ("ifname", lease.ifname or "-"),
        ("network", lease.network or "-"),
        ("pool", lease.pool),
        ("slot", lease.slot),
        ("created", f"{when(lease.created)} ({age(lease.created, now)} ago)"),
        ("boot", lease.boot or "- (not recorded: never released by a reboot repair)"),
        ("netns", lease.netns or "-"),
    ]
    return [f"{name + ':':<11}{value}" for name, value in rows]
