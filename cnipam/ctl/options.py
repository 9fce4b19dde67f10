"""Options several commands share, declared once so they read and behave alike.

`--db` is a global option, and is also accepted after the command name
(`cnipamctl leases --db x.db`), where operators tend to put it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from .session import Session

F = TypeVar("F", bound=Callable[..., object])

DB_HELP = "the store file (default: IPAM_DB_PATH, else /data/eni-ipam.db, as the plugin)"
STORE_HELP = (
    'a store object as in ipam.store, e.g. \'{"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}\' '
    "(default: CNIPAM_STORE)"
)


def _set_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Session).db = value


def db_option(command: F) -> F:
    return click.option("--db", metavar="PATH", expose_value=False, callback=_set_db, help=DB_HELP)(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print JSON only (for scripts)")(command)
