"""The sans-I/O core: address arithmetic, config parsing, allocation policy, Docker pool
placement, result encoding and the exception hierarchy.

The rule of this folder: nothing here opens a file, a socket or a clock. Every module
takes what it needs (bytes, dicts, the current time, callbacks into a store engine) as
arguments and returns values or raises a `CnipamError`, so each can be tested without a
file system, a network or a timer, and the edges (`plugin.py`, `store/`, `docker/`,
`agent/`, `ctl/`) decide where the inputs come from. Modules here import only each other
and the standard library, never a layer above.

This file stays empty: the plugin starts once per CNI call and imports this package on
its start-up path. For the same reason modules across cnipam say

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from collections.abc import Callable

instead of `from typing import TYPE_CHECKING`: mypy treats any variable of that name as
the constant, and the plugin never pays for importing `typing` (docs/benchmarks.md lists
what its start-up imports).
"""
