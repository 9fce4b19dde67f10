"""When a released address may be handed out again: the reuse delay ("cooling").

A released address handed straight to a new container receives traffic meant for the
old one through stale conntrack entries, DNS answers and endpoint lists (calico #4152,
vpc-cni #3634). So every store remembers when each free address was released, for
`FORGET_AFTER` seconds, and a pool with a delay skips addresses released less than
`delay` seconds ago. When only such addresses are left, the config chooses: hand out the
one released longest ago (`REUSE`, the default: a container should start rather than
fail while its pool has free addresses; a cooldown that starves allocation is vpc-cni
#2896's complaint), or answer "try again later" (`WAIT`, CNI code 11), as AWS's
IP_COOLDOWN_PERIOD does. Requested addresses are never delayed.

A reboot's repair (core.reboot) keeps each address it frees for the attachment that held
it, so a container the runtime starts again gets its address back: for `RETURN_HOLD`
seconds other owners skip those addresses, unless nothing else is free (a pool that was
full before the reboot serves a new container at once after it).

The engines search their own structures; this module decides, with the clock passed in.
"""

from __future__ import annotations

from .errors import AddressesCooling, InvalidConfig, PoolExhausted
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ipam_config import PoolSpec

REUSE = "reuse"  # only cooling addresses left: hand out the one released longest ago
WAIT = "wait"  # only cooling addresses left: fail with "try again later"
MAX_DELAY = 3600.0
RETURN_HOLD = 3600.0
FORGET_AFTER = max(MAX_DELAY, RETURN_HOLD)  # how long a store remembers a release


class ReuseDelay(Record):
    """A pool's rule: seconds a released address rests, and what to do when only resting ones are free."""

    __slots__ = ("delay", "when_only_cooling")

    def __init__(self, delay: float = 0.0, when_only_cooling: str = REUSE) -> None:
        self.delay = delay
        self.when_only_cooling = when_only_cooling


NO_DELAY = ReuseDelay()


class Eligibility(Record):
    """Which free addresses a new owner may take now. An address released at `released`
    (None: not released lately) may be taken when released no later than `cooled_since`
    (None: released addresses are not delayed), or for one kept for a returning
    attachment (`held`), no later than `held_since`."""

    __slots__ = ("cooled_since", "held_since")

    def __init__(self, cooled_since: float | None, held_since: float) -> None:
        self.cooled_since = cooled_since
        self.held_since = held_since

    def allows(self, released: float | None, held: bool) -> bool:
        if released is None:
            return True
        if held:
            return released <= self.held_since
        return self.cooled_since is None or released <= self.cooled_since

    @property
    def trivial(self) -> bool:
        """Nothing cools: only addresses held for a returning attachment are skipped."""
        return self.cooled_since is None


def eligibility(reuse: ReuseDelay, now: float) -> Eligibility:
    return Eligibility(now - reuse.delay if reuse.delay > 0 else None, now - RETURN_HOLD)


class Freed(Record):
    """A free address released lately: when, and whether a reboot keeps it for its attachment."""

    __slots__ = ("address", "released", "held")

    def __init__(self, address: int, released: float, held: bool) -> None:
        self.address = address
        self.released = released
        self.held = held


def older(first: Freed | None, second: Freed | None) -> Freed | None:
    """The one released longer ago (an engine's search over several windows keeps this)."""
    if first is None or (second is not None and second.released < first.released):
        return second
    return first


def last_resort(spec: PoolSpec, cooling: Freed | None, held: Freed | None, now: float) -> int:
    """The address to hand out when no free address of `spec` is eligible, given the free
    address of the pool released longest ago (`cooling`) and the one a reboot keeps for
    its attachment released longest ago (`held`); None where there is none.

    A cooling address under REUSE first: it has rested longest; then an address kept for
    an attachment that has not come back (the pool must serve a new container); else
    AddressesCooling when only cooling addresses are left, PoolExhausted when none is."""
    if cooling is not None and spec.reuse.when_only_cooling == REUSE:
        return cooling.address
    if held is not None:
        return held.address
    if cooling is not None:
        wait = max(cooling.released + spec.reuse.delay - now, 0.0)
        raise AddressesCooling(
            f"only addresses released less than {spec.reuse.delay:g}s ago are free in {spec}; try again in {wait:.0f}s"
        )
    raise PoolExhausted(f"no free address left in {spec}")


def parse_reuse(delay: object, when: object, delay_key: str, when_key: str) -> ReuseDelay:
    """A config's reuse delay: a Go duration ("30s", "2m") or a number of seconds, from 0 to
    MAX_DELAY; and what to do when only cooling addresses are left, REUSE or WAIT."""
    seconds = 0.0
    if delay is not None:
        if isinstance(delay, str):
            from .durations import parse_go_duration  # only when the key is given

            try:
                seconds = parse_go_duration(delay)
            except ValueError:
                raise InvalidConfig(f"{delay_key}: {delay!r} is not a duration such as 30s or 2m") from None
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise InvalidConfig(f'{delay_key}: expected a duration such as "30s" or a number of seconds')
        if not 0 <= seconds <= MAX_DELAY:
            raise InvalidConfig(f"{delay_key}: {delay!r} must be between 0 and {MAX_DELAY:.0f}s")
    if when is None:
        when = REUSE
    if when not in (REUSE, WAIT):
        raise InvalidConfig(
            f"{when_key}: expected {REUSE!r} (hand out the address released longest ago)"
            f" or {WAIT!r} (fail: try again later)"
        )
    return ReuseDelay(seconds, str(when))
