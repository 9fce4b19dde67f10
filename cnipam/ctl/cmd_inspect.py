"""`leases` and `show`: what the store holds, so nobody writes a program to find out.

`leases` is the overview with filters; `show` is everything about one address or one
owner, as an operator asks it ("who has 10.0.0.7?", "what does this container hold?").
"""

from __future__ import annotations

import time

import click

from ..core.addresses import parse_cidr
from ..core.errors import InvalidConfig
from ..core.leases import Lease
from .failures import BadInput
from .lease_json import lease_view
from .options import db_option, json_option
from .output import age, emit_json, lease_listing, print_lines, when
from .session import Session
from .targets import select


@click.command()
@click.option("--network", help="only leases recorded for this network name")
@click.option("--subnet", metavar="CIDR", help="only addresses inside this prefix")
@click.option("--owner", help="only leases of this owner: an ecs id, or a handle (id:..., cni:...)")
@click.option("--container", help="only leases of this container id")
@json_option
@db_option
@click.pass_obj
def leases(
    session: Session, network: str | None, subnet: str | None, owner: str | None, container: str | None, as_json: bool
) -> None:
    """List leases and gateway reservations.

    In address order, IPv4 first; the filters combine."""
    inside = None
    if subnet is not None:
        try:
            inside = parse_cidr(subnet, "--subnet")[1]
        except InvalidConfig as error:
            raise BadInput(error.message) from None
    with session.existing(reading=True) as store:
        found = store.leases(network)
    if inside is not None:
        found = [lease for lease in found if lease.family == inside.family and lease.address in inside]
    if owner is not None:
        handles = {owner} if owner.startswith(("id:", "cni:")) else {"id:" + owner}
        found = [lease for lease in found if lease.handle in handles]
    if container is not None:
        found = [lease for lease in found if lease.container_id == container]
    if as_json:
        emit_json([lease_view(lease) for lease in found])
    elif found:
        lease_listing(found).print()
    else:
        click.echo("no leases", err=True)


@click.command()
@click.argument("target", metavar="ADDRESS|OWNER")
@json_option
@db_option
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
