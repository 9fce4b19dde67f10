"""`metrics`: the pool gauges, for hosts that run no daemon to scrape.

node_exporter's textfile collector is the Prometheus convention for numbers a cron job
or a timer produces: it serves every `*.prom` file of a folder with the host's other
metrics. `--textfile DIR` writes `DIR/cnipam.prom` there, whole or not at all (written
beside it, then renamed), so a scrape never reads half a file. Without it the same text
is printed. The gauges and their names are the daemons' (cnipam.metrics.pools).
"""

from __future__ import annotations

import os

import click
from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile

from ..core.errors import CnipamError
from ..metrics.pools import PoolGauges, Reading, read_store
from .failures import BadInput
from .options import store_options
from .session import Session

TEXTFILE = "cnipam.prom"


@click.command()
@click.option(
    "--textfile",
    "folder",
    metavar="DIR",
    help=f"write {TEXTFILE} into DIR atomically (node_exporter's --collector.textfile.directory)",
)
@store_options
@click.pass_obj
def metrics(session: Session, folder: str | None) -> None:
    """The pool gauges in Prometheus's text format.

    Size and reserved, used, cooling and free addresses of every pool (and on etcd the
    blocks of each host): what cnipamd and cnipam-docker serve on /metrics. Cooling
    counts the addresses a reboot keeps for their attachment, and with --config those
    inside the config's reuse delay (the store does not record configs); --config also
    counts that network's pools still empty."""
    if folder is not None and not os.path.isdir(folder):
        raise BadInput(f"--textfile {folder}: not a folder")
    configured = [spec for _, config in session.network_configs() for spec in config.ipam.pools]
    failure: list[CnipamError] = []

    def read() -> Reading:
        try:
            with session.existing(reading=True) as store:
                return read_store(store, configured)
        except CnipamError as error:
            failure.append(error)
            raise

    registry = CollectorRegistry()
    registry.register(PoolGauges(lambda: [(session.settings().name, read)]))
    if folder is None:
        click.echo(generate_latest(registry).decode(), nl=False)
    else:
        try:
            write_to_textfile(os.path.join(folder, TEXTFILE), registry)
        except OSError as exc:
            raise BadInput(f"--textfile {folder}: cannot write {TEXTFILE}: {exc.strerror}") from None
    if failure:  # the text says cnipam_store_up 0; the exit status says it too
        raise failure[0]
