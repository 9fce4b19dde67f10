"""`CNI_ARGS`: `K=V;K=V` pairs, read the way libcni's `types.LoadArgs` reads them.

Keys a plugin does not know are refused unless `IgnoreUnknown` is true, which runtimes
set when they add their own keys (`K8S_POD_NAME`...); that keeps a typo such as `ip=`
(the key is `IP`) from being silently ignored.
"""

from __future__ import annotations

from .errors import InvalidEnvironment


def parse_cni_args(text: str, known: tuple[str, ...]) -> dict[str, str]:
    """The known keys' values; InvalidEnvironment naming the bad pair or unknown key."""
    if not text:
        return {}
    pairs: dict[str, str] = {}
    for item in text.split(";"):
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise InvalidEnvironment(f"CNI_ARGS: {item!r} is not a KEY=VALUE pair")
        pairs[key] = value
    ignore = pairs.pop("IgnoreUnknown", "0").lower()
    if ignore not in ("0", "1", "false", "true"):
        raise InvalidEnvironment(f"CNI_ARGS: IgnoreUnknown={ignore!r} is not a boolean")
    unknown = sorted(key for key in pairs if key not in known)
    if unknown and ignore in ("0", "false"):
        raise InvalidEnvironment(f"CNI_ARGS: unknown keys {', '.join(unknown)} (set IgnoreUnknown=1 to allow them)")
    return {key: value for key, value in pairs.items() if key in known}
