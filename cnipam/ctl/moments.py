"""The moments and spans `cnipamctl history` and `history-retention` accept.

A moment is what a log line says (RFC 3339: `2025-03-14T14:02:07Z`, with an offset, a
fraction, a space for the `T`; a time without an offset is the machine's local time, as
most syslog lines are; a date alone is its midnight), or what an operator says about it
(`now`, `2h ago`, `1d12h ago`), or seconds since 1970 (`@1741960927`). A span is a Go
duration (`90m`, `1h30m`) with days and weeks added (`30d`, `2w`): retention is counted
in days.

Pure: `now` is passed in.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..core.durations import parse_go_duration
from .failures import BadInput

DAY = 86400.0
_LONG_UNITS = {"d": DAY, "w": 7 * DAY}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_LONG_SPAN = re.compile(r"(\d+(?:\.\d+)?)([dw])")


def parse_span(text: str, what: str) -> float:
    """Seconds in `30d`, `2w3d`, `1h30m`, `1d12h`: days and weeks first, then a Go duration."""
    rest, total = text.strip(), 0.0
    refusal = BadInput(f"{what} {text!r}: expected a span such as 30d, 12h or 1h30m")
    if not rest:
        raise refusal
    while (match := _LONG_SPAN.match(rest)) is not None:
        total += float(match.group(1)) * _LONG_UNITS[match.group(2)]
        rest = rest[match.end() :]
    if rest:
        try:
            total += parse_go_duration(rest)
        except ValueError:
            raise refusal from None
    if total < 0:
        raise BadInput(f"{what} {text!r} is negative")
    return total


def parse_moment(text: str, now: float, what: str) -> float:
    """Seconds since 1970 of a moment (see the module's docstring); BadInput naming `what`."""
    spoken = text.strip()
    if spoken.lower() == "now":
        return now
    if spoken.lower().endswith(" ago"):
        return now - parse_span(spoken[: -len(" ago")], what)
    if spoken.startswith("@"):
        try:
            return float(spoken[1:])
        except ValueError:
            raise BadInput(f"{what} {text!r}: expected @ and seconds since 1970") from None
    match = _RFC3339.fullmatch(spoken)
    if match is None:
        raise BadInput(f"{what} {text!r}: expected a time such as 2025-03-14T14:02:07Z, '2h ago' or 'now'")
    year, month, day, hour, minute, second, fraction, utc, sign, offset_hours, offset_minutes = match.groups()
    zone = None
    if utc:
        zone = timezone.utc
    elif sign:
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(offset if sign == "+" else -offset)
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), 0, zone)
    except ValueError as exc:
        raise BadInput(f"{what} {text!r}: {exc}") from None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
