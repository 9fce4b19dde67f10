"""The `cnipamctl` executable: the command group, its global options, and the one table
that turns every failure into one line on stderr and an exit status.

Operators run it by hand and scripts run it in pipelines, so a refusal is never a
traceback or a page of usage text: it is `cnipamctl: <message>` and a status a script
can test (1 refused, 2 usage, 3 a bug: the meanings the daemons' codes have too,
cnipam.service). The table below is the only place that decides.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..core.errors import CnipamError
from ..service import exit_status
from .cmd_check import check
from .cmd_exchange import export, import_
from .cmd_gc import gc
from .cmd_history import history, history_retention
from .cmd_hosts import hosts
from .cmd_inspect import leases, show
from .cmd_install import install_plugin
from .cmd_metrics import metrics
from .cmd_migrate import migrate
from .cmd_pools import pools
from .cmd_recover import recover_command
from .cmd_release import release
from .cmd_repair import repair
from .cmd_usage import usage
from .options import store_options
from .session import Session

# The first matching class decides; order from specific to general. The codes mean what
# they mean for the daemons (cnipam.service.EXIT_STATUS): 1 refused, 2 the invocation is
# wrong, and anything not listed is a bug, 3 (still one line, never a traceback). A damaged
# store is a refusal here: `cnipamctl check` is how an operator looks at it.
EXIT_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (click.UsageError, 2),  # unknown command or option, missing argument, bad value
    (click.ClickException, 1),  # click's own refusals (e.g. a file it cannot open)
    (click.Abort, 1),  # the operator answered no, or pressed Ctrl-C
    (CnipamError, 1),  # the core's and the CLI's refusals (cnipam.core.errors, ctl.failures)
)


def one_line(error: BaseException) -> str:
    if isinstance(error, click.Abort):
        text = "aborted; nothing was changed"
    elif isinstance(error, click.UsageError):
        hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
        text = error.format_message() + hint
    elif isinstance(error, click.ClickException):
        text = error.format_message()
    elif isinstance(error, CnipamError):
        text = error.message
    else:
        text = f"internal error: {type(error).__name__}: {error}"
    return "cnipamctl: " + " ".join(text.split())


class CtlGroup(click.Group):
    """A click group whose `main` reports failures through EXIT_STATUS instead of click's
    own multi-line usage output and tracebacks."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name or "cnipamctl", complete_var, standalone_mode=False, **extra)
            status = result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as error:  # `cnipamctl` alone: help, not an error
            click.echo(error.ctx.get_help())
            status = 0
        except BrokenPipeError:  # `cnipamctl leases | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            status = 1
        except Exception as error:  # click.Abort (answer no, Ctrl-C) is a RuntimeError, so it is caught here too
            click.echo(one_line(error), err=True)
            status = exit_status(error, EXIT_STATUS)
        if standalone_mode:
            sys.exit(status)
        return status


@click.group(cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@store_options
@click.version_option(package_name="cnipam", prog_name="cnipamctl")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Inspect, repair and migrate the store of the cnipam CNI IPAM plugin.

    The store options (--db, --store, --config) go before or after the command name."""
    ctx.ensure_object(Session)


for _command in (
    leases, show, history, usage, metrics, pools, release, gc, export, import_, check, repair, recover_command,
    migrate, hosts, install_plugin, history_retention,
):  # fmt: skip
    main.add_command(_command)
