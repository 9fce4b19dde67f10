"""The installed plugin driven as a CNI runtime drives it: environment + stdin in, one
JSON document on stdout, exit status. Nothing here imports cnipam.

Upstream behaviour and the bugs (B1..B14) cnipam fixes: shared/reference/ecs-ipam.md.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugin_calls import BASE_ENV, RunPlugin
from tests.support.store_files import held, snapshot

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
V4 = {"ipv4-subnet": "10.0.0.0/24"}
V6 = {"ipv6-subnet": "2001:db8::/64"}
DUAL = {**V4, **V6}


def ecs(ipam: dict[str, Any], version: str = "1.0.0", name: str = "net1", **top: Any) -> dict[str, Any]:
    """A network config in the ecs-ipam dialect."""
    return {"cniVersion": version, "name": name, "type": "ecs-bridge", "ipam": {"type": "ecs-ipam", **ipam}, **top}


def addresses(result: dict[str, Any]) -> list[str]:
    return [entry["address"] for entry in result["ips"]]


def add_ok(
    run_plugin: RunPlugin,
    config: dict[str, Any],
    env_extra: dict[str, str | None] | None = None,
    exe: str | None = None,
) -> dict[str, Any]:
    run = run_plugin("ADD", config, env_extra, exe)
    assert run.code == 0, run
    assert isinstance(run.out, dict), run
    return run.out


def ok_silent(
    run_plugin: RunPlugin, command: str, config: dict[str, Any], env_extra: dict[str, str | None] | None = None
) -> None:
    """DEL, CHECK, GC and STATUS succeed with exit 0 and print nothing."""
    run = run_plugin(command, config, env_extra)
    assert (run.code, run.out) == (0, None), run


def assert_refused(
    run_plugin: RunPlugin,
    db_path: Path,
    command: str,
    config: dict[str, Any] | bytes,
    code: int,
    names: tuple[str, ...],
    env_extra: dict[str, str | None] | None = None,
    in_details: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A refused request: exit 1, one JSON error object with `code` whose msg names the bad
    key/value, no traceback (checked by run_plugin for every call), and the store untouched."""
    before = snapshot(db_path)
    run = run_plugin(command, config, env_extra)
    assert run.code == 1, run
    error = run.out
    assert isinstance(error, dict), run
    assert set(error) <= {"cniVersion", "code", "msg", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["msg"], str) and error["msg"], error
    for name in names:
        assert name in error["msg"], f"{name!r} not named in {error}"
    for name in in_details:
        assert name in error.get("details", ""), f"{name!r} not in the details of {error}"
    assert snapshot(db_path) == before, "a refused request changed the store"
    return error


@pytest.fixture
def seeded(run_plugin: RunPlugin, db_path: Path) -> dict[str, Any]:
    """A store holding one dual-stack lease (id `seed`), so that 'unchanged' means something."""
    return add_ok(run_plugin, ecs({**DUAL, "id": "seed"}))


# -- protocol surface -------------------------------------------------------------------


@pytest.mark.parametrize("exe_fixture", ["plugin_exe", "ecs_exe"])
def test_flags_need_no_cni_environment(exe_fixture: str, request: pytest.FixtureRequest) -> None:
    exe = request.getfixturevalue(exe_fixture)
    caps = subprocess.run([exe, "--capabilities"], env=BASE_ENV, capture_output=True, timeout=30)
    assert caps.returncode == 0 and caps.stderr == b""
    assert json.loads(caps.stdout) == {"capabilities": ["awsvpc-network-mode"]}
    version = subprocess.run([exe, "--version"], env=BASE_ENV, capture_output=True, timeout=30)
    assert version.returncode == 0 and version.stderr == b""
    info = json.loads(version.stdout)
    assert set(info) == {"version", "dirty", "gitShortHash"}
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["dirty"], bool) and isinstance(info["gitShortHash"], str)


@pytest.mark.parametrize("version", VERSIONS)
def test_version_command_echoes_the_requested_version(run_plugin: RunPlugin, version: str) -> None:
    run = run_plugin("VERSION", {"cniVersion": version})
    assert run.code == 0
    assert run.out == {"cniVersion": version, "supportedVersions": list(VERSIONS)}


def test_version_command_with_empty_stdin(run_plugin: RunPlugin) -> None:
    run = run_plugin("VERSION", b"")
    assert run.code == 0
    assert run.out["supportedVersions"] == list(VERSIONS)
    assert run.out["cniVersion"] in VERSIONS


ROUTES = {
    "ipv4-routes": [{"dst": "169.254.170.2/32"}, {"dst": "169.254.170.0/20", "gw": "10.0.0.1"}],
    "ipv6-routes": [{"dst": "fd00:ec2::254/128"}],
}


