"""The reuse delay's policy (core.reuse), pure, with the clock passed in: when a released
address may be handed out again, what is handed out when only resting ones are free, and
how both dialects read the keys (tests/store/test_reuse_delay.py runs it on the engines).
"""

from __future__ import annotations

import pytest

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import AddressesCooling, InvalidConfig, PoolExhausted
from cnipam.core.host_local_config import parse_host_local
from cnipam.core.ipam_config import PoolSpec
from cnipam.core.reuse import (
    MAX_DELAY,
    NO_DELAY,
    RETURN_HOLD,
    REUSE,
    WAIT,
    Freed,
    ReuseDelay,
    eligibility,
    last_resort,
    parse_reuse,
)

T0 = 1_800_000_000.0


def test_eligibility_counts_the_delay_from_the_release() -> None:
    rule = eligibility(ReuseDelay(30.0), T0)
    assert rule.allows(None, False)  # never released lately
    assert not rule.allows(T0 - 29.9, False) and rule.allows(T0 - 30.0, False)
    assert eligibility(NO_DELAY, T0).allows(T0, False)  # no delay: a release does not matter
    assert not rule.allows(T0 - 60.0, True) and rule.allows(T0 - RETURN_HOLD, True)  # kept for a returning attachment


def spec(reuse: ReuseDelay) -> PoolSpec:
    return parse_ecs(
        {"ipv4-subnet": "10.0.0.0/29", "reuse-delay": reuse.delay, "when-only-cooling": reuse.when_only_cooling}
    ).pools[0]


def test_last_resort_prefers_what_rested_longest_then_what_a_reboot_kept() -> None:
    cooling, kept = Freed(3, T0 - 5, False), Freed(4, T0 - 100, True)
    assert last_resort(spec(ReuseDelay(30.0, REUSE)), cooling, kept, T0) == 3
    assert last_resort(spec(ReuseDelay(30.0, WAIT)), cooling, kept, T0) == 4  # a pool full before a reboot still serves
    with pytest.raises(AddressesCooling, match="try again in 25s"):
        last_resort(spec(ReuseDelay(30.0, WAIT)), cooling, None, T0)
    with pytest.raises(PoolExhausted):
        last_resort(spec(ReuseDelay(30.0, REUSE)), None, None, T0)


@pytest.mark.parametrize(
    ("delay", "when", "message"),
    [("soon", None, "not a duration"), (-1, None, "between 0"), (MAX_DELAY + 1, None, "between 0"),
     (True, None, "expected a duration"), ("30s", "later", "expected 'reuse'"), (float("nan"), None, "between 0")],
)  # fmt: skip
def test_bad_reuse_settings_are_refused_by_name(delay: object, when: object, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_reuse(delay, when, "ipam.reuse-delay", "ipam.when-only-cooling")


def test_both_dialects_read_the_keys_and_default_to_no_delay() -> None:
    assert parse_ecs({"ipv4-subnet": "10.0.0.0/24"}).pools[0].reuse == NO_DELAY
    assert parse_ecs({"ipv4-subnet": "10.0.0.0/24", "reuse-delay": "2m"}).pools[0].reuse == ReuseDelay(120.0, REUSE)
    hl = {
        "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]],
        "reuseDelay": 15,
        "whenOnlyCooling": "wait",
    }
    assert {pool.reuse for pool in parse_host_local(hl, {"cniVersion": "1.0.0"}, "").pools} == {ReuseDelay(15.0, WAIT)}
    assert parse_host_local({"subnet": "10.0.0.0/24"}, {"cniVersion": "1.0.0"}, "").pools[0].reuse == NO_DELAY
    with pytest.raises(InvalidConfig, match="ipam.reuseDelay"):
        parse_host_local({"subnet": "10.0.0.0/24", "reuseDelay": "x"}, {"cniVersion": "1.0.0"}, "")
