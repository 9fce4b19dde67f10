"""The exceptions the core raises.

Each kind of failure is one class; the edges (plugin, CLI, Docker driver) map these
classes to CNI error codes, exit statuses or HTTP statuses, each in one table of their
own. Messages name the offending key or value, because the operator reading them has
only the message.
"""

from __future__ import annotations


class CnipamError(Exception):
    """Base class: a failure the user can act on, with a one-line message."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IncompatibleVersion(CnipamError):
    """The request's cniVersion is not one this plugin speaks."""


class InvalidEnvironment(CnipamError):
    """A required environment variable is missing or malformed."""


class DecodeFailure(CnipamError):
    """The request body is not a JSON object (bad bytes, bad syntax, too large)."""


class InvalidConfig(CnipamError):
    """The network configuration is well-formed JSON but not a valid IPAM config."""


class StoreIOError(CnipamError):
    """The store cannot be opened, read or written."""


class FileUnreadable(CnipamError):
    """A file the config (resolvConf) or a command (a migration's input) names cannot be read."""


class StoreBusy(CnipamError):
    """Another process held the store's write lock for longer than the timeout."""


class StoreCorrupt(StoreIOError):
    """The store's contents violate its invariants; nothing is written to it."""


class StoreFull(StoreIOError):
    """The disk holding the store has no room for a write; nothing was written."""


class AddressConflict(CnipamError):
    """The requested address, or the owner's slot, is already taken."""


class PoolExhausted(CnipamError):
    """No free address is left in the configured range."""


class AddressesCooling(CnipamError):
    """The only free addresses were released too recently and the config says to wait
    (core.reuse): the same request succeeds once one has cooled."""


class LeaseMissing(CnipamError):
    """CHECK found an address of prevResult that the owner does not hold."""


class Unavailable(CnipamError):
    """STATUS: the plugin cannot serve an ADD right now."""


class NotFound(CnipamError):
    """The named object (a Docker pool id) does not exist in the store."""
