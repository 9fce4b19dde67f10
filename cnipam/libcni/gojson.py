"""JSON written byte for byte as Go's encoding/json writes it.

The result cache and a wrapped single-plugin config are files Go programs also write; to
be interchangeable with them (and to make "compatible" checkable by comparing bytes) we
reproduce Go's output: no spaces, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029
escaped as \\u003c..., numbers formatted as Go formats a float64 (every JSON number Go
decodes into interface{} is one).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    for char, escaped in _HTML_ESCAPES.items():
        out = out.replace(char, escaped)
    return out


def _number(value: float) -> str:
    """strconv.FormatFloat(f, 'f' or 'e', -1, 64) as encoding/json chooses between them."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value}")
    shortest = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = shortest.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0").rjust(2, "0")
        if sign == "-" and digits.startswith("0"):
            digits = digits[1:]
        return f"{mantissa.removesuffix('.0')}e{sign}{digits}"
    text = format(Decimal(shortest), "f")
    return text[:-2] if text.endswith(".0") else text


def marshal(value: Any, sort_keys: bool = True) -> str:
    """The JSON text Go's json.Marshal gives for the same value decoded into interface{}."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**21 else _number(float(value))
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        keys = sorted(value) if sort_keys else list(value)
        return "{" + ",".join(f"{_string(str(k))}:{marshal(value[k])}" for k in keys) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(marshal(v) for v in value) + "]"
    raise TypeError(f"json: unsupported type: {type(value).__name__}")


def marshal_bytes(value: Any, sort_keys: bool = True) -> bytes:
    return marshal(value, sort_keys).encode()
