"""cnipamctl, driven as an operator drives it: the installed executable against real
SQLite stores that the installed plugin populated, and migrations of the files the real
upstream tools wrote (tests/fixtures; read-only, so each test works on a copy).

Every refusal must be one line `cnipamctl: ...` on stderr with a non-zero status and
never a traceback; `call` checks the traceback part for every invocation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pty
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.ctl_calls import BASE_ENV, CTL, SCRIPTS, call, ok, plugin, refused
from tests.support.fixture_files import FIXTURES

HOST_LOCAL = next((p for p in ("/usr/lib/cni/host-local", "/opt/cni/bin/host-local") if os.path.exists(p)), None)
LEASE_KEYS = {
    "ip",
    "family",
    "address",
    "kind",
    "pool",
    "slot",
    "handle",
    "network",
    "container_id",
    "ifname",
    "created",
    "boot",
    "netns",
    "gateway",
}


def ips(result: dict[str, Any]) -> list[str]:
    return [entry["address"].split("/")[0] for entry in result["ips"]]


# -- a store populated through the plugin ----------------------------------------------------

NET1 = {
    "cniVersion": "1.0.0",
    "name": "net1",
    "ipam": {"type": "cnipam", "ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "fd00::/64"},
}
NET2 = {"cniVersion": "1.0.0", "name": "net2", "ipam": {"type": "cnipam", "id": "task-1", "ipv4-subnet": "10.0.0.0/24"}}
HL: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "hl",
    "ipam": {"type": "cnipam", "ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10"}]]},
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """net1 (dual-stack, containers a b c), net2 (ecs id task-1, same subnet), hl (host-local ranges)."""
    path = tmp_path / "store.db"
    for container in ("ctr-a", "ctr-b", "ctr-c"):
        plugin("ADD", NET1, container, db=path)
    plugin("ADD", NET2, "ctr-d", db=path)
    plugin("ADD", HL, "ctr-e", db=path)
    return path


def table_ips(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()[1:]]


def test_leases_table_and_json(db: Path) -> None:
    table = ok("--db", str(db), "leases").out
    header = ["ip", "kind", "owner", "container", "ifname", "network", "pool", "boot", "age"]
    assert table.splitlines()[0].split() == header
    expected = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.9.0.1", "10.9.0.10",
                "fd00::1", "fd00::2", "fd00::3", "fd00::4"]  # fmt: skip
    assert table_ips(table) == expected
    assert "id 'task-1'" in table and "gateway reservation" in table and "attachment" in table
    rows = ok(
        "leases", "--json", IPAM_DB_PATH=str(db)
    ).json()  # IPAM_DB_PATH, as the plugin; --db after the command too
    assert [row["ip"] for row in rows] == expected
    assert all(set(row) == LEASE_KEYS for row in rows)
    task = next(row for row in rows if row["handle"] == "id:task-1")
    assert (task["container_id"], task["ifname"], task["network"], task["kind"], task["slot"]) == (
        "ctr-d",
        "eth0",
        "net2",
        "lease",
        "4",
    )
    with open("/proc/sys/kernel/random/boot_id") as boot:  # the plugin records the kernel's boot and the netns
        assert (task["boot"], task["netns"]) == (boot.read().strip(), "/var/run/netns/test")
    assert task["boot"][:8] in table


def test_leases_in_a_pipe_are_plain_lines(db: Path) -> None:
    out = ok("leases", "--db", str(db)).out
    assert "\x1b" not in out and "─" not in out and "│" not in out
    assert all(line == line.rstrip() for line in out.splitlines())
    assert "fd00::/64" in out and len(out.splitlines()) == 12  # nothing cut or wrapped: one line per row


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--network", "net2"], ["10.0.0.5"]),
        (["--network", "hl"], ["10.9.0.1", "10.9.0.10"]),
        (["--subnet", "fd00::/64"], ["fd00::1", "fd00::2", "fd00::3", "fd00::4"]),
        (["--subnet", "10.0.0.4/30"], ["10.0.0.4", "10.0.0.5"]),
        (["--owner", "task-1"], ["10.0.0.5"]),
        (["--owner", "id:task-1"], ["10.0.0.5"]),
        (["--owner", "cni:net1/ctr-b/eth0"], ["10.0.0.3", "fd00::3"]),
        (["--container", "ctr-c"], ["10.0.0.4", "fd00::4"]),
        (["--container", "ctr-c", "--subnet", "fd00::/16"], ["fd00::4"]),
        (["--network", "nonexistent"], []),
    ],
)
def test_leases_filters(db: Path, filters: list[str], expected: list[str]) -> None:
    assert [row["ip"] for row in ok("--db", str(db), "leases", "--json", *filters).json()] == expected


def test_leases_page_with_limit_and_after(db: Path) -> None:
    everything = [row["ip"] for row in ok("--db", str(db), "leases", "--json").json()]
    seen: list[str] = []
    after: list[str] = []
    while True:
        run = ok("--db", str(db), "leases", "--limit", "4", "--json", *after)
        page = [row["ip"] for row in run.json()]
        seen += page
        if not run.err:
            break
        assert run.err == f"cnipamctl: 4 rows shown; the next page: --after {page[-1]}\n"
        after = ["--after", page[-1]]
    assert seen == everything
    table = ok("--db", str(db), "leases", "--limit", "3", "--subnet", "10.0.0.0/24")
    assert table_ips(table.out) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] and "--after 10.0.0.3" in table.err
    assert ok("--db", str(db), "leases", "--after", "fd00::3/64", "--json").json()[0]["ip"] == "fd00::4"
    refused(call("--db", str(db), "leases", "--limit", "0"), status=2, says="--limit")


def test_empty_and_near_miss_inputs_get_a_clear_answer(db: Path) -> None:
    assert [row["ip"] for row in ok("--db", str(db), "show", "10.0.0.3/24", "--json").json()] == ["10.0.0.3"]
    assert "ip:        fd00::3" in ok("--db", str(db), "show", "fd00::3/64").out  # as a CNI result prints it
    refused(call("--db", str(db), "show", ""), says="an empty ADDRESS|OWNER names nothing")
    refused(call("--db", str(db), "release", " ", "--yes"), says="empty")
    refused(call("--db", str(db), "show", "10.0.0.3/33"), says="is not an IP address")
    for flag in ("--container", "--network", "--owner"):
        refused(call("--db", str(db), "leases", flag, ""), status=2, says=flag)
    typo = ok("--db", str(db), "leases", "--network", "nte1")
    assert typo.out == "" and typo.err == "no leases (no lease in the store records network 'nte1')\n"
    assert ok("--db", str(db), "leases", "--network", "net1", "--container", "nobody").err == "no leases\n"


def on_a_terminal(args: list[str], columns: int) -> str:
    """cnipamctl's stdout on a pseudo-terminal `columns` wide."""
    leader, follower = pty.openpty()
    try:
        env = {**BASE_ENV, "COLUMNS": str(columns), "TERM": "dumb"}
        done = subprocess.run([CTL, *args], stdout=follower, stderr=subprocess.PIPE, env=env, timeout=60)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0, done.stderr
    return click_unstyle(b"".join(chunks).decode().replace("\r\n", "\n"))


def click_unstyle(text: str) -> str:
    import click

    return click.unstyle(text)


