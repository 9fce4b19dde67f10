"""The reuse delay (core.reuse): a released address rests before another owner gets it.

Both engines with their clock replaced (the delay is kept in the store, so a store
opened again still honours it), then the plugin with the real clock: a released address
is not handed out again inside the delay. The policy alone: tests/core/test_reuse.py;
the Docker driver's: tests/docker/test_docker_core.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.addresses import parse_ip
from cnipam.core.ecs_config import parse_ecs
from cnipam.core.errors import AddressesCooling
from cnipam.core.ipam_config import PoolSpec
from cnipam.core.leases import Owner
from cnipam.store.base import Store
from tests.support.plugin_calls import RunPlugin
from tests.support.store_engines import ENGINES

T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


# -- both engines, the clock replaced ---------------------------------------------------------


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, FakeClock, Any]]:
    clock = FakeClock()

    def open_store() -> Store:
        store = ENGINES[request.param](request, tmp_path)
        store.clock = clock
        return store

    store = open_store()
    yield store, clock, open_store
    assert store.problems() == []
    store.close()


def owner(name: str) -> Owner:
    return Owner.for_request(None, "net", name, "eth0")


def ip(store: Store, name: str, pools: tuple[PoolSpec, ...]) -> str:
    return store.allocate(owner(name), pools)[0].ip


def pools(**keys: object) -> tuple[PoolSpec, ...]:
    return parse_ecs(
        {"ipv4-subnet": "10.0.0.0/29", **{key.replace("_", "-"): value for key, value in keys.items()}}
    ).pools


def test_a_released_address_rests_for_the_delay(engine: tuple[Store, FakeClock, Any]) -> None:
    store, clock, _ = engine
    delayed = pools(reuse_delay="30s")  # usable .2-.6
    assert [ip(store, name, delayed) for name in "abcde"] == [
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "10.0.0.5",
        "10.0.0.6",
    ]
    store.release(owner("b").handle)
    clock.now += 10
    store.release(owner("d").handle)
    clock.now += 10
    assert ip(store, "f", delayed) == "10.0.0.3"  # only cooling ones left: the one released longest ago (reuse)
    store.release(owner("f").handle)
    clock.now += 25  # .5 released 35 s ago, .3 just 25 s ago
    assert ip(store, "g", delayed) == "10.0.0.5"  # round robin from .3: .4 .. .6 taken, wraps; .3 still rests
    store.release(owner("g").handle)
    assert (
        ip(store, "h", pools()) == "10.0.0.3"
    )  # a pool without a delay: upstream's order, the release does not matter


def test_wait_fails_with_try_again_and_requested_addresses_are_never_delayed(
    engine: tuple[Store, FakeClock, Any],
) -> None:
    store, clock, _ = engine
    waiting = pools(reuse_delay=60, when_only_cooling="wait")
    for name in "abcde":
        store.allocate(owner(name), waiting)
    store.release(owner("c").handle)
    clock.now += 59
    with pytest.raises(AddressesCooling, match="try again in 1s"):
        store.allocate(owner("x"), waiting)
    assert (
        store.allocate(owner("y"), pools(reuse_delay=60, ipv4_address="10.0.0.4/29"))[0].ip == "10.0.0.4"
    )  # asked for: at once
    store.release(owner("y").handle)
    clock.now += 60
    assert ip(store, "x", waiting) == "10.0.0.4"


def test_the_delay_is_kept_in_the_store(engine: tuple[Store, FakeClock, Any]) -> None:
    store, clock, open_store = engine
    waiting = pools(reuse_delay="30s", when_only_cooling="wait")
    for name in "abcde":
        store.allocate(owner(name), waiting)
    store.release(owner("a").handle)
    clock.now += 10
    store.release(None, [parse_ip("10.0.0.4")])  # by address, as ecs-ipam's DEL may
    again = open_store()  # another process: what it knows comes from the store
    try:
        clock.now += 5
        with pytest.raises(AddressesCooling):
            again.allocate(owner("f"), waiting)
        clock.now += 15  # .2 released 30 s ago, .4 only 20 s ago
        assert ip(again, "f", waiting) == "10.0.0.2"
    finally:
        again.close()


# -- the plugin, the real clock ----------------------------------------------------------------


def test_the_plugin_keeps_a_released_address_inside_the_delay(run_plugin: RunPlugin) -> None:
    config = {
        "cniVersion": "1.0.0",
        "name": "cool",
        "ipam": {"type": "cnipam", "subnet": "10.1.0.0/29", "reuseDelay": "2s"},
    }
    no_delay = {**config, "ipam": {"type": "cnipam", "subnet": "10.1.0.0/29"}}

    def add(container: str, cfg: dict[str, Any] = config) -> str:
        run = run_plugin("ADD", cfg, {"CNI_CONTAINERID": container})
        assert run.code == 0, run
        return str(run.out["ips"][0]["address"])

    assert [add(c) for c in ("a", "b", "c", "d", "e")] == [f"10.1.0.{n}/29" for n in range(2, 7)]
    released = time.monotonic()
    assert run_plugin("DEL", config, {"CNI_CONTAINERID": "c"}).code == 0
    assert run_plugin("DEL", config, {"CNI_CONTAINERID": "a"}).code == 0
    got = add("f")  # .4 and .2 are free, but both rest: the one released first comes back
    if time.monotonic() - released < 2:
        assert got == "10.1.0.4/29"
    assert run_plugin("DEL", config, {"CNI_CONTAINERID": "f"}).code == 0
    assert (
        add("g", no_delay) == "10.1.0.2/29"
    )  # no delay asked: host-local's order, after .4 (the last handed out) wrapping to .2
