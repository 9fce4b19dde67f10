"""Matching upstream records against the config before anything is imported."""

from cnipam.core.addresses import parse_ip
from cnipam.core.ipam_dialect import parse_ipam
from cnipam.migration.plan import Found, Position, plan

CONFIG = parse_ipam({"ipam": {"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.253"}})


def found(text: str, **kw: object) -> Found:
    family, address = parse_ip(text)
    return Found(family, address, **kw)  # type: ignore[arg-type]


def test_every_refusal_says_why() -> None:
    result = plan(
        [
            found("10.0.0.1", gateway=True),  # upstream's default gateway, not the config's
            found("10.0.0.253", owner_id="x"),  # the config's gateway, leased upstream
            found("10.0.1.5", owner_id="y"),
            found("10.0.0.7", owner_id="z"),
            found("10.0.0.8", owner_id="z"),  # a second address for the same id
        ],
        [Position(*parse_ip("10.0.0.7"))],
        CONFIG,
        "net",
        moves_on_release=True,
    )
    assert dict(result.refused) == {
        "10.0.0.1": "a gateway of 10.0.0.0/24, but the config's gateway there is 10.0.0.253",
        "10.0.0.253": "leased upstream, but it is the config's gateway of 10.0.0.0/24",
        "10.0.1.5": "outside every configured pool",
        "10.0.0.8": "id 'z' already holds 10.0.0.7 in the same pool",
    }
    assert [(lease.ip, lease.handle) for lease in result.leases] == [("10.0.0.7", "id:z")]
    assert result.cursors["10.0.0.0/24"].address == parse_ip("10.0.0.7")[1]


def test_a_position_outside_every_pool_is_a_note_not_a_refusal() -> None:
    result = plan([], [Position(*parse_ip("192.168.0.9"))], CONFIG, "net", moves_on_release=True)
    assert result.cursors == {} and result.refused == [] and "192.168.0.9" in result.notes[0]
