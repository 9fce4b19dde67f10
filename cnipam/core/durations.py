"""Go's duration syntax (`time.ParseDuration`), because ecs-ipam users already write
`IPAM_DB_CONNECTION_TIMEOUT=5s` or `1500ms` and expect the same values to work."""

from __future__ import annotations

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in `text` (for example "1m30s", "1500ms", "0"); ValueError if malformed."""
    rest = text.strip()
    sign = 1.0
    if rest[:1] in "+-" and rest:
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    while rest:
        end = 0
        while end < len(rest) and (rest[end].isdigit() or rest[end] == "."):
            end += 1
        number, rest = rest[:end], rest[end:]
        if not number or number == "." or number.count(".") > 1 or not number.isascii():
            raise ValueError(f"invalid duration {text!r}")
        unit_end = 0
        while unit_end < len(rest) and not (rest[unit_end].isdigit() or rest[unit_end] == "."):
            unit_end += 1
        unit, rest = rest[:unit_end], rest[unit_end:]
        if unit not in _UNITS:
            raise ValueError(
                f"invalid duration {text!r}: unknown unit {unit!r}" if unit else f"missing unit in duration {text!r}"
            )
        total += float(number) * _UNITS[unit]
    return sign * total