@pytest.mark.parametrize("version", VERSIONS)
def test_result_format_of_every_spec_version(run_plugin: RunPlugin, version: str) -> None:
    result = add_ok(run_plugin, ecs({**DUAL, **ROUTES, "id": "fmt"}, version))
    if version in ("0.1.0", "0.2.0"):
        assert result == {
            "cniVersion": version,
            "ip4": {
                "ip": "10.0.0.2/24",
                "gateway": "10.0.0.1",
                "routes": [{"dst": "169.254.170.2/32"}, {"dst": "169.254.170.0/20", "gw": "10.0.0.1"}],
            },
            "ip6": {"ip": "2001:db8::2/64", "gateway": "2001:db8::1", "routes": [{"dst": "fd00:ec2::254/128"}]},
            "dns": {},
        }
        return
    ips: list[dict[str, str]] = [
        {"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
        {"address": "2001:db8::2/64", "gateway": "2001:db8::1"},
    ]
    if version < "1":
        ips = [{"version": "4", **ips[0]}, {"version": "6", **ips[1]}]
    assert result == {
        "cniVersion": version,
        "ips": ips,
        "routes": [*ROUTES["ipv4-routes"], *ROUTES["ipv6-routes"]],
        "dns": {},
    }
    assert "interfaces" not in result


# -- address families and gateways ------------------------------------------------------


def test_ipv4_only_allocates_in_order_from_network_plus_two(run_plugin: RunPlugin, db_path: Path) -> None:
    ipam = {"ipv4-subnet": "169.254.172.0/22"}
    for n in range(2, 6):
        result = add_ok(run_plugin, ecs({**ipam, "id": f"task-{n}"}))
        assert result["ips"] == [{"address": f"169.254.172.{n}/22", "gateway": "169.254.172.1"}]
        assert "routes" not in result
    assert sorted(held(db_path)) == sorted((f"169.254.172.{n}", f"id:task-{n}") for n in range(2, 6))


def test_ipv6_only(run_plugin: RunPlugin) -> None:
    assert add_ok(run_plugin, ecs({**V6, "id": "a"}))["ips"] == [
        {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}
    ]
    assert addresses(add_ok(run_plugin, ecs({**V6, "id": "b"}))) == ["2001:db8::3/64"]


def test_dual_stack_allocates_one_address_per_family(run_plugin: RunPlugin, db_path: Path) -> None:
    assert addresses(add_ok(run_plugin, ecs({**DUAL, "id": "a"}))) == ["10.0.0.2/24", "2001:db8::2/64"]
    assert addresses(add_ok(run_plugin, ecs({**DUAL, "id": "b"}))) == ["10.0.0.3/24", "2001:db8::3/64"]
    assert sorted(held(db_path)) == [
        ("10.0.0.2", "id:a"),
        ("10.0.0.3", "id:b"),
        ("2001:db8::2", "id:a"),
        ("2001:db8::3", "id:b"),
    ]


README_DUAL_STACK = {  # the dual-stack example of upstream's README (seeds/002), verbatim
    "type": "ecs-ipam",
    "id": "container-12345",
    "ipv4-subnet": "10.0.0.0/24",
    "ipv4-address": "10.0.0.2/24",
    "ipv4-gateway": "10.0.0.1",
    "ipv4-routes": [{"dst": "169.254.170.2/32"}],
    "ipv6-subnet": "2001:db8::/64",
    "ipv6-address": "2001:db8::2/64",
    "ipv6-gateway": "2001:db8::1",
    "ipv6-routes": [{"dst": "fd00:ec2::254/128"}],
}


def test_readme_dual_stack_example_works_with_its_id(run_plugin: RunPlugin, ecs_exe: str, db_path: Path) -> None:
    """B1: upstream checks the id of an explicit IPv6 address against the IPv4 keys, so the
    README's own example fails (and leaks the IPv4 half). cnipam must serve it."""
    config = {"cniVersion": "0.3.0", "name": "ecs-bridge", "type": "ecs-bridge", "ipam": README_DUAL_STACK}
    result = add_ok(run_plugin, config, exe=ecs_exe)
    assert result == {
        "cniVersion": "0.3.0",
        "ips": [
            {"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
            {"version": "6", "address": "2001:db8::2/64", "gateway": "2001:db8::1"},
        ],
        "routes": [{"dst": "169.254.170.2/32"}, {"dst": "fd00:ec2::254/128"}],
        "dns": {},
    }
    assert sorted(held(db_path)) == [("10.0.0.2", "id:container-12345"), ("2001:db8::2", "id:container-12345")]
    # The same id again is refused and changes nothing; DEL by id frees both; ADD works again.
    assert_refused(run_plugin, db_path, "ADD", config, 100, ("container-12345",))
    ok_silent(run_plugin, "DEL", config)
    assert held(db_path) == []
    assert addresses(add_ok(run_plugin, config, exe=ecs_exe)) == ["10.0.0.2/24", "2001:db8::2/64"]


def test_gateway_defaults_to_network_plus_one(run_plugin: RunPlugin) -> None:
    result = add_ok(run_plugin, ecs({"ipv4-subnet": "192.168.7.0/25", "ipv6-subnet": "fd00:1:2:3::/64", "id": "a"}))
    assert result["ips"] == [
        {"address": "192.168.7.2/25", "gateway": "192.168.7.1"},
        {"address": "fd00:1:2:3::2/64", "gateway": "fd00:1:2:3::1"},
    ]


def test_explicit_gateway_is_skipped_and_the_first_address_is_dot_one(run_plugin: RunPlugin, db_path: Path) -> None:
    ipam = {"ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.8"}
    got = [addresses(add_ok(run_plugin, ecs({**ipam, "id": f"g{n}"})))[0] for n in range(9)]
    assert got == [f"10.0.0.{n}/24" for n in (1, 2, 3, 4, 5, 6, 7, 9, 10)]
    assert_refused(
        run_plugin,
        db_path,
        "ADD",
        ecs({**ipam, "id": "x", "ipv4-address": "10.0.0.8/24"}),
        7,
        ("ipam.ipv4-address", "10.0.0.8"),
    )


def test_ipv6_all_ones_address_is_usable_and_a_126_then_exhausts(run_plugin: RunPlugin, db_path: Path) -> None:
    """A /126 has ::0 (network, reserved), ::1 (gateway), then ::2 and ::3: IPv6 has no broadcast."""
    ipam = {"ipv6-subnet": "2001:db8:5::/126"}
    assert add_ok(run_plugin, ecs({**ipam, "id": "a"}))["ips"] == [
        {"address": "2001:db8:5::2/126", "gateway": "2001:db8:5::1"}
    ]
    assert addresses(add_ok(run_plugin, ecs({**ipam, "id": "b"}))) == ["2001:db8:5::3/126"]
    assert_refused(run_plugin, db_path, "ADD", ecs({**ipam, "id": "c"}), 101, ("2001:db8:5::/126",))
    # The last address of a /64 can be asked for explicitly.
    last = "2001:db8::ffff:ffff:ffff:ffff/64"
    assert addresses(add_ok(run_plugin, ecs({**V6, "id": "d", "ipv6-address": last}))) == [last]


def test_two_subnets_with_their_own_gateways_share_one_store(run_plugin: RunPlugin, db_path: Path) -> None:
    """B3: upstream can reserve only one IPv4 gateway per DB (its marker trips the id check)."""
    a = add_ok(run_plugin, ecs({"ipv4-subnet": "10.0.0.0/24", "id": "a"}))
    b = add_ok(run_plugin, ecs({"ipv4-subnet": "10.1.0.0/24", "ipv4-gateway": "10.1.0.9", "id": "b"}, name="net2"))
    c = add_ok(run_plugin, ecs({"ipv4-subnet": "10.0.0.0/24", "id": "c"}))
    assert a["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert b["ips"] == [{"address": "10.1.0.1/24", "gateway": "10.1.0.9"}]
    assert c["ips"] == [{"address": "10.0.0.3/24", "gateway": "10.0.0.1"}]
    assert sorted(held(db_path)) == [("10.0.0.2", "id:a"), ("10.0.0.3", "id:c"), ("10.1.0.1", "id:b")]


def test_changing_the_subnet_does_not_break_allocation(run_plugin: RunPlugin, db_path: Path) -> None:
    """B6: upstream keeps one lastKnownIP for every subnet; once it lies outside the current
    subnet, every automatic ADD fails. cnipam keeps the position per pool."""
    wide = {"ipv4-subnet": "10.0.0.0/16"}
    assert addresses(add_ok(run_plugin, ecs({**wide, "id": "a", "ipv4-address": "10.0.200.5/16"}))) == ["10.0.200.5/16"]
    assert addresses(add_ok(run_plugin, ecs({**V4, "id": "b"}))) == ["10.0.0.2/24"]
    assert addresses(add_ok(run_plugin, ecs({**wide, "id": "c"}))) == ["10.0.200.6/16"]


def test_relative_store_path_is_relative_to_the_working_directory(run_plugin: RunPlugin, tmp_path: Path) -> None:
    """B12: upstream fails on a bare file name (`mkdir : no such file or directory`)."""
    add_ok(run_plugin, ecs({**V4, "id": "a"}), {"IPAM_DB_PATH": "bare.db"})
    add_ok(run_plugin, ecs({**V4, "id": "b"}), {"IPAM_DB_PATH": "nested/dir/ipam.db"})
    assert held(tmp_path / "bare.db") == [("10.0.0.2", "id:a")]
    assert held(tmp_path / "nested" / "dir" / "ipam.db") == [("10.0.0.2", "id:b")]


# -- ownership: ids, attachments, DEL ----------------------------------------------------


def test_add_for_an_id_already_holding_an_address_is_refused(
    run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any]
) -> None:
    for ipam in (DUAL, V4, V6, {**V4, "ipv4-address": "10.0.0.77/24"}):
        assert_refused(run_plugin, db_path, "ADD", ecs({**ipam, "id": "seed"}), 100, ("seed",))
    assert sorted(held(db_path)) == [("10.0.0.2", "id:seed"), ("2001:db8::2", "id:seed")]


def test_add_repeated_for_the_same_attachment_returns_the_same_lease(run_plugin: RunPlugin, db_path: Path) -> None:
    env: dict[str, str | None] = {"CNI_CONTAINERID": "c0ffee"}
    first = add_ok(run_plugin, ecs(DUAL), env)
    before = snapshot(db_path)
    assert add_ok(run_plugin, ecs(DUAL), env) == first
    assert snapshot(db_path) == before
    # Another interface of the same container is another attachment.
    other = add_ok(run_plugin, ecs(DUAL), {"CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth1"})
    assert addresses(other) == ["10.0.0.3/24", "2001:db8::3/64"]
    assert len(held(db_path)) == 4


def test_del_is_idempotent(run_plugin: RunPlugin, db_path: Path) -> None:
    ok_silent(run_plugin, "DEL", ecs({**V4, "id": "never-added"}))  # empty store
    add_ok(run_plugin, ecs({**V4, "id": "a"}))
    add_ok(run_plugin, ecs(V4), {"CNI_CONTAINERID": "ctr"})
    for _ in range(2):
        ok_silent(run_plugin, "DEL", ecs({**V4, "id": "a"}))
        ok_silent(run_plugin, "DEL", ecs(V4), {"CNI_CONTAINERID": "ctr"})
        ok_silent(run_plugin, "DEL", ecs({**V4, "ipv4-address": "10.0.0.99/24"}))
        ok_silent(run_plugin, "DEL", ecs({**V4, "id": "unknown"}))
        assert held(db_path) == []


def test_del_with_id_releases_both_families(run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any]) -> None:
    add_ok(run_plugin, ecs({**DUAL, "id": "other"}))
    ok_silent(run_plugin, "DEL", ecs({**DUAL, "id": "seed"}))
    assert sorted(held(db_path)) == [("10.0.0.3", "id:other"), ("2001:db8::3", "id:other")]


def test_del_with_only_an_ipv4_address_releases_exactly_that_address(
    run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any]
) -> None:
    add_ok(run_plugin, ecs({**DUAL, "id": "other"}))
    ok_silent(run_plugin, "DEL", ecs({**DUAL, "ipv4-address": "10.0.0.2/24"}))
    assert sorted(held(db_path)) == [("10.0.0.3", "id:other"), ("2001:db8::2", "id:seed"), ("2001:db8::3", "id:other")]


