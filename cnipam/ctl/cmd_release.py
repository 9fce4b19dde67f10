"""`release`: free an address or an owner's leases by hand (a container that died
without its DEL, on a runtime too old for GC).

Releasing takes an address from a container that may still use it, so it is listed and
confirmed first. Without a terminal to ask on (a script, a pipe), it refuses rather
than wait for an answer nobody will give: scripts say `--yes`. A gateway reservation is
released only when asked for by `--gateway`, and only once its pool holds no lease.
`--from-report FILE` releases exactly what a `check --report` listed, or nothing when
any of it changed since (ctl.check_report).
"""

from __future__ import annotations

import sys

import click

from ..core.leases import GATEWAY
from .check_report import apply_report, read_report
from .failures import BadInput, CtlError
from .json_files import load_json_file
from .lease_json import lease_view
from .options import db_option, json_option
from .output import emit_json, print_lines
from .session import Session
from .targets import select


@click.command()
@click.argument("target", metavar="ADDRESS|OWNER", required=False)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--gateway", is_flag=True, help="ADDRESS is a gateway reservation to free (its pool must hold no lease)")
@click.option("--from-report", "report_path", metavar="FILE", help="instead: exactly what `check --report FILE` listed")
@json_option
@db_option
@click.pass_obj
def release(
    session: Session, target: str | None, yes: bool, gateway: bool, report_path: str | None, as_json: bool
) -> None:
    """Release an address or an owner's leases.

    OWNER is an ecs id, a handle (id:..., cni:...) or a container id. Asks first,
    unless --yes. With --from-report FILE (and no ADDRESS|OWNER), exactly what the report
    lists, refused whole if any of it changed since."""
    if report_path is not None:
        if target is not None or gateway:
            raise click.UsageError("--from-report takes no ADDRESS|OWNER and no --gateway")
        _from_report(session, report_path, yes, as_json)
        return
    if target is None:
        raise click.UsageError("missing ADDRESS|OWNER (or --from-report FILE)")
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


def _from_report(session: Session, path: str, yes: bool, as_json: bool) -> None:
    report = read_report(load_json_file(path, "report"), path)
    with session.existing() as store:
        name = session.settings().name
        if report.store != name:
            raise BadInput(f"{path} is a report on {report.store}, not on {name}")
        leases, blocks = report.leases(), report.blocks()
        what = f"{len(leases)} lease(s), {len(report.cursors())} position(s) and {len(blocks)} block(s) from {path}"
        if not leases and not report.cursors() and not blocks:
            click.echo(f"nothing to release: {path} lists no finding", err=True)
            return
        if not yes:
            if not sys.stdin.isatty():
                raise CtlError(f"releasing {what} needs confirmation, but stdin is not a terminal: pass --yes")
            print_lines([f"  {finding['what']}" for finding in report.findings], err=True)
            click.confirm(f"Release {what}?", abort=True, err=True)
        released, positions, fixed = apply_report(store, report)
    if as_json:
        emit_json({"leases": [lease_view(lease) for lease in released], "positions": positions, "blocks": fixed})
        return
    print_lines([f"released {lease.ip} ({lease.describe_holder()})" for lease in released])
    if positions or fixed:
        click.echo(f"forgot {positions} position(s), repaired {fixed} block(s)")
