"""The CNI spec versions this plugin speaks, and how their strings compare."""

from __future__ import annotations

from .errors import IncompatibleVersion

SUPPORTED = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = SUPPORTED[-1]


def parse(version: str) -> tuple[int, int, int]:
    """Semantic order of a spec version; an absent version means 0.1.0, as the spec says."""
    parts = (version or "0.1.0").split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        raise IncompatibleVersion(
            f"cniVersion {version!r} is not a version number", f"plugin supports {list(SUPPORTED)}"
        )
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def require_supported(version: object) -> str:
    """Return the request's version if this plugin speaks it exactly (string-equal, like libcni)."""
    if version is None:
        version = "0.1.0"
    if not isinstance(version, str):
        raise IncompatibleVersion("cniVersion must be a string", f"plugin supports {list(SUPPORTED)}")
    if version not in SUPPORTED:
        raise IncompatibleVersion(
            "incompatible CNI versions", f'config is "{version}", plugin supports {list(SUPPORTED)}'
        )
    return version


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)