def test_a_narrow_terminal_leaves_out_decorative_columns_before_cutting_identifying_ones(db: Path) -> None:
    wide = on_a_terminal(["--db", str(db), "leases"], 200).splitlines()
    assert wide[0].split() == ["ip", "kind", "owner", "container", "ifname", "network", "pool", "boot", "age"]
    assert "10.9.0.0/24[10.9.0.10-10.9.0.254]" in "\n".join(wide)
    narrow = on_a_terminal(["--db", str(db), "leases"], 80).splitlines()
    assert narrow[0].split() == ["ip", "owner", "container", "network", "pool"], narrow[0]
    assert all(len(line) <= 80 for line in narrow), narrow
    assert [line.split()[0] for line in narrow[2:]] == table_ips("\n".join(wide[1:]))  # every address whole
    assert "gateway reservation" in "\n".join(narrow) and "id 'task-1'" in "\n".join(narrow)
    usage = on_a_terminal(["--db", str(db), "usage"], 60).splitlines()
    assert usage[0].split() == ["pool", "size", "reserved", "used", "cooling", "free", "percent"]  # the bar went first
    assert "<0.1%" in "\n".join(usage)  # an IPv6 /64 with three leases


def test_leases_into_a_closed_pipe_stops_quietly(db: Path) -> None:
    done = subprocess.run(f"{CTL} --db {db} leases | head -1", shell=True, capture_output=True, text=True, env=BASE_ENV)
    assert done.stdout.split() == ["ip", "kind", "owner", "container", "ifname", "network", "pool", "boot", "age"]
    assert done.stderr == ""


def test_show_by_address_owner_container_and_handle(db: Path) -> None:
    text = ok("--db", str(db), "show", "10.0.0.3").out
    assert "ip:        10.0.0.3" in text and "handle:    cni:net1/ctr-b/eth0" in text and "network:   net1" in text
    shown = {
        target: [row["ip"] for row in ok("--db", str(db), "show", target, "--json").json()]
        for target in ("10.0.0.3", "task-1", "id:task-1", "ctr-a", "cni:net1/ctr-a/eth0", "fd00::0004", "10.0.0.1")
    }
    assert shown == {
        "10.0.0.3": ["10.0.0.3"], "task-1": ["10.0.0.5"], "id:task-1": ["10.0.0.5"], "ctr-a": ["10.0.0.2", "fd00::2"],
        "cni:net1/ctr-a/eth0": ["10.0.0.2", "fd00::2"], "fd00::0004": ["fd00::4"], "10.0.0.1": ["10.0.0.1"],
    }  # fmt: skip
    assert (
        ok("--db", str(db), "show", "ctr-d", "--json").json()[0]["handle"] == "id:task-1"
    )  # the id's lease, by its container


def test_usage(db: Path, tmp_path: Path) -> None:
    usage = {row["pool"]: row for row in ok("--db", str(db), "usage", "--json").json()}
    assert usage["10.0.0.0/24"] == {
        "pool": "10.0.0.0/24",
        "family": 4,
        "network": "net1",
        "size": 254,
        "reserved": 1,
        "used": 4,
        "cooling": 0,
        "free": 249,
        "percent": 2.0,
    }
    assert usage["fd00::/64"]["size"] == 2**64 - 1 and usage["fd00::/64"]["used"] == 3
    hl = usage["10.9.0.0/24[10.9.0.10-10.9.0.254]"]
    assert (hl["size"], hl["reserved"], hl["used"]) == (245, 0, 1)  # its gateway .1 is outside the range
    text = ok("--db", str(db), "usage").out
    assert "10.0.0.0/24" in text and "2.0%" in text and "#" in text
    config = tmp_path / "new.json"
    config.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "new", "ipam": {"type": "cnipam", "subnet": "10.50.0.0/28"}})
    )
    added = {row["pool"]: row for row in ok("--db", str(db), "usage", "--config", str(config), "--json").json()}
    assert added["10.50.0.0/28"] == {
        "pool": "10.50.0.0/28",
        "family": 4,
        "network": "",
        "size": 14,
        "reserved": 1,
        "used": 0,
        "cooling": 0,
        "free": 13,
        "percent": 7.1,
    }
    assert set(added) == set(usage) | {"10.50.0.0/28"}


def test_config_data_dir_chooses_the_store(tmp_path: Path) -> None:
    config = {
        "cniVersion": "1.0.0",
        "name": "dd",
        "ipam": {"type": "cnipam", "subnet": "10.60.0.0/24", "dataDir": str(tmp_path / "dd")},
    }
    plugin("ADD", config, "c1")
    (tmp_path / "dd.json").write_text(json.dumps(config))
    usage = ok(
        "usage", "--config", str(tmp_path / "dd.json"), "--json", IPAM_DB_PATH=str(tmp_path / "elsewhere.db")
    ).json()
    assert [(row["pool"], row["used"]) for row in usage] == [("10.60.0.0/24", 1)]
    assert not (tmp_path / "elsewhere.db").exists()


def test_release_refuses_without_a_terminal_and_releases_with_yes(db: Path) -> None:
    d = str(db)
    refused(call("--db", str(db), "release", "10.0.0.1", "--yes"), says="10.0.0.1 is a gateway reservation")
    before = ok("--db", str(db), "export").out
    refused(call("--db", str(db), "release", "ctr-a", "--force"), says="stdin is not a terminal: pass --yes")
    refused(call("--db", str(db), "release", "10.0.0.2", "--force", stdin="y\n"), says="pass --yes")  # a pipe
    assert ok("--db", str(db), "export").out == before
    released = ok("--db", str(db), "release", "10.0.0.2", "--yes", "--force", "--json").json()
    assert [row["ip"] for row in released] == ["10.0.0.2"]
    assert [row["ip"] for row in ok("--db", str(db), "show", "ctr-a", "--json").json()] == [
        "fd00::2"
    ]  # exactly that address
    assert ok("--db", str(db), "release", "ctr-b", "-y", "--force").out.splitlines() == [
        "released 10.0.0.3 (container 'ctr-b' interface 'eth0')",
        "released fd00::3 (container 'ctr-b' interface 'eth0')",
    ]
    assert [row["ip"] for row in ok("--db", str(db), "release", "task-1", "--yes", "--force", "--json").json()] == [
        "10.0.0.5"
    ]
    assert [row["ip"] for row in ok("--db", d, "release", "cni:net1/ctr-c/eth0", "-y", "--force", "--json").json()] == [
        "10.0.0.4",
        "fd00::4",
    ]
    refused(call("--db", str(db), "show", "10.0.0.1"), says="10.0.0.1")  # gone with the subnet's last lease
    refused(call("--db", str(db), "release", "ctr-b", "--yes", "--force"), says="no lease is held by 'ctr-b'")
    assert plugin("ADD", NET1, "ctr-f", db=db)  # the store still allocates after manual releases
    assert ok("--db", str(db), "check").out == "ok\n"


def test_release_refuses_a_lease_whose_holder_may_run_unless_forced(db: Path, tmp_path: Path) -> None:
    """A lease made in this boot may still be in use: refused, naming its holder and why,
    whatever the confirmation; one of an earlier boot of this host is provably gone."""
    before = ok("--db", str(db), "export").out
    message = refused(call("--db", str(db), "release", "ctr-a", "--yes"), says="may still be in use (2 of 2 leases)")
    assert "10.0.0.2 (container 'ctr-a' interface 'eth0'): it was made in this boot" in message
    assert "its netns /var/run/netns/test is not there, or not visible from here" in message
    assert message.endswith("Nothing was released; if the holder is gone, pass --force")
    refused(call("--db", str(db), "release", "10.0.0.5", "--yes"), says="10.0.0.5 (id 'task-1')")
    assert ok("--db", str(db), "export").out == before
    old = tmp_path / "old.db"
    plugin("ADD", NET1, "ctr-old", db=old)  # this boot's, for the plugin
    earlier = {"CNIPAM_BOOT_ID": "a-later-boot"}  # cnipamctl runs after a reboot
    released = ok("--db", str(old), "release", "ctr-old", "--yes", "--json", **earlier).json()
    assert sorted(row["ip"] for row in released) == ["10.0.0.2", "fd00::2"]


