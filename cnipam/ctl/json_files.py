"""Reading a JSON file the operator named (config, valid list, export).

The file is the operator's own, so every way it can be wrong (missing, unreadable, not
UTF-8, not JSON) is one line naming the file and, for syntax, the line and column.
"""

from __future__ import annotations

import json
import sys

from .failures import BadInput


def read_operator_file(path: str, what: str) -> bytes:
    """The bytes of a file the operator named (`-`: stdin); one clear line when unreadable."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as source:
            return source.read()
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror}") from None


def load_json_file(path: str, what: str) -> object:
    """A JSON file the operator named (`-`: stdin); one clear line when it cannot be read or parsed."""
    raw = read_operator_file(path, what)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} {path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadInput(f"{what} {path} is nested too deeply") from None
