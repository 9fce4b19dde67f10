"""`release`: free an address or an owner's leases by hand (a container that died
without its DEL, on a runtime too old for GC).

Releasing takes an address from a container that may still use it, so it is listed and
confirmed first. Without a terminal to ask on (a script, a pipe), it refuses rather
than wait for an answer nobody will give: scripts say `--yes`. A gateway reservation is
released only when asked for by `--gateway`, and only once its pool holds no lease.
"""

from __future__ import annotations

import sys

import click

from ..core.leases import GATEWAY
from .failures import CtlError
from .lease_json import lease_view
from .options import db_option, json_option
from .output import emit_json, print_lines
from .session import Session
from .targets import select


@click.command()
@click.argument("target", metavar="ADDRESS|OWNER")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--gateway", is_flag=True, help="ADDRESS is a gateway reservation to free (its pool must hold no lease)")
@json_option
@db_option
@click.pass_obj
def release(session: Session, target: str, yes: bool, gateway: bool, as_json: bool) -> None:
    """Release an address or an owner's leases.

    OWNER is an ecs id, a handle (id:..., cni:...) or a container id. Asks first,
    unless --yes."""
    with session.existing() as store:
        selection = select(store, target)
        gateways = [lease for lease in selection.leases if lease.kind == GATEWAY]
        if gateways and not gateway:
            raise CtlError(f"{gateways[0].ip} is a gateway reservation, not a lease: pass --gateway to free it")
        if gateway and not gateways:
            raise CtlError(f"{target} is not a gateway reservation")
        count = f"{len(selection.leases)} lease{'s' if len(selection.leases) != 1 else ''}"
        if not yes:
            if not sys.stdin.isatty():
                raise CtlError(
                    f"releasing {count} of {selection.what} needs confirmation, but stdin is not a terminal: pass --yes"
                )
            print_lines(
                [
                    f"  {lease.ip}  {lease.describe_holder()}  network {lease.network or '-'}"
                    for lease in selection.leases
                ],
                err=True,
            )
            click.confirm(f"Release {count} of {selection.what}?", abort=True, err=True)
        if gateway:
            freed = store.release_gateway(gateways[0].family, gateways[0].address)
            released = [freed] if freed is not None else []
        else:
            released = store.release(selection.handle, selection.addresses)
    released.sort(key=lambda lease: (lease.family, lease.address))
    if as_json:
        emit_json([lease_view(lease) for lease in released])
    elif released:
        print_lines([f"released {lease.ip} ({lease.describe_holder()})" for lease in released])
    else:
        click.echo(f"nothing released: {selection.what} holds nothing any more", err=True)