def answer_on_a_terminal(db: Path, target: str, answer: str) -> tuple[int, str]:
    """Run `release` with a pseudo-terminal as stdin and type `answer`."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        done = subprocess.run([CTL, "--db", str(db), "release", target, "--force"], stdin=follower,
                              capture_output=True, text=True, env=BASE_ENV, timeout=60)  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr


def test_release_asks_on_a_terminal(db: Path) -> None:
    status, err = answer_on_a_terminal(db, "ctr-a", "n\n")
    assert status == 1 and "10.0.0.2" in err and "fd00::2" in err and "Release 2 leases of container 'ctr-a'?" in err
    assert err.endswith(
        "? [y/N]: cnipamctl: aborted; nothing was changed\n"
    )  # the answer is echoed on the terminal, not stderr
    assert len(ok("--db", str(db), "show", "ctr-a", "--json").json()) == 2
    status, _ = answer_on_a_terminal(db, "ctr-a", "y\n")
    assert status == 0
    refused(call("--db", str(db), "show", "ctr-a"), says="no lease is held by 'ctr-a'")


def test_release_gateway_only_when_asked_and_unused(db: Path) -> None:
    refused(
        call("--db", str(db), "release", "10.0.0.1", "--yes"), says="gateway reservation, not a lease: pass --gateway"
    )
    refused(call("--db", str(db), "release", "10.0.0.2", "--gateway", "--yes"), says="10.0.0.2 is not a gateway")
    refused(call("--db", str(db), "release", "10.0.0.1", "--gateway", "--yes"), says="still serves")
    for owner in ("ctr-a", "ctr-b", "ctr-c"):
        ok("--db", str(db), "release", owner, "--yes", "--force")
    refused(call("--db", str(db), "release", "10.0.0.1", "--gateway", "--yes"), says="still serves 1 lease")
    ok("--db", str(db), "release", "task-1", "--yes", "--force")  # the subnet's last lease takes its gateway with it
    refused(call("--db", str(db), "show", "10.0.0.1"), says="10.0.0.1")


def test_gc_dry_run_then_apply(db: Path, tmp_path: Path) -> None:
    """With --grace 0 one run releases what the dry run listed; each owner whole."""
    valid = tmp_path / "valid.json"
    valid.write_text(
        json.dumps([{"containerID": "ctr-b", "ifname": "eth0"}, {"containerID": "ctr-c", "ifname": "eth1"}])
    )
    gc = ("--db", str(db), "gc", "--valid", str(valid), "--network", "net1", "--grace", "0")
    dry = ok(*gc, "--json").json()
    released = ["10.0.0.2", "10.0.0.4", "fd00::2", "fd00::4"]
    assert dry["applied"] is False and [row["ip"] for row in dry["leases"]] == released
    assert "would release 4 leases of network 'net1'" in ok(*gc).out
    assert len(ok("--db", str(db), "leases", "--json").json()) == 11  # a dry run changes nothing
    applied = ok(*gc, "--apply", "--json").json()
    assert applied["applied"] is True and [row["ip"] for row in applied["leases"]] == released
    left = [row["ip"] for row in ok("--db", str(db), "leases", "--json").json()]
    kept = ["10.0.0.1", "10.0.0.3", "10.0.0.5", "10.9.0.1", "10.9.0.10", "fd00::1", "fd00::3"]
    assert left == kept  # net2, hl, gateways kept
    assert ok(*gc, "--apply", "--json").json()["leases"] == []


def test_gc_releases_only_what_two_runs_a_grace_apart_saw_leaked(db: Path, tmp_path: Path) -> None:
    """The first run records what it saw; a container that is running again by the second
    run (its attachment back in the list) keeps its addresses; the others go at the
    second run, not before the grace period is over."""
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps([{"containerID": "ctr-b", "ifname": "eth0"}]))
    gc = ("--db", str(db), "gc", "--valid", str(valid), "--network", "net1", "--grace", "1s")
    first = ok(*gc, "--apply", "--json").json()
    assert first["leases"] == [] and sorted(first["waiting"]) == ["cni:net1/ctr-a/eth0", "cni:net1/ctr-c/eth0"]
    assert ok(*gc, "--json").json()["leases"] == []  # not a grace period yet
    assert "2 owner(s) seen leaked" in ok(*gc).out
    time.sleep(1.1)
    both = [{"containerID": "ctr-b", "ifname": "eth0"}, {"containerID": "ctr-c", "ifname": "eth0"}]
    valid.write_text(json.dumps(both))
    assert [row["ip"] for row in ok(*gc, "--json").json()["leases"]] == ["10.0.0.2", "fd00::2"]
    second = ok(*gc, "--apply", "--json").json()
    assert [row["ip"] for row in second["leases"]] == ["10.0.0.2", "fd00::2"] and second["waiting"] == {}
    assert [row["ip"] for row in ok("--db", str(db), "show", "ctr-c", "--json").json()] == ["10.0.0.4", "fd00::4"]


def test_export_import_round_trips_byte_for_byte(db: Path, tmp_path: Path) -> None:
    first = ok("--db", str(db), "export").out
    document = json.loads(first)
    assert (document["format"], document["version"]) == ("cnipam-export", 1)
    assert len(document["leases"]) == 11 and set(document["leases"][0]) == LEASE_KEYS - {"ip"}
    assert document["cursors"]["10.0.0.0/24"] == {"family": 4, "address": "10.0.0.5", "moves_on_release": True}
    assert document["cursors"]["10.9.0.0/24[10.9.0.10-10.9.0.254]"]["moves_on_release"] is False
    ok("--db", str(db), "export", str(tmp_path / "export.json"))
    assert (tmp_path / "export.json").read_text() == first
    assert {record["event"] for record in document["history"]} == {"allocated"}  # the fixture's ADDs
    copy = tmp_path / "copy.db"
    records = len(document["history"])
    assert f"imported 11 rows, 3 positions and {records} history records" in (
        ok("--db", str(copy), "import", str(tmp_path / "export.json")).out
    )
    assert ok("--db", str(copy), "export").out == first  # the history too, as it was
    assert ok("--db", str(copy), "check").out == "ok\n"
    assert (
        ips(plugin("ADD", NET1, "ctr-z", db=copy))
        == ips(plugin("ADD", NET1, "ctr-z", db=db))
        == ["10.0.0.6", "fd00::5"]
    )
    piped = tmp_path / "piped.db"
    ok("--db", str(piped), "import", "-", "--json", stdin=first)
    assert ok("--db", str(piped), "export").out == first


def test_export_over_the_store_or_its_files_is_refused(db: Path, tmp_path: Path) -> None:
    """Replacing the file would leave cnipamd and the Docker driver writing into the
    unlinked one (issue 19's audit); a WAL that does not exist yet is refused by name."""
    before = ok("--db", str(db), "export").out
    (tmp_path / "sub").mkdir()
    for spelling in (str(db), f"{tmp_path}/sub/../store.db", f"{db}-wal", f"{db}.lock"):
        refused(call("--db", str(db), "export", spelling), says="is the store")
    assert not Path(f"{db}-wal").exists()
    assert ok("--db", str(db), "export").out == before
    assert ok("--db", str(db), "check").out == "ok\n"


def test_conflicting_import_changes_nothing(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    plugin("ADD", {**NET1, "name": "other"}, "x1", db=other)
    plugin("ADD", {**NET1, "name": "other"}, "x2", db=other)
    before = ok("--db", str(other), "export").out
    (tmp_path / "export.json").write_text(ok("--db", str(db), "export").out)
    refused(
        call("--db", str(other), "import", str(tmp_path / "export.json")),
        says="import refused: 10.0.0.1 is already held",
    )
    assert ok("--db", str(other), "export").out == before
    duplicate = json.loads(before)
    duplicate["leases"].append(dict(duplicate["leases"][-1]))
    (tmp_path / "twice.json").write_text(json.dumps(duplicate))
    refused(call("--db", str(tmp_path / "new.db"), "import", str(tmp_path / "twice.json")), says="appears twice")
    assert ok("--db", str(tmp_path / "new.db"), "leases", "--json").json() == []


def test_import_refuses_whole_what_check_would_flag(db: Path, tmp_path: Path) -> None:
    """The issue's edited export: a lease moved outside its pool imported, and `check`
    failed afterwards. It is refused, naming it, and nothing is written."""
    document = json.loads(ok("--db", str(db), "export").out)
    moved = next(row for row in document["leases"] if row["address"] == "10.0.0.3")
    moved["address"] = "10.77.0.3"
    (tmp_path / "edited.json").write_text(json.dumps(document))
    target = tmp_path / "new.db"
    refused(
        call("--db", str(target), "import", str(tmp_path / "edited.json")),
        says="import refused, nothing was imported: orphan: 10.77.0.3 (lease) lies outside its pool 10.0.0.0/24",
    )
    assert not target.exists()
    document = json.loads(ok("--db", str(db), "export").out)
    document["cursors"]["10.0.0.0/24"]["address"] = "10.1.0.9"
    (tmp_path / "cursor.json").write_text(json.dumps(document))
    refused(call("--db", str(target), "import", str(tmp_path / "cursor.json")), says="the position of pool")


def test_gc_names_a_network_no_lease_records_and_leaves_docker_pools_to_dockerd(db: Path, tmp_path: Path) -> None:
    valid = tmp_path / "valid.json"
    valid.write_text("[]")
    typo = ok("--db", str(db), "gc", "--valid", str(valid), "--network", "nte1")
    assert typo.out == "would release 0 leases of network 'nte1' (dry run: --apply releases them)\n"
    assert typo.err == "cnipamctl: no lease in the store records network 'nte1': is the name right?\n"
    refused(call("--db", str(db), "gc", "--valid", str(valid), "--network", "docker:S/10.9.0.0/24/1"), says="dockerd")
    refused(call("--db", str(db), "gc", "--valid", str(valid), "--network", ""), status=2, says="--network")


def test_check_healthy_and_corrupted(db: Path) -> None:
    assert ok("--db", str(db), "check").out == "ok\n"
    assert ok("--db", str(db), "check", "--json").json() == {"store": str(db), "ok": True, "problems": []}
    with sqlite3.connect(db) as connection:  # lose the free interval right after 10.0.0.5
        connection.execute("DELETE FROM free WHERE family = 4 AND first = ?", (bytes([10, 0, 0, 6]),))
    run = call("--db", str(db), "check")
    refused(run, says="has 1 problem")
    assert run.out.splitlines() == ["IPv4: 10.0.0.6-10.9.0.0 is neither leased nor free"]
    report = call("--db", str(db), "check", "--json")
    assert (
        report.code == 1 and report.json()["ok"] is False and "neither leased nor free" in report.json()["problems"][0]
    )


def test_repair_rebuilds_a_damaged_free_index_after_a_dry_run(db: Path) -> None:
    with sqlite3.connect(db) as connection:  # lose the free interval right after 10.0.0.5
        connection.execute("DELETE FROM free WHERE family = 4 AND first = ?", (bytes([10, 0, 0, 6]),))
    dry = ok("--db", str(db), "repair")
    assert (
        dry.out == "IPv4: rebuilt the free index from the leases (IPv4: 10.0.0.6-10.9.0.0 is neither leased nor free)\n"
    )
    assert "dry run: nothing was written" in dry.err
    refused(call("--db", str(db), "check"), says="has 1 problem")
    applied = ok("--db", str(db), "repair", "--apply", "--json").json()
    assert applied["applied"] is True and len(applied["changes"]) == 1 and applied["problems"] == []
    assert ok("--db", str(db), "check").out == "ok\n"
    assert ok("--db", str(db), "repair").out == "nothing to repair\n"
    assert ips(plugin("ADD", NET1, "ctr-new", db=db)) == ["10.0.0.6", "fd00::5"]


@pytest.mark.parametrize(
    "args",
    [["leases"], ["show", "10.0.0.2"], ["usage"], ["release", "10.0.0.2", "--yes"], ["export"], ["check"],
     ["gc", "--valid", "VALID", "--network", "n"]],
)  # fmt: skip
def test_a_missing_store_is_named_and_not_created(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "VALID").write_text("[]")
    missing = tmp_path / "nothing" / "here.db"
    args = [str(tmp_path / "VALID") if arg == "VALID" else arg for arg in args]
    refused(call("--db", str(missing), *args), says=f"no store at {missing}")
    refused(call(*args, IPAM_DB_PATH=str(missing)), says=f"no store at {missing} (IPAM_DB_PATH=")
    assert not missing.parent.exists()


def test_error_paths_are_one_line(db: Path, tmp_path: Path) -> None:
    d = str(db)
    refused(call("--db", d, "show", "10.0.0.300"), says="'10.0.0.300' is not an IP address")
    refused(call("--db", d, "release", "fd00:::1", "--yes"), says="is not an IP address")
    refused(call("--db", d, "show", "10.0.0.99"), says="10.0.0.99 is not leased")
    refused(call("--db", d, "show", "nobody"), says="no lease is held by 'nobody'")
    refused(call("--db", d, "show", "id:nobody"), says="no lease is held by id:nobody")
    refused(call("--db", d, "leases", "--subnet", "10.0.0.0"), says="has no prefix length")
    (tmp_path / "bad.json").write_text('{"format": "cnipam-export",')
    refused(call("--db", d, "import", str(tmp_path / "bad.json")), says="is not JSON")
    refused(call("--db", d, "gc", "--valid", str(tmp_path / "bad.json"), "--network", "n"), says="is not JSON")
    (tmp_path / "list.json").write_text('[{"containerID": 5}]')
    refused(call("--db", d, "gc", "--valid", str(tmp_path / "list.json"), "--network", "n"), says="[0]: expected")
    (tmp_path / "other.json").write_text('{"format": "cnipam-export", "version": 2, "leases": [], "cursors": {}}')
    refused(call("--db", d, "import", str(tmp_path / "other.json")), says="export version 2")
    (tmp_path / "lease.json").write_text(
        '{"format": "cnipam-export", "version": 1, "leases": [{"family": 4}], "cursors": {}}'
    )
    refused(call("--db", d, "import", str(tmp_path / "lease.json")), says="leases[0]: missing address")
    refused(call("--db", d, "import", str(tmp_path / "absent.json")), says="No such file or directory")
    refused(call("--db", d, "usage", "--config", str(tmp_path / "bad.json")), says="is not JSON")
    (tmp_path / "noipam.json").write_text('{"name": "x", "plugins": [{"type": "bridge"}]}')
    refused(
        call("--db", d, "usage", "--config", str(tmp_path / "noipam.json")),
        says="no plugin of the conflist has an ipam section",
    )
    (tmp_path / "garbage.db").write_bytes(b"this is not a database at all" * 100)
    refused(call("--db", str(tmp_path / "garbage.db"), "leases"), says="is not a readable cnipam store")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    refused(call("--db", str(foreign), "leases"), says="holds no cnipam schema")
    with sqlite3.connect(foreign) as connection:
        assert [row[0] for row in connection.execute("SELECT name FROM sqlite_master")] == ["t"]  # untouched


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["leases", "--frob"],
        ["show"],
        ["gc", "--network", "n"],
        ["release"],
        ["migrate", "host-local", "/x"],
    ],
)
def test_usage_errors_exit_2_in_one_line(db: Path, args: list[str]) -> None:
    refused(call("--db", str(db), *args), status=2)


