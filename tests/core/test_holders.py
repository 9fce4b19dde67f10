"""core.holders: which leases an operator's release may free without --force."""

from __future__ import annotations

from cnipam.core.holders import release_doubt
from cnipam.core.leases import DOCKER_ENDPOINT, GATEWAY, LEASE, Lease


def lease(handle: str | None = "cni:n/c/eth0", boot: str = "", network: str = "n", slot: str = "4") -> Lease:
    return Lease(4, 0x0A000002, LEASE, "10.0.0.0/24", slot, handle, network, "c", "eth0", 1.0, boot)


def test_only_this_hosts_earlier_boots_are_provably_gone() -> None:
    assert release_doubt(lease(boot="old"), "now", ended=True) is None
    assert release_doubt(lease(boot="now"), "now", ended=False) == "it was made in this boot"
    assert "another host" in str(release_doubt(lease(boot="old"), "now", ended=False))  # etcd: not this host's
    assert "records no boot" in str(release_doubt(lease(boot=""), "now", ended=False))
    assert "boot is unknown" in str(release_doubt(lease(boot="old"), "", ended=False))
    assert "records no holder" in str(release_doubt(lease(handle=None), "now", ended=False))


def test_a_docker_address_is_never_provably_gone_and_a_reservation_is_not_a_lease() -> None:
    docker = lease(handle=None, network="docker:CnipamLocal/10.0.0.0/24/1", slot=DOCKER_ENDPOINT)
    assert "dockerd frees it" in str(release_doubt(docker, "now", ended=False))
    reservation = Lease(4, 0x0A000001, GATEWAY, "10.0.0.0/24", "4", None, "n", "", "", 1.0)
    assert release_doubt(reservation, "now", ended=False) is None  # --gateway has its own rule
