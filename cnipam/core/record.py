"""Immutable value objects without `dataclasses`.

`dataclasses` pulls in `inspect` and `re`, and `typing.NamedTuple` all of `typing`: more
import time than all of cnipam's own modules (`-X importtime`; docs/benchmarks.md lists
what an ADD imports). The plugin is a new process per call, so the hot-path value types
derive from `Record` instead: each subclass lists its fields in `__slots__` and assigns
them in `__init__` (a subclass of a record lists only the fields it adds); equality,
hashing and repr come from here.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()
    _names: tuple[str, ...] = ()  # every field, a base class's first: what equality and repr go by

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._names = tuple(name for klass in reversed(cls.__mro__) for name in klass.__dict__.get("__slots__", ()))

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._names)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._fields() == other._fields()  # type: ignore[attr-defined,unused-ignore]

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._fields()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names)
        return f"{type(self).__name__}({inner})"
