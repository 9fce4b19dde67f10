"""`check`: the store's own integrity check (Store.problems), with an exit status; and
with `--report FILE`, what an operator may want released, written for `release
--from-report` (ctl.check_report).

Run after a disk incident, a restore, or a hand edit with `sqlite3`: the plugin refuses
to allocate from a store whose free index disagrees with its leases (StoreCorrupt), and
this names what disagrees. The exit status makes it usable from monitoring.
"""

from __future__ import annotations

import json

import click

from ..boot_id import current_boot
from ..core.addresses import parse_cidr
from ..core.errors import InvalidConfig
from .check_report import make_report, named_pools
from .failures import BadInput, CtlError
from .options import json_option, store_options
from .output import emit_json, print_lines
from .session import Session


@click.command()
@click.option(
    "--report",
    "report_path",
    metavar="FILE",
    help="also write what could be released to FILE (for release --from-report)",
)
@click.option(
    "--subnet", "subnets", metavar="CIDR", multiple=True, help="with --report: a pool the store serves (repeatable)"
)
@json_option
@store_options
@click.pass_obj
def check(session: Session, report_path: str | None, subnets: tuple[str, ...], as_json: bool) -> None:
    """Check the store's integrity.

    Prints "ok" (exit 0), or each problem (exit 1): constraints, the free index against
    the leases, the schema version. With --report FILE, also writes to FILE the leases
    outside every pool of the --config networks and --subnet, this host's leases of earlier
    boots, owners holding half of a dual-stack pair, and positions and blocks nothing
    explains; any finding also exits 1."""
    if subnets and report_path is None:
        raise click.UsageError("--subnet says what --report compares the store with; give --report FILE too")
    configs = [config for _, config in session.network_configs()]
    networks = []
    for text in subnets:
        try:
            networks.append(parse_cidr(text, "--subnet")[1])
        except InvalidConfig as error:
            raise BadInput(error.message) from None
    boot = current_boot(dict(session.env)) if report_path is not None else ""
    with session.existing(boot=boot, reading=True) as store:
        problems = store.problems()
        path = session.settings().name  # a file, or an etcd cluster and prefix
        report = make_report(store, path, named_pools(configs, networks)) if report_path is not None else None
    if report is not None and report_path is not None:
        try:
            with open(report_path, "w", encoding="utf-8") as file:
                json.dump(report.to_json(), file, indent=2)
                file.write("\n")
        except OSError as exc:
            raise CtlError(f"cannot write the report {report_path}: {exc.strerror}") from None
    findings = [finding["what"] for finding in report.findings] if report is not None else []
    if as_json:
        document: dict[str, object] = {"store": path, "ok": not problems and not findings, "problems": problems}
        if report is not None:
            document["findings"] = findings
        emit_json(document)
    else:
        print_lines(problems)
        print_lines([f"found: {what}" for what in findings])
        if report_path is not None:
            click.echo(f"{len(findings)} finding{'s' if len(findings) != 1 else ''} written to {report_path}", err=True)
        if not problems and not findings:
            click.echo("ok")
    if problems:
        raise CtlError(f"store {path} has {len(problems)} problem{'s' if len(problems) != 1 else ''}")
    if findings:
        raise CtlError(f"store {path}: {len(findings)} finding{'s' if len(findings) != 1 else ''}; see {report_path}")