def test_del_without_any_owner_is_refused(run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any]) -> None:
    assert_refused(run_plugin, db_path, "DEL", ecs(DUAL), 4, ("ipam.id", "CNI_CONTAINERID"))


@pytest.mark.parametrize("subnet", ["203.0.113.0/24", "60.0.0.0/24", "20.0.0.0/24"])
def test_id_lookups_in_ranges_not_starting_with_1(run_plugin: RunPlugin, db_path: Path, subnet: str) -> None:
    """B2: upstream finds ids only under keys starting with "1", and takes "6..." keys for IPv6."""
    prefix = subnet.rsplit(".", 1)[0]
    ipam = {"ipv4-subnet": subnet, "ipv6-subnet": "2001:db8:6::/64"}
    assert addresses(add_ok(run_plugin, ecs({**ipam, "id": "t"}))) == [f"{prefix}.2/24", "2001:db8:6::2/64"]
    assert_refused(run_plugin, db_path, "ADD", ecs({"ipv4-subnet": subnet, "id": "t"}), 100, ("'t'",))
    ok_silent(run_plugin, "DEL", ecs({**ipam, "id": "t"}))
    assert held(db_path) == []
    # Upstream's DEL here poisoned lastKnownIPv6 and broke every later automatic IPv6 ADD.
    assert addresses(add_ok(run_plugin, ecs({"ipv6-subnet": "2001:db8:6::/64", "id": "u"}))) == ["2001:db8:6::3/64"]
    assert addresses(add_ok(run_plugin, ecs({"ipv4-subnet": subnet, "id": "v"}))) == [f"{prefix}.3/24"]


