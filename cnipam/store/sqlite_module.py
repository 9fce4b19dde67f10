"""Loading SQLite's C module without `functools`.

CPython 3.11's `_sqlite3` imports `functools` only for `lru_cache`, to build each
connection's statement cache; `functools` brings `collections` and more with it. Measured
with `-X importtime`, importing `_sqlite3` this way costs well under half of what it costs
with `functools` (docs/benchmarks.md lists the import in an ADD). The plugin is a
new process per call, so for the duration of that one import `_sqlite3` is handed a
stand-in `functools` whose `lru_cache` is the very C implementation the real one wraps
(`_functools._lru_cache_wrapper`); the real `functools` is untouched and imports as usual
later. If anything is unexpected (functools already loaded, an interpreter whose
`_sqlite3` wants more of it), the ordinary import runs: only the speed differs.
"""

from __future__ import annotations

import sys


def _cache_info(*values: object) -> tuple[object, ...]:
    return values  # `cache_info()` of the real lru_cache returns a named tuple of these


def _lru_cache(maxsize: int | None = 128, typed: bool = False) -> object:
    import _functools  # type: ignore[import-not-found,unused-ignore]  # no stubs; builtin C module

    def wrap(function: object) -> object:
        return _functools._lru_cache_wrapper(function, maxsize, typed, _cache_info)

    return wrap


def preload_sqlite() -> bool:
    """Import `_sqlite3`; True when the stand-in was used."""
    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        return False
    stand_in = type(sys)("functools")
    stand_in.lru_cache = _lru_cache  # type: ignore[attr-defined]
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3  # noqa: F401
    except Exception:  # this interpreter's module wants more than lru_cache
        sys.modules.pop("_sqlite3", None)
        return False
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return True


preload_sqlite()
try:  # the C module directly: the `sqlite3` package's Python wrapper adds imports of its own
    from _sqlite3 import Connection, DatabaseError, IntegrityError, OperationalError, connect
except ImportError:  # pragma: no cover - an interpreter that ships only the package
    from sqlite3 import Connection, DatabaseError, IntegrityError, OperationalError, connect

__all__ = ["Connection", "DatabaseError", "IntegrityError", "OperationalError", "connect", "preload_sqlite"]