def test_help_and_version() -> None:
    assert "Commands:" in ok().out and "leases" in ok("--help").out
    assert ok("--version").out.startswith("cnipamctl, version ")
    assert "--skip-refused" in ok("migrate", "host-local", "--help").out


def test_an_unexpected_error_is_one_line_with_status_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    from cnipam.ctl import session
    from cnipam.ctl.app import main

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(session, "open_store", broken)
    assert main.main(["--db", str(db), "check"], standalone_mode=False) == 3
    assert capsys.readouterr().err == "cnipamctl: internal error: ZeroDivisionError: boom\n"


# -- migrating host-local's folders ---------------------------------------------------------


def host_local_fixture(tmp_path: Path, name: str) -> tuple[dict[str, Any], Path, Path]:
    """A writable copy of the fixture's dataDir, its manifest, and the config file cnipam gets
    (the manifest's config, `type` cnipam, dataDir pointing at the copy)."""
    manifest = json.loads((FIXTURES / "host-local" / f"{name}.json").read_text())
    data_dir = tmp_path / name
    shutil.copytree(FIXTURES / "host-local" / manifest["data_dir"], data_dir)
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = json.loads(json.dumps(manifest["config"]))
    config["ipam"].update(type="cnipam", dataDir=str(data_dir))
    (tmp_path / f"{name}.conf").write_text(json.dumps(config))
    return manifest, data_dir, tmp_path / f"{name}.conf"