def test_all_or_nothing_across_families(run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any]) -> None:
    """B4: the IPv6 half fails (its requested address is taken), so the IPv4 half is not kept either."""
    both = {**DUAL, "id": "late", "ipv4-address": "10.0.0.50/24", "ipv6-address": "2001:db8::2/64"}
    assert_refused(run_plugin, db_path, "ADD", ecs(both), 100, ("2001:db8::2",))
    automatic_v4 = {**DUAL, "id": "late", "ipv6-address": "2001:db8::2/64"}
    assert_refused(run_plugin, db_path, "ADD", ecs(automatic_v4), 100, ("2001:db8::2",))
    # The id holds nothing, the IPv4 address is free, and the next automatic ADD is unaffected.
    assert addresses(add_ok(run_plugin, ecs({**V4, "id": "late", "ipv4-address": "10.0.0.50/24"}))) == ["10.0.0.50/24"]
    assert addresses(add_ok(run_plugin, ecs({**V6, "id": "late"}))) == ["2001:db8::3/64"]


# -- CHECK, GC, STATUS -------------------------------------------------------------------


def test_check_after_add_succeeds_and_a_forged_prev_result_fails(run_plugin: RunPlugin, db_path: Path) -> None:
    env: dict[str, str | None] = {"CNI_CONTAINERID": "chk"}
    for version in ("0.4.0", "1.0.0", "1.1.0"):
        ok_silent(run_plugin, "DEL", ecs(DUAL, version), env)
        result = add_ok(run_plugin, ecs(DUAL, version), env)
        ok_silent(run_plugin, "CHECK", ecs(DUAL, version), env)
        ok_silent(run_plugin, "CHECK", ecs(DUAL, version, prevResult=result), env)
        forged = json.loads(json.dumps(result))
        forged["ips"][1]["address"] = "2001:db8::99/64"
        assert_refused(run_plugin, db_path, "CHECK", ecs(DUAL, version, prevResult=forged), 102, ("2001:db8::99",), env)
    add_ok(run_plugin, ecs({**V4, "id": "byid"}))
    ok_silent(run_plugin, "CHECK", ecs({**V4, "id": "byid"}))
    assert_refused(run_plugin, db_path, "CHECK", ecs({**V4, "id": "nobody"}), 102, ("nobody",))


