"""JSON on the C accelerator, without importing the `json` package.

`import json` imports `re` (and with it `enum`) for its decoder, which the plugin would
pay for on every call (docs/benchmarks.md lists what an ADD imports, measured with
`-X importtime`). The `_json` C module that `json` wraps
imports nothing, so this module drives its scanner and encoder directly. The error
paths may import more; only success has to be fast.
"""

from __future__ import annotations

import _json

from .errors import DecodeFailure

MAX_INPUT = 1 << 20  # a CNI config with prevResult is a few KiB; refuse floods early


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """`1e999` would decode to infinity, which no JSON encoder writes back (ours raises,
    after the store was changed) and Go refuses as out of range: refuse it on the way in."""
    value = float(text)
    if value - value != 0.0:  # inf or nan, without importing math
        raise ValueError(f"number {text} is out of range")
    return value


class _ScannerContext:
    """The attributes `_json.make_scanner` reads, as `json.JSONDecoder` would set them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = staticmethod(_finite_float)
    parse_int = int
    parse_constant = staticmethod(_refuse_constant)
    memo: dict[str, str] = {}  # noqa: RUF012 - the scanner shares this cache by design


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]  # duck-typed like JSONDecoder
_encode = _json.make_encoder(
    None,
    None,  # type: ignore[arg-type]  # no default: only JSON types are encoded
    _json.encode_basestring_ascii,
    None,
    ":",
    ",",
    False,
    False,
    False,
)
_WHITESPACE = " \t\n\r"


def loads(data: bytes | str, what: str = "stdin", limit: int = MAX_INPUT) -> object:
    """Decode one JSON document; raise DecodeFailure naming `what` and the position.

    `limit` is there for trusted peers whose answers may be larger than any CNI config
    (an etcd range over many keys)."""
    if len(data) > limit:
        raise DecodeFailure(f"{what}: {len(data)} bytes is larger than the {limit}-byte limit")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeFailure(f"{what}: not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if "\x00" in text:
        raise DecodeFailure(f"{what}: contains a NUL character")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except RecursionError:
        raise DecodeFailure(f"{what}: JSON nested too deeply") from None
    except Exception:  # the scanner may not raise a proper error: see _explain
        raise DecodeFailure(f"{what}: invalid JSON: {_explain(text)}") from None
    rest = text[end:]
    if rest.strip(_WHITESPACE):
        position = end + len(rest) - len(rest.lstrip(_WHITESPACE))
        raise DecodeFailure(f"{what}: invalid JSON, unexpected data at position {position}")
    return value


def _explain(text: str) -> str:
    """Why `text` is not JSON, in the json package's words. Only the error path pays for
    importing it; and the C scanner needs `json.decoder` loaded to raise its own error
    (without it, it fails with a SystemError and no message)."""
    import json

    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as exc:
        return str(exc)
    return "not a JSON document"


def dumps(value: object) -> str:
    """Compact JSON; non-ASCII escaped so the output is safe for any reader's encoding."""
    return "".join(_encode(value, 0))


def json_kind(value: object) -> str:
    """What a decoded JSON value is, as a message names it ("a string", "null")."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)
