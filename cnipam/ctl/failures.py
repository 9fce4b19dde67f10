"""The refusals cnipamctl itself raises.

They derive from the core's CnipamError so that app.py maps them, with the core's own
exceptions, through its one table of exit statuses: every refusal is one line and a
non-zero exit, whoever raised it.
"""

from __future__ import annotations

from ..core.errors import CnipamError


class CtlError(CnipamError):
    """A command cannot do what it was asked; the message says what to do instead."""


class NothingHeld(CtlError):
    """The address or owner named holds nothing in the store."""


class BadInput(CtlError):
    """A file or argument the operator gave is not what the command reads."""


class NoStore(CtlError):
    """A read command was pointed at a store that does not exist (it is not created)."""