def test_check_after_del_fails(run_plugin: RunPlugin, db_path: Path) -> None:
    env: dict[str, str | None] = {"CNI_CONTAINERID": "gone"}
    add_ok(run_plugin, ecs(V4), env)
    ok_silent(run_plugin, "DEL", ecs(V4), env)
    assert_refused(run_plugin, db_path, "CHECK", ecs(V4), 102, ("10.0.0.0/24",), env)


def test_check_needs_cni_0_4_0(run_plugin: RunPlugin, db_path: Path) -> None:
    env: dict[str, str | None] = {"CNI_CONTAINERID": "old"}
    add_ok(run_plugin, ecs(V4, "0.3.1"), env)
    assert_refused(run_plugin, db_path, "CHECK", ecs(V4, "0.3.1"), 1, ("CHECK",), env, in_details=("0.3.1",))


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_keeps_listed_attachments_and_releases_the_rest_of_that_network(
    run_plugin: RunPlugin, db_path: Path, key: str
) -> None:
    for container in ("keep", "drop1", "drop2"):
        add_ok(run_plugin, ecs(DUAL, name="net1"), {"CNI_CONTAINERID": container})
    add_ok(run_plugin, ecs(DUAL, name="net1"), {"CNI_CONTAINERID": "keep", "CNI_IFNAME": "eth1"})
    add_ok(run_plugin, ecs({"ipv4-subnet": "10.7.0.0/24"}, name="net2"), {"CNI_CONTAINERID": "drop1"})
    add_ok(run_plugin, ecs({**DUAL, "id": "ecs-task"}, name="net1"))  # no attachment: not GC's to judge
    gc = {"cniVersion": "1.1.0", "name": "net1", key: [{"containerID": "keep", "ifname": "eth0"}]}
    ok_silent(run_plugin, "GC", gc)
    assert sorted(held(db_path)) == sorted(
        [
            ("10.0.0.2", "cni:net1/keep/eth0"),
            ("2001:db8::2", "cni:net1/keep/eth0"),
            ("10.7.0.2", "cni:net2/drop1/eth0"),
            ("10.0.0.6", "id:ecs-task"),
            ("2001:db8::6", "id:ecs-task"),
        ]
    )
    ok_silent(run_plugin, "GC", gc)  # nothing left to collect: still fine


def test_gc_refusals(run_plugin: RunPlugin, db_path: Path) -> None:
    add_ok(run_plugin, ecs(V4), {"CNI_CONTAINERID": "c1"})
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    assert_refused(
        run_plugin, db_path, "GC", {"cniVersion": "1.0.0", "name": "net1", "cni.dev/valid-attachments": []}, 1, ("GC",)
    )
    bad = {"cniVersion": "1.1.0", "name": "net1", "cni.dev/valid-attachments": [*valid, {"containerID": 7}]}
    assert_refused(run_plugin, db_path, "GC", bad, 7, ("cni.dev/valid-attachments[1]",))
    assert_refused(
        run_plugin,
        db_path,
        "GC",
        {"cniVersion": "1.1.0", "name": "net1", "cni.dev/valid-attachments": "c1"},
        7,
        ("cni.dev/valid-attachments",),
    )


