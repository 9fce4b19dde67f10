"""`history`: who held an address, and when; every address a container or owner had.

A flow log, a firewall log or an intrusion alert names an address at a moment; the
store's history (core.history) names the container, network and host that held it then,
long after the container is gone. `--at` answers for one moment, `--since`/`--until`
list the tenancies overlapping a span; with neither, every tenancy the history keeps.
The subject is read as `show` reads it: an address, a handle, an ecs id or a container
id. `history-retention` shows or sets how much history the store keeps.
"""

from __future__ import annotations

import time

import click

from ..core.history import IMPORTED, Retention
from ..core.leases import LEASE, Lease
from ..core.tenancy import HELD, UNKNOWN, Subject, Tenancy, tenancies
from ..store.base import Store
from ..store.lease_query import LeaseQuery
from .failures import BadInput, NothingHeld
from .moments import DAY, parse_moment, parse_span
from .options import json_option, store_options
from .output import Listing, emit_json, short_boot, when
from .session import Session
from .targets import looks_like_address, parse_address


@click.command()
@click.argument("subject", metavar="ADDRESS|CONTAINER|OWNER")
@click.option("--at", "at_text", metavar="TIME", help="who held it at this moment (RFC 3339, '2h ago', 'now')")
@click.option("--since", "since_text", metavar="TIME", help="tenancies that lasted until this moment or later")
@click.option("--until", "until_text", metavar="TIME", help="tenancies that began by this moment")
@json_option
@store_options
@click.pass_obj
def history(
    session: Session,
    subject: str,
    at_text: str | None,
    since_text: str | None,
    until_text: str | None,
    as_json: bool,
) -> None:
    """Who held an address, and when; or every address a container or owner had.

    ADDRESS|CONTAINER|OWNER is an address, a container id, an ecs id or a handle. TIME is
    RFC 3339 (2025-03-14T14:02:07Z; without an offset, local time), 'now', '2h ago',
    '1d12h ago', or @SECONDS."""
    now = time.time()
    if at_text is not None and (since_text is not None or until_text is not None):
        raise BadInput("--at is one moment: give it alone, or --since and --until for a span")
    at = parse_moment(at_text, now, "--at") if at_text is not None else None
    since = parse_moment(since_text, now, "--since") if since_text is not None else None
    until = parse_moment(until_text, now, "--until") if until_text is not None else None
    if since is not None and until is not None and since > until:
        raise BadInput(f"--since {since_text!r} is after --until {until_text!r}")
    wanted = subject_of(subject)
    with session.existing(reading=True) as store:
        records = store.history(wanted)
        leases = current_leases(store, wanted)
        host = store.history_host
    found = [
        tenancy
        for tenancy in tenancies(records, leases, host)
        if (tenancy.held_at(at) if at is not None else tenancy.overlaps(since, until))
    ]
    if not found:  # as `show` of an address nobody holds: one line and exit 1, so scripts can tell
        moment = f" at {when(at)}" if at is not None else ""
        raise NothingHeld(f"the history names no holder of {subject}{moment}")
    if as_json:
        emit_json([tenancy.as_json() for tenancy in found])
        return
    table = Listing(
        "ip", "from", "to", "owner", "container", "ifname", "network", "netns", "host", "boot", "how",
        wide=("owner", "container", "netns"),
    )  # fmt: skip
    for tenancy in found:
        table.add(
            tenancy.ip, when(tenancy.held_from), until_text_of(tenancy), tenancy.holder(),
            tenancy.container_id or "-", tenancy.ifname or "-", tenancy.network or "-", tenancy.netns or "-",
            tenancy.host or "-", short_boot(tenancy.boot), how(tenancy),
        )  # fmt: skip
    table.print()


def subject_of(text: str) -> Subject:
    if looks_like_address(text) and not text.startswith(("id:", "cni:")):
        return Subject(address=parse_address(text))
    if text.startswith(("id:", "cni:")):
        return Subject(handles=(text,))
    return Subject(handles=("id:" + text,), container_id=text)


def current_leases(store: Store, subject: Subject) -> list[Lease]:
    """The subject's leases now: the tenancies still under way."""
    if subject.address is not None:
        found = store.lookup(*subject.address)
        return [found] if found is not None and found.kind == LEASE else []
    held = [lease for handle in subject.handles for lease in store.held_by(handle)]
    if subject.container_id:
        query = LeaseQuery(container=subject.container_id)
        held += [lease for lease in store.scan_leases(query) if lease not in held]
    return held


def until_text_of(tenancy: Tenancy) -> str:
    if tenancy.ended == HELD:
        return "(held)"
    if tenancy.held_to is None:
        return "?"
    return when(tenancy.held_to)


def how(tenancy: Tenancy) -> str:
    """How the tenancy began and ended, as the records say."""
    if tenancy.started is None:
        start = "(before the history)"
    elif tenancy.started == IMPORTED and tenancy.since is not None:
        start = f"imported {when(tenancy.since)}"
    else:
        start = tenancy.started
    end = "(end not kept)" if tenancy.ended == UNKNOWN else tenancy.ended
    return f"{start} -> {end}"


@click.command("history-retention")
@click.option("--max-age", metavar="SPAN", help="keep records younger than this (30d, 12h, 2w)")
@click.option("--max-records", type=int, metavar="N", help="keep at most this many records (on etcd: per host)")
@json_option
@store_options
@click.pass_obj
def history_retention(session: Session, max_age: str | None, max_records: int | None, as_json: bool) -> None:
    """Show, or set, how much address history the store keeps.

    Every writer of the store (the plugin, cnipamd, cnipam-docker, cnipamctl, every
    host on etcd) prunes by the store's retention, a few records per write; SQLite
    applies a new one at once, etcd by each host's next writes."""
    changing = max_age is not None or max_records is not None
    with session.existing(reading=not changing) as store:
        current = store.history_retention()
        if changing:
            age = parse_span(max_age, "--max-age") if max_age is not None else current.max_age
            records = max_records if max_records is not None else current.max_records
            if age <= 0 or records <= 0:
                raise BadInput("--max-age and --max-records must be above 0: the history cannot be turned off")
            current = Retention(age, records)
            store.set_history_retention(current)
    if as_json:
        emit_json({"max_age": current.max_age, "max_records": current.max_records})
    else:
        click.echo(f"max age {current.max_age / DAY:g} days, max records {current.max_records}")
