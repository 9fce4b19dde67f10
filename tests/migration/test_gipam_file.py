"""gipam's lease file -> Docker pools and leases (cnipam.migration.gipam_file), free of I/O.

No file written by gipam itself is in tests/fixtures, so the documents here follow
gipam's own encoder (pkg/leaser: Go's MarshalIndent of the Leaser and Subnet structs,
shared/reference/docker-ipam.md §2): `v6idx`/`v4idx` omitted when 0, a block's lists
`null` until first used, `v6` "" when no IPv6 pool is set.
"""

from __future__ import annotations

import json

import pytest

from cnipam.migration.gipam_file import GipamFileError, plan_gipam

BLOCK_V4 = {
    "id": "R0KGSOeJ4n3thSpz", "v": 4, "pool": "192.168.1.0/24", "idx": 4,
    "allocated": ["192.168.1.1", "192.168.1.3"], "free": ["192.168.1.2"],
}  # fmt: skip
BLOCK_V6 = {
    "id": "a8Fz0qLmN3xY7bWc",
    "v": 6,
    "pool": "2001:db8:0:1::/64",
    "idx": 2,
    "allocated": ["2001:db8:0:1::1"],
    "free": None,
}
RELEASED = {"id": "Pp0oI9uY8tR7eW6q", "v": 4, "pool": "192.168.2.0/24", "idx": 1, "allocated": [], "free": []}


def document(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v6": "2001:db8::/56", "v6ab": 64, "v6idx": 2, "v4": "192.168.0.0/16", "v4ab": 24, "v4idx": 3,
        "allocated": [BLOCK_V4, BLOCK_V6], "free": [RELEASED],
    }  # fmt: skip
    base.update(changes)
    return base


def encode(value: object) -> bytes:
    return json.dumps(value, indent=2).encode()


def test_allocated_blocks_become_pools_under_their_ids_with_their_addresses() -> None:
    plan = plan_gipam(encode(document()), now=5.0)
    assert [(pool.id, str(pool.network), pool.sub_pool) for pool in plan.pools] == [
        ("R0KGSOeJ4n3thSpz", "192.168.1.0/24", None),
        ("a8Fz0qLmN3xY7bWc", "2001:db8:0:1::/64", None),
    ]
    assert [(lease.ip, lease.network, lease.pool, lease.slot, lease.handle) for lease in plan.leases] == [
        ("192.168.1.1", "docker:R0KGSOeJ4n3thSpz", "192.168.1.0/24", "docker", None),
        ("192.168.1.3", "docker:R0KGSOeJ4n3thSpz", "192.168.1.0/24", "docker", None),  # .2 was released: free
        ("2001:db8:0:1::1", "docker:a8Fz0qLmN3xY7bWc", "2001:db8:0:1::/64", "docker", None),
    ]
    assert plan.leases[0] == plan.pools[0].lease(plan.leases[0].address, 5.0)  # the driver's own row
    assert plan.released_blocks == ["Pp0oI9uY8tR7eW6q (192.168.2.0/24)"]
    assert {family: (str(main.network), main.block) for family, main in plan.mains.items()} == {
        4: ("192.168.0.0/16", 24),
        6: ("2001:db8::/56", 64),
    }
    assert plan.refused == []


def test_what_go_leaves_out_or_writes_as_null_is_accepted() -> None:
    minimal = {"v6": "", "v6ab": 0, "v4": "10.0.0.0/8", "v4ab": 24, "allocated": None, "free": None}
    assert plan_gipam(encode(minimal), now=0).pools == []
    fresh = {
        **minimal,
        "allocated": [{"id": "abc", "v": 4, "pool": "10.0.0.0/24", "idx": 1, "allocated": None, "free": None}],
    }
    plan = plan_gipam(encode(fresh), now=0)
    assert [pool.id for pool in plan.pools] == ["abc"] and plan.leases == [] and list(plan.mains) == [4]


