"""Options several commands share, declared once so they read and behave alike.

The store options (`--db`, `--store`, `--config`) are one decorator, `store_options`,
put on the command group and on every command that works on a store: an operator may
give them before the command name or after it (`cnipamctl --db x.db leases`,
`cnipamctl leases --db x.db`), and every `--help` lists them. They set the Session
(ctl.session) instead of becoming parameters, so a command reads the store it is
given with `session.existing()` and needs nothing else. A new command that works on a
store takes `@store_options` and `@click.pass_obj`, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from .session import Session

F = TypeVar("F", bound=Callable[..., object])

DB_HELP = "the store file (default: IPAM_DB_PATH, else /data/eni-ipam.db, as the plugin); wins over the others"
STORE_HELP = (
    'a store object as in ipam.store, e.g. \'{"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}\' '
    "(default: CNIPAM_STORE); wins over --config"
)
CONFIG_HELP = (
    "a network config or conflist: its ipam.store or ipam.dataDir picks the store, as for the plugin "
    "(repeatable; usage also lists its pools, check --report and migrate read them)"
)


def _set_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        if not value.strip():
            raise click.BadParameter("an empty path names no store", ctx, param)
        ctx.ensure_object(Session).db = value


def _set_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        if not value.strip():
            raise click.BadParameter("an empty store object names no store", ctx, param)
        ctx.ensure_object(Session).store = value


def _add_configs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    for path in value:
        if not path.strip():
            raise click.BadParameter("an empty path names no config", ctx, param)
        ctx.ensure_object(Session).configs.append(path)


def store_options(command: F) -> F:
    """`--db`, `--store` and `--config`, into the Session (before or after the command name)."""
    for option in (
        click.option("--config", "config", metavar="FILE", multiple=True, expose_value=False, callback=_add_configs,
                     help=CONFIG_HELP),
        click.option("--store", metavar="JSON", expose_value=False, callback=_set_store, help=STORE_HELP),
        click.option("--db", metavar="PATH", expose_value=False, callback=_set_db, help=DB_HELP),
    ):  # fmt: skip
        command = option(command)
    return command


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print JSON only (for scripts)")(command)
