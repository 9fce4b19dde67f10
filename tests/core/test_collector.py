"""The collector's rules (core.collector), pure, with the clock passed in: who is a
candidate, when two sightings a grace period apart release an owner, and how a network
config's `disableGC` is read (tests/store/test_collector.py runs them on the engines).
"""

from __future__ import annotations

import pytest

from cnipam.core.collector import gc_disabled, judge, leaked_owners
from cnipam.core.errors import InvalidConfig
from cnipam.core.leases import LEASE, Lease

T0 = 1_800_000_000.0
GRACE = 600.0


def lease(handle: str, container: str, ifname: str = "eth0", created: float = T0 - 10, family: int = 4) -> Lease:
    return Lease(family, 1, LEASE, "p", str(family), handle, "net", container, ifname, created)


def test_an_owner_is_leaked_only_when_none_of_its_attachments_is_valid() -> None:
    leases = [lease("id:x", "c1"), lease("id:x", "c2", family=6), lease("cni:net/c3/eth0", "c3"), lease("anon", "")]
    assert sorted(leaked_owners(leases, "net", {("c2", "eth0")})) == ["cni:net/c3/eth0"]  # id:x is valid through c2
    assert sorted(leaked_owners(leases, "net", set())) == [
        "cni:net/c3/eth0",
        "id:x",
    ]  # never the lease without a container
    assert leaked_owners(leases, "other", set()) == {}


def test_two_sightings_a_grace_apart_and_a_new_lease_starts_over() -> None:
    leaked = {"a": [lease("a", "a")]}
    assert judge(leaked, {}, T0, GRACE) == ([], {"a": T0})
    assert judge(leaked, {"a": T0, "gone": T0}, T0 + GRACE - 1, GRACE) == (
        [],
        {"a": T0},
    )  # an owner not leaked any more is forgotten
    leaked["b"] = [lease("b", "b", created=T0 + 5)]  # b's sighting was of an attachment before this lease
    assert judge(leaked, {"a": T0, "b": T0}, T0 + GRACE, GRACE) == (["a"], {"b": T0 + GRACE})
    assert judge(leaked, {"gone": T0}, T0 + GRACE, 0) == (["a", "b"], {})  # no grace: one pass (CNI's GC)


@pytest.mark.parametrize(
    ("config", "disabled"),
    [({}, False), ({"disableGC": True}, True), ({"disableGC": "TRUE"}, True), ({"disableGC": "false"}, False)],
)
def test_disable_gc_is_read_as_libcni_reads_it(config: dict[str, object], disabled: bool) -> None:
    assert gc_disabled(config) is disabled


@pytest.mark.parametrize("value", ["sometimes", 1, None, []])
def test_a_disable_gc_that_is_not_a_boolean_is_refused_by_name(value: object) -> None:
    with pytest.raises(InvalidConfig, match="disableGC"):
        gc_disabled({"disableGC": value})