def test_status_reports_an_exhausted_subnet(run_plugin: RunPlugin, db_path: Path) -> None:
    ipam = {"ipv4-subnet": "10.5.0.0/29"}  # .1 gateway, .2-.6 usable, .7 broadcast
    ok_silent(run_plugin, "STATUS", ecs(ipam, "1.1.0"))
    for n in range(5):
        add_ok(run_plugin, ecs({**ipam, "id": f"s{n}"}))
    assert_refused(run_plugin, db_path, "STATUS", ecs(ipam, "1.1.0"), 50, ("10.5.0.0/29",))
    assert_refused(run_plugin, db_path, "ADD", ecs({**ipam, "id": "s5"}), 101, ("10.5.0.0/29",))
    ok_silent(run_plugin, "STATUS", ecs({"ipv4-subnet": "10.6.0.0/29"}, "1.1.0"))  # another subnet is not full
    ok_silent(run_plugin, "DEL", ecs({**ipam, "id": "s3"}))
    ok_silent(run_plugin, "STATUS", ecs(ipam, "1.1.0"))
    assert_refused(run_plugin, db_path, "STATUS", ecs(ipam, "1.0.0"), 1, ("STATUS",))


# -- refused requests: right code, message names the culprit, store unchanged -------------

HUGE = b'{"cniVersion":"1.0.0","name":"net1","pad":"' + b"x" * (1 << 20) + b'","ipam":{"ipv4-subnet":"10.0.0.0/24"}}'

REFUSALS: list[tuple[str, str, dict[str, Any] | bytes, dict[str, str | None] | None, int, tuple[str, ...]]] = [
    (
        "host-bits-v4",
        "ADD",
        ecs({"ipv4-subnet": "10.0.0.5/24", "id": "x"}),
        None,
        7,
        ("ipam.ipv4-subnet", "10.0.0.5/24"),
    ),
    (
        "host-bits-v4-broadcast",
        "ADD",
        ecs({"ipv4-subnet": "10.0.0.255/24", "id": "x"}),
        None,
        7,
        ("ipam.ipv4-subnet", "10.0.0.255/24"),
    ),
    (
        "host-bits-v6",
        "ADD",
        ecs({"ipv6-subnet": "2001:db8::5/64", "id": "x"}),
        None,
        7,
        ("ipam.ipv6-subnet", "2001:db8::5/64"),
    ),
    ("host-bits-on-del", "DEL", ecs({"ipv4-subnet": "10.0.0.5/24", "id": "seed"}), None, 7, ("ipam.ipv4-subnet",)),
    (
        "route-no-dst-v4",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-routes": [{"gw": "10.0.0.1"}]}),
        None,
        7,
        ("ipam.ipv4-routes[0]", "dst"),
    ),
    (
        "route-no-dst-v6",
        "ADD",
        ecs({**DUAL, "id": "x", "ipv6-routes": [{"dst": "fd00::/8"}, {}]}),
        None,
        7,
        ("ipam.ipv6-routes[1]", "dst"),
    ),
    (
        "route-wrong-family",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-routes": [{"dst": "fd00::/8"}]}),
        None,
        7,
        ("ipam.ipv4-routes[0]", "fd00::/8"),
    ),
    (
        "address-outside",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-address": "10.9.0.2/24"}),
        None,
        7,
        ("ipam.ipv4-address", "10.9.0.2"),
    ),
    (
        "address-prefix",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-address": "10.0.0.9/16"}),
        None,
        7,
        ("ipam.ipv4-address", "/16"),
    ),
    (
        "address-broadcast",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-address": "10.0.0.255/24"}),
        None,
        7,
        ("ipam.ipv4-address", "10.0.0.255"),
    ),
    (
        "address-is-gateway",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-address": "10.0.0.1/24"}),
        None,
        7,
        ("ipam.ipv4-address", "10.0.0.1"),
    ),
    (
        "v6-address-no-subnet",
        "ADD",
        ecs({**V4, "id": "x", "ipv6-address": "2001:db8::9/64"}),
        None,
        7,
        ("ipam.ipv6-address", "ipam.ipv6-subnet"),
    ),
    (
        "gateway-outside",
        "ADD",
        ecs({**V4, "id": "x", "ipv4-gateway": "10.1.0.1"}),
        None,
        7,
        ("ipam.ipv4-gateway", "10.1.0.1"),
    ),
    ("subnet-too-small", "ADD", ecs({"ipv4-subnet": "10.0.0.0/31", "id": "x"}), None, 7, ("ipam.ipv4-subnet", "/31")),
    (
        "subnet-not-ipv6",
        "ADD",
        ecs({"ipv6-subnet": "10.0.0.0/24", "id": "x"}),
        None,
        7,
        ("ipam.ipv6-subnet", "10.0.0.0/24"),
    ),
    ("no-subnet", "ADD", ecs({"id": "x"}), None, 7, ("ipv4-subnet", "ipv6-subnet")),
    ("id-not-string", "ADD", ecs({**V4, "id": 12}), None, 7, ("ipam.id",)),
    ("missing-ipam", "ADD", {"cniVersion": "1.0.0", "name": "net1"}, None, 7, ("ipam",)),
    ("bad-network-name", "ADD", ecs({**V4, "id": "x"}, name="bad name"), None, 7, ("name", "bad name")),
    (
        "bad-timeout",
        "ADD",
        ecs({**V4, "id": "x"}),
        {"IPAM_DB_CONNECTION_TIMEOUT": "soon"},
        4,
        ("IPAM_DB_CONNECTION_TIMEOUT", "soon"),
    ),
    (
        "negative-timeout",
        "ADD",
        ecs({**V4, "id": "x"}),
        {"IPAM_DB_CONNECTION_TIMEOUT": "-1s"},
        4,
        ("IPAM_DB_CONNECTION_TIMEOUT", "-1s"),
    ),
    ("missing-ifname", "ADD", ecs({**V4, "id": "x"}), {"CNI_IFNAME": None}, 4, ("CNI_IFNAME",)),
    ("missing-ifname-del", "DEL", ecs({**V4, "id": "seed"}), {"CNI_IFNAME": None}, 4, ("CNI_IFNAME",)),
    ("bad-ifname", "ADD", ecs({**V4, "id": "x"}), {"CNI_IFNAME": "eth0/../x"}, 4, ("CNI_IFNAME",)),
    (
        "bad-containerid",
        "ADD",
        ecs(V4),
        {"CNI_CONTAINERID": "no spaces please"},
        4,
        ("CNI_CONTAINERID", "no spaces please"),
    ),
    ("unknown-command", "FROB", ecs({**V4, "id": "x"}), None, 4, ("FROB",)),
    ("lowercase-command", "add", ecs({**V4, "id": "x"}), None, 4, ("add",)),
    ("non-json", "ADD", b"cniVersion: 1.0.0\n", None, 6, ("JSON",)),
    ("truncated-json", "ADD", b'{"cniVersion": "1.0.0", "ipam": {', None, 6, ("JSON",)),
    ("unterminated-string", "ADD", b'{"cniVersion": "1.0.0", "name": "net1', None, 6, ("JSON",)),
    ("missing-property-name", "ADD", b'{"cniVersion": "1.0.0",}', None, 6, ("JSON",)),
    ("trailing-garbage", "ADD", json.dumps(ecs({**V4, "id": "x"})).encode() + b" {}", None, 6, ("JSON",)),
    ("json-array", "ADD", b"[1, 2]", None, 6, ("object",)),
    ("non-utf8", "ADD", b'{"cniVersion":"1.0.0","name":"\xff\xfe","ipam":{}}', None, 6, ("UTF-8",)),
    ("nul-byte", "ADD", b'{"cniVersion":"1.0.0",\x00"name":"net1"}', None, 6, ("NUL",)),
    ("huge-stdin", "ADD", HUGE, None, 6, ("byte",)),
    (
        "nan",
        "ADD",
        b'{"cniVersion":"1.0.0","name":"net1","x":NaN,"ipam":{"ipv4-subnet":"10.0.0.0/24"}}',
        None,
        6,
        ("NaN",),
    ),
    ("cniversion-number", "ADD", {**ecs({**V4, "id": "x"}), "cniVersion": 1}, None, 1, ("cniVersion",)),
]


