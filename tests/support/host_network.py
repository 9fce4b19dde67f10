"""What the host's network stack offers, for the tests that build real networks on it."""

from pathlib import Path


def ipv6_enabled() -> bool:
    try:
        return Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text().strip() == "0"
    except OSError:
        return False