def next_host_local_address(tmp_path: Path, name: str, container: str) -> list[str] | None:
    """What the real host-local hands the next container, on its own copy of the fixture."""
    if HOST_LOCAL is None:
        return None
    manifest = json.loads((FIXTURES / "host-local" / f"{name}.json").read_text())
    data_dir = tmp_path / f"go-{name}"
    shutil.copytree(FIXTURES / "host-local" / manifest["data_dir"], data_dir)
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = json.loads(json.dumps(manifest["config"]))
    config["ipam"]["dataDir"] = str(data_dir)
    env = {**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0"}
    done = subprocess.run([HOST_LOCAL], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stdout
    return ips(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("name", "expected_next"), [("v4", ["10.22.0.25"]), ("dual", ["10.23.0.10", "2001:db8:23::a"])]
)
def test_migrate_host_local(tmp_path: Path, name: str, expected_next: list[str]) -> None:
    manifest, data_dir, conf = host_local_fixture(tmp_path, name)
    store = data_dir / "cnipam.db"  # where the plugin looks with this config's dataDir
    dry = ok("migrate", "host-local", str(data_dir), "--config", str(conf), "--dry-run", "--json").json()
    assert (dry["dry_run"], dry["planned"], dry["imported"], dry["refused"]) == (True, manifest["lease_count"], 0, [])
    assert not store.exists()
    report = ok("migrate", "host-local", str(data_dir), "--config", str(conf), "--json").json()
    assert report["imported"] == manifest["lease_count"] and report["store"] == str(store)
    assert sorted(report["positions"].values()) == sorted(manifest["last_reserved_ip"].values())
    rows = ok("--db", str(store), "leases", "--json").json()
    assert [(row["ip"], row["container_id"], row["ifname"]) for row in rows] == [
        (lease["address"], lease["containerID"], lease["ifname"]) for lease in manifest["leases"]
    ]
    network = manifest["network"]
    assert all(
        row["handle"] == f"cni:{network}/{row['container_id']}/{row['ifname']}" and row["network"] == network
        for row in rows
    )
    config = json.loads(conf.read_text())
    go = next_host_local_address(tmp_path, name, "f" * 64)
    assert go in (None, expected_next)
    assert ips(plugin("ADD", config, "f" * 64)) == expected_next  # continues after last_reserved_ip as host-local does
    gone = manifest["leases"][0]
    plugin("DEL", config, gone["containerID"], gone["ifname"])
    left = ok("--db", str(store), "leases", "--json").json()
    assert gone["address"] not in {row["ip"] for row in left}
    assert not [row for row in left if (row["container_id"], row["ifname"]) == (gone["containerID"], gone["ifname"])]
    # its history starts at the migration, which says so, and ends with the DEL
    story = ok("--db", str(store), "history", gone["address"], "--json").json()
    assert [(row["started"], row["ended"], row["container_id"]) for row in story] == [
        ("imported", "released", gone["containerID"])
    ]
    assert ok("--db", str(store), "check").out == "ok\n"
    assert sorted(os.listdir(data_dir / network)) == sorted(
        entry["name"] for entry in manifest["files"]
    )  # the source is only read


def test_a_finished_migration_run_again_is_a_no_op_that_says_so(tmp_path: Path) -> None:
    manifest, data_dir, conf = host_local_fixture(tmp_path, "v4")
    ok("migrate", "host-local", str(data_dir), "--config", str(conf))
    store = data_dir / "cnipam.db"
    config = json.loads(conf.read_text())
    plugin("ADD", config, "f" * 64)  # the plugin has moved on since
    before = ok("--db", str(store), "export").out
    again = ok("migrate", "host-local", str(data_dir), "--config", str(conf))
    assert f"nothing to import: the store holds all {manifest['lease_count']} already" in again.out
    assert ok("--db", str(store), "export").out == before  # not even the positions were written again
    report = ok("migrate", "host-local", str(data_dir), "--config", str(conf), "--json").json()
    assert (report["already"], report["planned"], report["refused"]) == (manifest["lease_count"], 0, [])


def test_migrate_host_local_refusals_abort_unless_skipped(tmp_path: Path) -> None:
    manifest, data_dir, conf = host_local_fixture(tmp_path, "v4")
    folder = data_dir / "net1"
    (folder / "10.99.0.5").write_text("c0ffee\r\neth0")  # outside every pool of the config
    (folder / "10.22.0.30").write_text("")  # host-local stopped while writing it
    (folder / "10.22.0.31").write_text(
        "acb7bdd471dea67a28148da4e4e56e8738cb92ee4718805b7deaf74315494cb9\r\neth0"
    )  # a second address
    run = call("migrate", "host-local", str(folder), "--config", str(conf))
    refused(run, says="migration refused: 3 items cannot be imported")
    assert "10.99.0.5: outside every configured pool" in run.out and "10.22.0.30: empty lease file" in run.out
    assert "already holds 10.22.0.15 in the same pool" in run.out
    assert not (data_dir / "cnipam.db").exists()
    refused(call("migrate", "host-local", str(folder), "--config", str(conf), "--dry-run"), says="would be refused")
    report = ok("migrate", "host-local", str(folder), "--config", str(conf), "--skip-refused", "--json").json()
    assert report["imported"] == manifest["lease_count"] and sorted(item["what"] for item in report["refused"]) == [
        "10.22.0.30", "10.22.0.31", "10.99.0.5",
    ]  # fmt: skip
    again = call("migrate", "host-local", str(folder), "--config", str(conf), "--json")  # the rest is in the store
    refused(again, says="3 items cannot be imported")
    assert again.json()["already"] == manifest["lease_count"]
    taken = call("migrate", "host-local", str(folder), "--config", str(conf), "--network", "other", "--json")
    refused(taken, says=f"{manifest['lease_count'] + 3} items cannot be imported")  # another network's holders
    assert all(
        "already in the store" in item["why"] for item in taken.json()["refused"] if item["what"] == "10.22.0.11"
    )
    assert len(ok("--db", str(data_dir / "cnipam.db"), "leases", "--json").json()) == manifest["lease_count"]


def test_migrate_host_local_into_etcd_lists_every_conflict_first(
    tmp_path: Path, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    """On etcd, as on SQLite, the store is checked before the import: a second migration
    lists every address already held (not just the first the engine trips on), and the
    report names the etcd store, not an SQLite file that is not used."""
    manifest, data_dir, conf = host_local_fixture(tmp_path, "dual")
    config = json.loads(conf.read_text())
    del config["ipam"]["dataDir"]  # the store comes from --store, as CNIPAM_STORE for every network of a host
    conf.write_text(json.dumps(config))
    store = json.dumps({"type": "etcd", "endpoints": [etcd_endpoint], "prefix": etcd_prefix.decode(), "host": "h1"})
    migrate = ("--store", store, "migrate", "host-local", str(data_dir / "dual"), "--config", str(conf), "--json")
    first = ok(*migrate).json()
    assert first["imported"] == manifest["lease_count"] and first["store"].startswith(f"etcd {etcd_endpoint} prefix ")
    assert ok(*migrate).json()["already"] == manifest["lease_count"]  # run again: nothing to do
    again = call(*migrate, "--network", "other")  # the same addresses for another network's holders
    refused(again, says=f"{manifest['lease_count']} items cannot be imported")
    assert {item["what"] for item in again.json()["refused"]} == {lease["address"] for lease in manifest["leases"]}
    assert len(ok("--store", store, "leases", "--json").json()) == manifest["lease_count"]
    assert (
        ok("--store", store, "check", "--json").json()["store"].startswith(f"etcd {etcd_endpoint} prefix ")
    )  # not /data/eni-ipam.db


def test_migrate_host_local_from_a_conflist_into_db(tmp_path: Path) -> None:
    _, data_dir, conf = host_local_fixture(tmp_path, "dual")
    config = json.loads(conf.read_text())
    bridge = {k: v for k, v in config.items() if k not in ("name", "cniVersion")}
    conflist = {
        "cniVersion": "1.0.0",
        "name": "dual",
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }
    (tmp_path / "dual.conflist").write_text(json.dumps(conflist))
    target = tmp_path / "explicit.db"
    report = ok(
        "--db",
        str(target),
        "migrate",
        "host-local",
        str(data_dir / "dual"),
        "--config",
        str(tmp_path / "dual.conflist"),
        "--json",
    )
    assert report.json()["imported"] == 12 and any("makes the plugin use" in note for note in report.json()["notes"])
    text = ok("--db", str(target), "usage").out
    assert "10.23.0.0/24" in text and "2001:db8:23::/64" in text


# -- migrating ecs-ipam's boltdb files ------------------------------------------------------

ECS_FIXTURES = sorted(path.stem for path in (FIXTURES / "ecs-ipam-boltdb").glob("*.db"))


def expected_next(manifest: dict[str, Any], family: int) -> str:
    """Upstream's next automatic address: the first after lastKnownIP that is neither held
    nor the gateway, wrapping round inside the subnet (network and broadcast excluded)."""
    import ipaddress

    subnet = ipaddress.ip_network(manifest["subnets"]["ipv4" if family == 4 else "ipv6"])
    last_known = manifest["lastKnownIP" if family == 4 else "lastKnownIPv6"]
    taken = {lease["address"] for lease in manifest["leases"]} | {
        gateway["address"] for gateway in manifest["gateways"]
    }
    first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - (1 if family == 4 else 0)
    start = int(ipaddress.ip_address(last_known)) + 1 if last_known else first
    for value in itertools.chain(range(max(start, first), last + 1), range(first, max(start, first))):
        if str(ipaddress.ip_address(value)) not in taken:
            return str(ipaddress.ip_address(value))
    raise AssertionError("full")


@pytest.mark.parametrize("name", ECS_FIXTURES)
def test_migrate_ecs_boltdb(tmp_path: Path, name: str) -> None:
    manifest = json.loads((FIXTURES / "ecs-ipam-boltdb" / f"{name}.json").read_text())
    source = tmp_path / f"{name}.db"
    shutil.copyfile(FIXTURES / "ecs-ipam-boltdb" / manifest["db_file"], source)
    (tmp_path / "ecs.conf").write_text(json.dumps(manifest["config_base"]))
    store = tmp_path / "cnipam.db"
    args = ["--db", str(store), "migrate", "ecs-boltdb", str(source), "--config", str(tmp_path / "ecs.conf"), "--json"]
    assert ok(*args, "--dry-run").json()["planned"] == manifest["lease_count"] + len(manifest["gateways"])
    assert not store.exists()
    report = ok(*args).json()
    assert report["imported"] == manifest["lease_count"] + len(manifest["gateways"]) and report["refused"] == []
    assert hashlib.sha256(source.read_bytes()).hexdigest() == manifest["db_sha256"]  # only read
    rows = ok("--db", str(store), "leases", "--json").json()
    leases = [(row["ip"], row["handle"]) for row in rows if row["kind"] == "lease"]
    assert sorted(leases) == sorted(
        (lease["address"], f"id:{lease['id']}" if lease["id"] else None) for lease in manifest["leases"]
    )
    assert sorted(row["ip"] for row in rows if row["kind"] == "gateway") == sorted(
        gateway["address"] for gateway in manifest["gateways"]
    )
    families = [family for family, key in ((4, "ipv4"), (6, "ipv6")) if manifest["subnets"][key]]
    config = json.loads(json.dumps(manifest["config_base"]))
    config["ipam"]["id"] = "migrated-next"
    assert ips(plugin("ADD", config, "new-container", db=store)) == [
        expected_next(manifest, family) for family in families
    ]
    owner = next(lease for lease in manifest["leases"] if lease["id"])
    config["ipam"]["id"] = owner["id"]
    plugin("DEL", config, "whatever", db=store)
    assert not ok("--db", str(store), "leases", "--json", "--owner", owner["id"]).json()
    assert ok("--db", str(store), "check").out == "ok\n"


def test_migrate_ecs_boltdb_errors(tmp_path: Path) -> None:
    manifest = json.loads((FIXTURES / "ecs-ipam-boltdb" / "ipv4-basic.json").read_text())
    (tmp_path / "ecs.conf").write_text(json.dumps(manifest["config_base"]))
    (tmp_path / "garbage.db").write_bytes(b"\0" * 8192)
    migrate = ["--db", str(tmp_path / "s.db"), "migrate", "ecs-boltdb"]
    conf = str(tmp_path / "ecs.conf")
    refused(call(*migrate, str(tmp_path / "garbage.db"), "--config", conf))
    refused(call(*migrate, str(tmp_path / "absent.db"), "--config", conf), says="cannot read")
    other = {**manifest["config_base"], "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.77.0.0/24"}}
    (tmp_path / "other.conf").write_text(json.dumps(other))
    shutil.copyfile(FIXTURES / "ecs-ipam-boltdb" / "ipv4-basic.db", tmp_path / "basic.db")
    run = call(*migrate, str(tmp_path / "basic.db"), "--config", str(tmp_path / "other.conf"))
    refused(run, says=f"{manifest['lease_count'] + 1} items cannot be imported")
    assert "outside every configured pool (key 169.254.172.2)" in run.out
    assert not (tmp_path / "s.db").exists()


# -- install-plugin: the launchers linked into a CNI bin folder --------------------------------


def host_local_add(exe: Path, data_dir: Path, container: str) -> dict[str, Any]:
    """An ADD through `exe` as a runtime makes it (host-local's dialect, store in data_dir)."""
    config = {
        "cniVersion": "1.0.0",
        "name": "net",
        "ipam": {"type": "cnipam", "subnet": "10.60.0.0/24", "dataDir": str(data_dir)},
    }
    env = {**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0"}
    done = subprocess.run([str(exe)], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_install_plugin_links_both_launchers_and_changes_nothing_the_second_time(tmp_path: Path) -> None:
    bin_dir = tmp_path / "opt" / "cni" / "bin"  # missing, with its parents
    first = ok("install-plugin", "--bin-dir", str(bin_dir))
    assert first.out.splitlines() == [
        f"linked {bin_dir / name} -> {os.path.join(SCRIPTS, name)}" for name in ("cnipam", "ecs-ipam")
    ]
    for name in ("cnipam", "ecs-ipam"):
        assert os.readlink(bin_dir / name) == os.path.join(SCRIPTS, name)
    inodes = {name: os.lstat(bin_dir / name).st_ino for name in ("cnipam", "ecs-ipam")}
    assert ips(host_local_add(bin_dir / "cnipam", tmp_path / "store", "c1")) == [
        "10.60.0.2"
    ]  # a runtime's call through the link

    again = ok("install-plugin", "--bin-dir", str(bin_dir))
    assert again.out.splitlines() == [
        f"unchanged {bin_dir / name} -> {os.path.join(SCRIPTS, name)}" for name in ("cnipam", "ecs-ipam")
    ]
    assert {name: os.lstat(bin_dir / name).st_ino for name in ("cnipam", "ecs-ipam")} == inodes
    assert sorted(os.listdir(bin_dir)) == ["cnipam", "ecs-ipam"]  # no temporary link left


def test_install_plugin_refuses_another_file_of_that_name_unless_forced(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    amazon = bin_dir / "ecs-ipam"
    amazon.write_text("#!/bin/sh\necho the real one\n")
    refused(call("install-plugin", "--bin-dir", str(bin_dir)), says=f"{amazon} is another file")
    assert (
        sorted(os.listdir(bin_dir)) == ["ecs-ipam"] and amazon.read_text() == "#!/bin/sh\necho the real one\n"
    )  # nothing changed

    ok("install-plugin", "cnipam", "--bin-dir", str(bin_dir))  # the other name alone is fine
    assert os.readlink(bin_dir / "cnipam") == os.path.join(SCRIPTS, "cnipam") and not amazon.is_symlink()

    forced = ok("install-plugin", "--bin-dir", str(bin_dir), "--force")
    assert forced.out.splitlines()[1] == f"replaced {amazon} -> {os.path.join(SCRIPTS, 'ecs-ipam')}"
    assert os.readlink(amazon) == os.path.join(SCRIPTS, "ecs-ipam")


def test_install_plugin_link_into_another_environment(tmp_path: Path) -> None:
    other = tmp_path / "old-venv" / "bin"
    other.mkdir(parents=True)
    (other / "cnipam").write_text("#!/bin/sh\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cnipam").symlink_to(other / "cnipam")
    refused(call("install-plugin", "cnipam", "--bin-dir", str(bin_dir)), says=f"links to {other / 'cnipam'}, not to")
    assert os.readlink(bin_dir / "cnipam") == str(other / "cnipam")

    (other / "cnipam").unlink()  # the old environment is gone: the link is stale, replacing it breaks nothing
    run = ok("install-plugin", "cnipam", "--bin-dir", str(bin_dir))
    assert run.out == f"replaced {bin_dir / 'cnipam'} -> {os.path.join(SCRIPTS, 'cnipam')}\n"


def test_install_plugin_refusals(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    refused(call("install-plugin", "--bin-dir", str(not_a_folder)), says="is not a folder")
    (tmp_path / "bin" / "cnipam").mkdir(parents=True)
    refused(call("install-plugin", "--bin-dir", str(tmp_path / "bin")), says="is a folder")
    assert os.listdir(tmp_path / "bin") == ["cnipam"]
    refused(call("install-plugin", "host-local", "--bin-dir", str(tmp_path / "bin")), status=2, says="host-local")
    assert "[default: /opt/cni/bin]" in " ".join(ok("install-plugin", "--help").out.split())


# -- the store options, before or after the command name ------------------------------------

STORE_COMMANDS = [
    ["leases"], ["show"], ["usage"], ["release"], ["gc"], ["export"], ["import"], ["check"], ["pools"], ["repair"],
    ["migrate", "host-local"], ["migrate", "ecs-boltdb"], ["migrate", "gipam"], ["hosts", "list"],
    ["hosts", "blocks"], ["hosts", "release"],
]  # fmt: skip


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_every_store_command_lists_the_store_options_in_its_help(command: list[str]) -> None:
    text = ok(*command, "--help").out
    for flag in ("--db PATH", "--store JSON", "--config FILE"):
        assert flag in text, f"{' '.join(command)} --help lacks {flag}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_db_store_and_config_work_before_and_after_the_command(db: Path, tmp_path: Path, where: str) -> None:
    def run(options: list[str], *command: str) -> Any:
        args = [*options, *command] if where == "before" else [*command, *options]
        return ok(*args, "--json").json()

    expected = [row["ip"] for row in run(["--db", str(db)], "leases")]
    assert len(expected) == 11
    store = json.dumps({"type": "sqlite", "path": str(db)})
    assert [row["ip"] for row in run(["--store", store], "leases")] == expected
    config = tmp_path / "net.conf"
    config.write_text(json.dumps({**HL, "ipam": {**HL["ipam"], "store": {"type": "sqlite", "path": str(db)}}}))
    assert [row["ip"] for row in run(["--config", str(config)], "leases")] == expected
    assert {row["pool"] for row in run(["--config", str(config)], "usage")} >= {"10.9.0.0/24[10.9.0.10-10.9.0.254]"}
    data_dir = tmp_path / "dd"
    data_dir.mkdir()
    shutil.copyfile(db, data_dir / "cnipam.db")
    config.write_text(json.dumps({**HL, "ipam": {**HL["ipam"], "dataDir": str(data_dir)}}))
    assert [row["ip"] for row in run(["--config", str(config)], "leases")] == expected
    assert run(["--config", str(config)], "check")["store"] == str(data_dir / "cnipam.db")


def test_store_option_errors_name_the_flag_or_variable(tmp_path: Path) -> None:
    refused(call("leases", "--store", '{"type": "etcd"}'), says="--store.endpoints")
    refused(call("leases", "--store", "notjson"), says="--store: invalid JSON")
    refused(call("leases", CNIPAM_STORE="notjson"), says="CNIPAM_STORE: invalid JSON")
    refused(call("leases", CNIPAM_STORE='{"type": "etcd"}'), says="CNIPAM_STORE.endpoints")
    refused(call("leases", "--db", ""), status=2, says="--db")
    refused(call("--store", " ", "leases"), status=2, says="--store")
    missing = tmp_path / "missing.db"
    refused(call("leases", "--db", str(missing)), says=f"no store at {missing} (--db {missing})")
    config = tmp_path / "c.conf"
    config.write_text(json.dumps({**HL, "ipam": {**HL["ipam"], "dataDir": str(tmp_path / "nowhere")}}))
    refused(call("leases", "--config", str(config)), says=f"of --config {config}")
    other = tmp_path / "o.conf"
    other.write_text(json.dumps({**HL, "ipam": {**HL["ipam"], "dataDir": str(tmp_path / "elsewhere")}}))
    refused(call("leases", "--config", str(config), "--config", str(other)), says="name different stores")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "elsewhere").exists()


# -- Docker's pools and addresses ----------------------------------------------------------


@pytest.fixture
def docker_db(tmp_path: Path) -> tuple[Path, list[str]]:
    """A store the Docker driver's methods filled as dockerd would: a network with
    --ip-range, --gateway and an aux address, a container given --ip, a sibling network
    on the same subnet, and a dynamic IPv6 network. Returns the store and the pool ids."""
    from cnipam.docker.driver import Driver
    from cnipam.docker.settings import load
    from cnipam.store.sqlite import SQLiteStore

    path = tmp_path / "docker.db"
    store = SQLiteStore(str(path))
    driver = Driver(store, load(["-v6", "2001:db8::/56"], {}))

    def ask(body: dict[str, object]) -> dict[str, object]:
        return driver.handle("/IpamDriver.RequestAddress", json.dumps(body).encode())

    def pool(body: dict[str, object]) -> str:
        return str(driver.handle("/IpamDriver.RequestPool", json.dumps(body).encode())["PoolID"])

    gateway = {"RequestAddressType": "com.docker.network.gateway"}
    web = pool({"Pool": "10.9.0.0/24", "SubPool": "10.9.0.128/25"})
    ask({"PoolID": web, "Address": "10.9.0.254", "Options": gateway})
    ask({"PoolID": web, "Address": "10.9.0.9", "Options": None})
    endpoint = {
        "com.docker.network.endpoint.macaddress": "02:42:0a:09:00:4d",
        "com.docker.network.endpoint.name": "web-1",
    }
    ask({"PoolID": web, "Address": "10.9.0.77", "Options": endpoint})
    ask({"PoolID": web, "Address": "", "Options": {"com.docker.network.endpoint.macaddress": "02:42:0a:09:00:80"}})
    sibling = pool({"Pool": "10.9.0.0/24", "SubPool": "10.9.0.0/26"})
    ask({"PoolID": sibling, "Address": "", "Options": gateway})
    six = pool({"V6": True})
    ask({"PoolID": six, "Address": "", "Options": gateway})
    store.close()
    return path, [web, sibling, six]


def test_pools_lists_docker_pools_as_docker_network_inspect_users_expect(docker_db: tuple[Path, list[str]]) -> None:
    path, (web, sibling, six) = docker_db
    listed = {row["id"]: row for row in ok("--db", str(path), "pools", "--json").json()}
    assert list(listed) == [web, sibling, six]
    assert {key: listed[web][key] for key in ("subnet", "ip_range", "gateway", "aux", "endpoints", "used")} == {
        "subnet": "10.9.0.0/24", "ip_range": "10.9.0.128/25", "gateway": "10.9.0.254", "aux": ["10.9.0.9"],
        "endpoints": 2, "used": 4,
    }  # fmt: skip
    assert (listed[web]["size"], listed[web]["free"]) == (127, 125)  # .128-.254: .128 and the gateway taken
    assert (listed[sibling]["gateway"], listed[sibling]["ip_range"], listed[sibling]["free"]) == (
        "10.9.0.1", "10.9.0.0/26", 61,
    )  # fmt: skip  # .1-.63 less its gateway and the first network's aux address .9
    assert listed[six]["subnet"] == "2001:db8::/64" and listed[six]["size"] == 2**64 - 1  # an exact integer
    table = ok("--db", str(path), "pools").out.splitlines()
    assert table[0].split() == ["pool", "subnet", "ip-range", "gateway", "aux", "endpoints", "used", "free", "percent",
                                "age"]  # fmt: skip
    assert any(line.split()[:5] == [web, "10.9.0.0/24", "10.9.0.128/25", "10.9.0.254", "10.9.0.9"] for line in table)
    assert ok("--db", str(path), "leases", "--container", "web-1", "--json").json()[0]["ip"] == "10.9.0.77"


def test_a_docker_address_is_released_only_when_forced(docker_db: tuple[Path, list[str]]) -> None:
    """The issue's duplicate: `release` of a running container's Docker address went
    through silently. It is refused, naming the pool and the endpoint; the gateway needs
    --gateway as well."""
    path, (web, _, _) = docker_db
    db = str(path)
    message = refused(call("--db", db, "release", "10.9.0.77", "--yes"), says="may still be in use")
    assert f"endpoint 'web-1' of Docker pool {web}" in message and "dockerd frees it" in message
    refused(call("--db", db, "release", "web-1", "--yes"), says=f"endpoint 'web-1' of Docker pool {web}")
    refused(call("--db", db, "release", "10.9.0.254", "--yes", "--force"), says="pass --gateway --force")
    refused(call("--db", db, "release", "10.9.0.254", "--gateway", "--yes"), says="may still be in use")
    assert "10.9.0.77" in {row["ip"] for row in ok("--db", db, "leases", "--json").json()}
    assert [row["ip"] for row in ok("--db", db, "release", "web-1", "--yes", "--force", "--json").json()] == [
        "10.9.0.77"
    ]
    freed = ok("--db", db, "release", "10.9.0.254", "--gateway", "--yes", "--force", "--json").json()
    assert [row["ip"] for row in freed] == ["10.9.0.254"]
    shown = ok("--db", db, "show", "10.9.0.9").out
    assert f"owner:     an aux address of Docker pool {web}" in shown


def test_docker_pools_go_through_export_and_import(docker_db: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A backup keeps the driver's pools with their addresses: restored, the driver serves
    the same pool ids, and export -> import -> export gives the same bytes."""
    from cnipam.docker.driver import Driver
    from cnipam.docker.settings import load
    from cnipam.store.sqlite import SQLiteStore

    path, (web, sibling, six) = docker_db
    first = ok("--db", str(path), "export").out
    assert [pool["id"] for pool in json.loads(first)["docker_pools"]] == [web, sibling, six]
    copy = tmp_path / "copy.db"
    assert ", 3 Docker pool(s) and " in ok("--db", str(copy), "import", "-", stdin=first).out
    assert ok("--db", str(copy), "export").out == first
    refused(call("--db", str(copy), "import", "-", stdin=first), says=f"pool {web}")  # its pools are there already
    assert ok("--db", str(copy), "export").out == first
    store = SQLiteStore(str(copy))
    driver = Driver(store, load([], {}))
    reply = driver.handle("/IpamDriver.RequestAddress", json.dumps({"PoolID": web, "Address": ""}).encode())
    assert reply["Address"] == "10.9.0.129/24"  # .128 is held, as in the original
    driver.handle("/IpamDriver.ReleasePool", json.dumps({"PoolID": sibling}).encode())
    store.close()
