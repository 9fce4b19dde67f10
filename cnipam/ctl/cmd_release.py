"""`release`: free an address or an owner's leases by hand (a container that died
without its DEL, on a runtime too old for GC).

Releasing takes an address from a container that may still use it, and the next
container then gets it too: so a lease whose holder is not provably gone (core.holders:
anything but this host's earlier boots' CNI leases; a Docker pool's addresses never) is
released only with `--force`, the refusal naming each holder and why nothing proves it
gone. What is released is listed and confirmed first; without a terminal to ask on (a
script, a pipe), it refuses rather than wait for an answer nobody will give: scripts say
`--yes`. A gateway is released only when asked for by `--gateway`: a CNI gateway
reservation once its pool holds no lease, a Docker network's gateway (its bridge holds
it) with `--force` too. `--from-report FILE` releases exactly what a `check --report`
listed, or nothing when any of it changed since (ctl.check_report), under the same rule.
"""

from __future__ import annotations

import os
import sys

import click

from ..boot_id import current_boot
from ..core.holders import release_doubt
from ..core.leases import DOCKER_GATEWAY, GATEWAY, Lease
from .check_report import apply_report, read_report
from .failures import BadInput, CtlError
from .json_files import load_json_file
from .lease_json import lease_view
from .options import json_option, store_options
from .output import emit_json, print_lines
from .session import Session
from .targets import select

FORCE_HELP = (
    "also release leases whose holder may still run (Docker's, this boot's, other hosts'): "
    "you say the holder is gone; if it is not, the next container gets its address too"
)


@click.command()
@click.argument("target", metavar="ADDRESS|OWNER", required=False)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option("--gateway", is_flag=True, help="ADDRESS is a gateway to free (a CNI pool's once it holds no lease)")
@click.option("--from-report", "report_path", metavar="FILE", help="instead: exactly what `check --report FILE` listed")
@json_option
@store_options
@click.pass_obj
def release(
    session: Session,
    target: str | None,
    yes: bool,
    force: bool,
    gateway: bool,
    report_path: str | None,
    as_json: bool,
) -> None:
    """Release an address or an owner's leases.

    OWNER is an ecs id, a handle (id:..., cni:...) or a container id. A lease whose holder
    may still run (anything but this host's leases of earlier boots) is refused, naming
    its holder, unless --force. Asks first, unless --yes. With --from-report FILE (and no
    ADDRESS|OWNER), exactly what the report lists, refused whole if any of it changed since."""
    if report_path is not None:
        if target is not None or gateway:
            raise click.UsageError("--from-report takes no ADDRESS|OWNER and no --gateway")
        _from_report(session, report_path, yes, force, as_json)
        return
    if target is None:
        raise click.UsageError("missing ADDRESS|OWNER (or --from-report FILE)")
    with session.existing() as store:
        selection = select(store, target)
        gateways = [lease for lease in selection.leases if _is_gateway(lease)]
        if gateways and not gateway:
            raise CtlError(_gateway_refusal(gateways[0]))
        if gateway and not gateways:
            raise CtlError(f"{target} is not a gateway")
        if not force:
            refuse_doubts(session, selection.leases, selection.what)
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
        if gateway and gateways[0].kind == GATEWAY:
            freed = store.release_gateway(gateways[0].family, gateways[0].address)
            released = [freed] if freed is not None else []
        else:  # a Docker network's gateway is one of its pool's addresses
            released = store.release(selection.handle, selection.addresses)
    released.sort(key=lambda lease: (lease.family, lease.address))
    if as_json:
        emit_json([lease_view(lease) for lease in released])
    elif released:
        print_lines([f"released {lease.ip} ({lease.describe_holder()})" for lease in released])
    else:
        click.echo(f"nothing released: {selection.what} holds nothing any more", err=True)


def _is_gateway(lease: Lease) -> bool:
    return lease.kind == GATEWAY or (lease.docker_pool is not None and lease.slot == DOCKER_GATEWAY)


def _gateway_refusal(lease: Lease) -> str:
    if lease.kind == GATEWAY:
        return f"{lease.ip} is a gateway reservation, not a lease: pass --gateway to free it"
    return (
        f"{lease.ip} is {lease.describe_holder()}, which its network's bridge holds (docker network rm frees it):"
        " pass --gateway --force to free it anyway"
    )


def refuse_doubts(session: Session, leases: list[Lease], what: str) -> None:
    """CtlError naming the leases whose holder may still run (core.holders), if any."""
    boot = current_boot(dict(session.env))
    ended: set[tuple[int, int]] = set()
    if any(lease.boot and lease.boot != boot for lease in leases) and boot:
        with session.existing(boot=boot, reading=True) as probe:  # a read: it repairs nothing
            ended = {(lease.family, lease.address) for lease in probe.earlier_boot_leases()}
    doubts = [
        (lease, why)
        for lease in leases
        if (why := release_doubt(lease, boot, (lease.family, lease.address) in ended)) is not None
    ]
    if not doubts:
        return
    shown = "; ".join(f"{lease.ip} ({lease.describe_holder()}): {why}{_netns_seen(lease)}" for lease, why in doubts[:3])
    more = f"; and {len(doubts) - 3} more" if len(doubts) > 3 else ""
    count = "" if len(leases) == 1 else f" ({len(doubts)} of {len(leases)} leases)"
    raise CtlError(
        f"{what} may still be in use{count}: {shown}{more}. Nothing was released; if the holder is gone, pass --force"
    )


def _netns_seen(lease: Lease) -> str:
    """What this machine sees of the lease's network namespace: a hint, never a proof."""
    if not lease.netns:
        return ""
    if os.path.exists(lease.netns):
        return f"; its netns {lease.netns} exists"
    return f"; its netns {lease.netns} is not there, or not visible from here"


def _from_report(session: Session, path: str, yes: bool, force: bool, as_json: bool) -> None:
    report = read_report(load_json_file(path, "report"), path)
    with session.existing() as store:
        name = session.settings().name
        if report.store != name:
            raise BadInput(f"{path} is a report on {report.store}, not on {name}")
        leases, blocks = report.leases(), report.blocks()
        if not force:
            refuse_doubts(session, leases, f"the leases of {path}")
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