@pytest.mark.parametrize(
    ("command", "config", "env_extra", "code", "names"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_requests_change_nothing(
    run_plugin: RunPlugin,
    db_path: Path,
    seeded: dict[str, Any],
    command: str,
    config: dict[str, Any] | bytes,
    env_extra: dict[str, str | None] | None,
    code: int,
    names: tuple[str, ...],
) -> None:
    assert_refused(run_plugin, db_path, command, config, code, names, env_extra)


@pytest.mark.parametrize("version", ["9.9.9", "0.3", "1.0", "v1.0.0", ""])
def test_unsupported_cni_version_is_code_1(
    run_plugin: RunPlugin, db_path: Path, seeded: dict[str, Any], version: str
) -> None:
    assert_refused(run_plugin, db_path, "ADD", ecs({**V4, "id": "x"}, version), 1, (), in_details=(f'"{version}"',))


def test_store_path_under_a_regular_file(run_plugin: RunPlugin, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("plain file\n")
    bad = blocker / "ipam.db"
    run = run_plugin("ADD", ecs({**V4, "id": "x"}), {"IPAM_DB_PATH": str(bad)})
    assert run.code == 1 and run.out["code"] in (4, 5), run
    assert str(bad) in run.out["msg"], run
    assert blocker.read_text() == "plain file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


def test_store_path_that_is_not_a_database(run_plugin: RunPlugin, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    run = run_plugin("ADD", ecs({**V4, "id": "x"}), {"IPAM_DB_PATH": str(junk)})
    assert run.code == 1 and run.out["code"] == 5, run
    assert str(junk) in run.out["msg"], run
    assert junk.read_bytes() == b"this is not SQLite" * 100


def test_store_file_modes(run_plugin: RunPlugin, tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "ipam.db"
    old = os.umask(0o022)
    try:
        add_ok(run_plugin, ecs({**V4, "id": "x"}), {"IPAM_DB_PATH": str(db)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(db) + ".lock").st_mode) == 0o600
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o750, folder
    for leftover in db.parent.iterdir():  # -wal / -shm, if SQLite leaves any, must be private too
        assert stat.S_IMODE(leftover.stat().st_mode) & 0o077 == 0, leftover


# -- host-local's dialect: a DEL touches only its own attachment (issue 12) -------------------


def host_local(ipam: dict[str, Any], version: str = "1.0.0", **top: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "n1", "type": "bridge", "ipam": {"type": "cnipam", **ipam}, **top}


HOST_LOCAL_V4 = {"ranges": [[{"subnet": "10.9.0.0/24"}]]}
REQUEST_FIFTY: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "CNI_ARGS IP=": (host_local(HOST_LOCAL_V4), {"CNI_ARGS": "IgnoreUnknown=1;IP=10.9.0.50"}),
    "args.cni.ips": (host_local(HOST_LOCAL_V4, args={"cni": {"ips": ["10.9.0.50"]}}), {}),
    "runtimeConfig.ips": (host_local({**HOST_LOCAL_V4}, runtimeConfig={"ips": ["10.9.0.50/24"]}), {}),
}


@pytest.mark.parametrize("how", list(REQUEST_FIFTY))
def test_a_refused_request_then_its_del_never_frees_the_holders_address(
    run_plugin: RunPlugin, db_path: Path, how: str
) -> None:
    """podman's sequence: A runs with --ip .50; B asks for .50 too and is refused; podman
    tears B down with a DEL carrying the same arguments. A must keep .50, and the next
    container must not get it."""
    config, env = REQUEST_FIFTY[how]
    if "capabilities" not in config and "runtimeConfig" in config:
        config["capabilities"] = {"ips": True}
    holder = add_ok(run_plugin, config, {"CNI_CONTAINERID": "a", **env})
    assert addresses(holder) == ["10.9.0.50/24"]
    assert_refused(run_plugin, db_path, "ADD", config, 100, ("10.9.0.50",), {"CNI_CONTAINERID": "b", **env})
    ok_silent(run_plugin, "DEL", config, {"CNI_CONTAINERID": "b", **env})
    assert held(db_path) == [("10.9.0.50", "cni:n1/a/eth0")]
    fresh = add_ok(run_plugin, host_local(HOST_LOCAL_V4), {"CNI_CONTAINERID": "c"})
    assert addresses(fresh) != ["10.9.0.50/24"]
    ok_silent(run_plugin, "DEL", config, {"CNI_CONTAINERID": "a", **env})  # the holder's own DEL frees it
    assert ("10.9.0.50", "cni:n1/a/eth0") not in held(db_path)


def test_a_host_local_del_with_a_requested_address_releases_the_whole_attachment(
    run_plugin: RunPlugin, db_path: Path
) -> None:
    """host-local releases by container id and interface; the address on DEL only repeats
    the ADD's arguments, so a dual-stack attachment loses both its addresses."""
    dual = {"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "2001:db8:9::/64"}]]}
    add_ok(run_plugin, host_local(dual), {"CNI_CONTAINERID": "a", "CNI_ARGS": "IgnoreUnknown=1;IP=10.9.0.50"})
    ok_silent(run_plugin, "DEL", host_local(dual), {"CNI_CONTAINERID": "a", "CNI_ARGS": "IgnoreUnknown=1;IP=10.9.0.50"})
    assert held(db_path) == []


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_host_local_dialect_needs_a_container_id(run_plugin: RunPlugin, db_path: Path, command: str) -> None:
    """As skel (and so host-local) answers: code 4 naming the variable; nothing changes."""
    add_ok(run_plugin, host_local(HOST_LOCAL_V4), {"CNI_CONTAINERID": "other"})
    assert_refused(
        run_plugin, db_path, command, host_local(HOST_LOCAL_V4), 4, ("CNI_CONTAINERID",), {"CNI_CONTAINERID": None}
    )


def test_ecs_dialect_keeps_del_by_address_without_a_container(run_plugin: RunPlugin, db_path: Path) -> None:
    """Upstream's documented DEL: "either id or an IP address must be specified"."""
    add_ok(run_plugin, ecs({**V4, "id": "task", "ipv4-address": "10.0.0.9/24"}), {"CNI_CONTAINERID": None})
    ok_silent(run_plugin, "DEL", ecs({**V4, "ipv4-address": "10.0.0.9/24"}), {"CNI_CONTAINERID": None})
    assert held(db_path) == []