def test_the_broadcast_gipam_hands_out_is_refused_with_a_reason() -> None:
    block = {**BLOCK_V4, "allocated": ["192.168.1.1", "192.168.1.255"], "free": []}
    plan = plan_gipam(encode(document(allocated=[block])), now=0)
    assert [lease.ip for lease in plan.leases] == ["192.168.1.1"]
    assert plan.refused == [
        (
            "192.168.1.255 of pool R0KGSOeJ4n3thSpz",
            "the broadcast address of 192.168.1.0/24, which gipam hands out by mistake; "
            "give that container another address",
        )
    ]


def test_a_block_too_small_to_serve_is_refused_whole() -> None:
    block = {**BLOCK_V4, "pool": "192.168.1.0/31", "allocated": ["192.168.1.1"], "free": []}
    plan = plan_gipam(encode(document(allocated=[block], v4ab=31)), now=0)
    assert plan.pools == [] and plan.leases == []
    assert plan.refused == [
        ("pool R0KGSOeJ4n3thSpz (192.168.1.0/31)", "a /31 block: cnipam-docker serves IPv4 pools up to /30")
    ]


def block(**changes: object) -> dict[str, object]:
    return {**BLOCK_V4, **changes}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON: Expecting value at line 1 column 1"),
        (b'{"v4": "10.0.0.0/8",', "not JSON"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object with v4/v6 and allocated, got a list"),
        (b'{"pools": []}', "no gipam keys (v4, v6, allocated) in it"),
        (encode(document(v4="10.0.0.0")), "v4: '10.0.0.0' has no prefix length"),
        (encode(document(v4="10.0.0.1/8")), "v4: 10.0.0.1/8 has host bits set"),
        (encode(document(v4="2001:db8::/32")), "v4: 2001:db8::/32 is not an IPv4 subnet"),
        (encode(document(v4ab=4)), "v4ab: /4 blocks do not fit in v4 192.168.0.0/16"),
        (encode(document(v4idx=-1)), "v4idx: expected a non-negative integer, got -1"),
        (encode(document(allocated={"id": "x"})), "allocated: expected a list, got an object"),
        (encode(document(allocated=["x"])), "allocated[0]: expected a block object, got a string"),
        (encode(document(allocated=[block(id=7)])), "allocated[0]: id must be a non-empty string, got a number"),
        (encode(document(allocated=[block(v=5)])), "block R0KGSOeJ4n3thSpz: v must be 4 or 6, got 5"),
        (encode(document(allocated=[block(v=6)])), "block R0KGSOeJ4n3thSpz pool: 192.168.1.0/24 is not an IPv6 subnet"),
        (encode(document(allocated=[block(pool="192.168.1.300/24")])), "block R0KGSOeJ4n3thSpz pool"),
        (encode(document(allocated=[block(idx="4")])), "block R0KGSOeJ4n3thSpz idx: expected a non-negative integer"),
        (
            encode(document(allocated=[block(allocated=["192.168.9.1"])])),
            "192.168.9.1 is outside the block's pool 192.168.1.0/24",
        ),
        (encode(document(allocated=[block(allocated=["2001:db8::1"])])), "2001:db8::1 is outside the block's pool"),
        (encode(document(allocated=[block(allocated=["nonsense"])])), "nonsense"),
        (encode(document(allocated=[block(allocated=[1])])), "expected address strings, got a number"),
        (encode(document(allocated=[block(allocated=["192.168.1.1", "192.168.1.1"])])), "192.168.1.1 appears twice"),
        (
            encode(document(allocated=[block(free=["192.168.1.1"], allocated=["192.168.1.1"])])),
            "192.168.1.1 is both allocated and free",
        ),
        (encode(document(allocated=[BLOCK_V4, BLOCK_V4])), "pool id 'R0KGSOeJ4n3thSpz' appears twice"),
        (
            encode(document(free=[block(id="other", pool="192.168.1.128/25", allocated=[], free=[])])),
            "block other (192.168.1.128/25) overlaps block R0KGSOeJ4n3thSpz",
        ),
    ],
)
def test_a_file_that_is_not_gipam_state_is_refused_with_one_clear_message(raw: bytes, message: str) -> None:
    with pytest.raises(GipamFileError) as caught:
        plan_gipam(raw, now=0)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
