"""`cnipamctl migrate gipam FILE`, driven through the installed executables: the file
into a real SQLite store, then the real `cnipam-docker` serving the imported pool ids.

No lease file written by gipam itself is in tests/fixtures; the ones here follow gipam's
encoder (Go's MarshalIndent of pkg/leaser's structs, shared/reference/docker-ipam.md §2),
with its omitted zero indexes and `null` lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.ctl_calls import call, ok, refused
from tests.support.docker_driver import RunningDriver
from tests.support.store_files import snapshot

LEASE_FILE: dict[str, Any] = {
    "v6": "2001:db8::/56",
    "v6ab": 64,
    "v6idx": 1,
    "v4": "198.18.0.0/16",
    "v4ab": 24,
    "v4idx": 3,
    "allocated": [
        {
            "id": "R0KGSOeJ4n3thSpz",
            "v": 4,
            "pool": "198.18.0.0/24",
            "idx": 4,
            "allocated": ["198.18.0.1", "198.18.0.3"],
            "free": ["198.18.0.2"],
        },
        {
            "id": "a8Fz0qLmN3xY7bWc",
            "v": 6,
            "pool": "2001:db8::/64",
            "idx": 3,
            "allocated": ["2001:db8::1", "2001:db8::2"],
            "free": None,
        },
        {"id": "Zq9xW2eR4tY6uI8o", "v": 4, "pool": "198.18.2.0/24", "idx": 1, "allocated": None, "free": None},
    ],
    "free": [{"id": "Pp0oI9uY8tR7eW6q", "v": 4, "pool": "198.18.1.0/24", "idx": 1, "allocated": [], "free": []}],
}


def write(folder: Path, document: object, name: str = "lease.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(document, indent=2) if not isinstance(document, str) else document)
    return path


def migrate(store: Path, source: Path, *extra: str) -> Any:
    return call("--db", str(store), "migrate", "gipam", str(source), *extra)


def test_dry_run_reports_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "ipam.db"
    report = ok("--db", str(store), "migrate", "gipam", str(write(tmp_path, LEASE_FILE)), "--dry-run", "--json").json()
    assert not store.exists()
    assert report["planned"] == {"pools": 3, "addresses": 4} and report["imported"] == {"pools": 0, "addresses": 0}
    assert [(pool["id"], pool["pool"], pool["addresses"]) for pool in report["pools"]] == [
        ("R0KGSOeJ4n3thSpz", "198.18.0.0/24", 2),
        ("a8Fz0qLmN3xY7bWc", "2001:db8::/64", 2),
        ("Zq9xW2eR4tY6uI8o", "198.18.2.0/24", 0),
    ]
    notes = " ".join(report["notes"])
    assert "cnipam-docker --name gipam" in notes
    assert "-v4 198.18.0.0/16 -v4ab 24 -v6 2001:db8::/56 -v6ab 64" in notes
    assert "Pp0oI9uY8tR7eW6q (198.18.1.0/24)" in notes  # released: not imported


def test_migrated_ids_are_served_by_the_real_driver(tmp_path: Path) -> None:
    source = write(tmp_path, LEASE_FILE)
    text = ok("--db", str(tmp_path / "ipam.db"), "migrate", "gipam", str(source)).out
    assert "imported 3 pools and 4 addresses" in text and "R0KGSOeJ4n3thSpz" in text
    assert ok("--db", str(tmp_path / "ipam.db"), "check").out.strip() == "ok"
    driver = RunningDriver(tmp_path, "-v4", "198.18.0.0/16", "-v6", "2001:db8::/56")
    try:
        # The released .2 is lowest free; the imported .1 and .3 are held.
        assert driver.ok("RequestAddress", {"PoolID": "R0KGSOeJ4n3thSpz", "Address": ""})["Address"] == "198.18.0.2/24"
        assert driver.call("RequestAddress", {"PoolID": "R0KGSOeJ4n3thSpz", "Address": "198.18.0.3"})[0] == 409
        assert driver.ok("RequestAddress", {"PoolID": "a8Fz0qLmN3xY7bWc", "Address": ""})["Address"] == "2001:db8::3/64"
        driver.ok("ReleaseAddress", {"PoolID": "R0KGSOeJ4n3thSpz", "Address": "198.18.0.1"})
        assert driver.ok("RequestAddress", {"PoolID": "R0KGSOeJ4n3thSpz", "Address": ""})["Address"] == "198.18.0.1/24"
        assert driver.ok("RequestAddress", {"PoolID": "Zq9xW2eR4tY6uI8o", "Address": ""})["Address"] == "198.18.2.1/24"
        driver.ok("ReleasePool", {"PoolID": "R0KGSOeJ4n3thSpz"})
        assert driver.call("RequestAddress", {"PoolID": "R0KGSOeJ4n3thSpz", "Address": ""})[0] == 404
        # A new dynamic network gets the lowest block free of imported pools: the released one.
        reply = driver.ok("RequestPool", {"AddressSpace": "", "Pool": "", "SubPool": "", "Options": {}, "V6": False})
        assert reply["Pool"] == "198.18.0.0/24" and reply["PoolID"] != "R0KGSOeJ4n3thSpz"
        assert driver.ok("RequestPool", {"V6": False})["Pool"] == "198.18.1.0/24"
        assert driver.ok("RequestPool", {"V6": False})["Pool"] == "198.18.3.0/24"  # skips the imported .2
    finally:
        assert driver.stop() == 0
    leases = ok("--db", str(tmp_path / "ipam.db"), "leases", "--json").json()
    assert sorted(lease["ip"] for lease in leases) == ["198.18.2.1", "2001:db8::1", "2001:db8::2", "2001:db8::3"]


def test_a_finished_gipam_migration_run_again_is_a_no_op(tmp_path: Path) -> None:
    source = write(tmp_path, LEASE_FILE)
    ok("--db", str(tmp_path / "ipam.db"), "migrate", "gipam", str(source))
    before = ok("--db", str(tmp_path / "ipam.db"), "export").out
    again = ok("--db", str(tmp_path / "ipam.db"), "migrate", "gipam", str(source))
    assert "nothing to import: the store holds all 3 already" in again.out
    assert ok("--db", str(tmp_path / "ipam.db"), "export").out == before


def test_conflicts_with_the_store_abort_unless_skipped(tmp_path: Path) -> None:
    store = tmp_path / "ipam.db"
    ok("--db", str(store), "migrate", "gipam", str(write(tmp_path, LEASE_FILE)))
    other = {
        "v6": "", "v6ab": 0, "v4": "198.18.0.0/16", "v4ab": 24,
        "allocated": [
            {"id": "R0KGSOeJ4n3thSpz", "v": 4, "pool": "198.18.9.0/24", "idx": 2, "allocated": ["198.18.9.1"],
             "free": None},
            {"id": "overlapping", "v": 4, "pool": "198.18.2.0/25", "idx": 2, "allocated": ["198.18.2.1"], "free": None},
            {"id": "fresh", "v": 4, "pool": "198.18.7.0/24", "idx": 2, "allocated": ["198.18.7.1", "198.18.7.255"],
             "free": None},
        ],
    }  # fmt: skip
    source = write(tmp_path, other, "other.json")
    before = snapshot(store)
    run = migrate(store, source)
    refused(run, says="migration refused: 3 items cannot be imported (listed above); nothing was written")
    assert "pool R0KGSOeJ4n3thSpz (198.18.9.0/24): a pool with this id is already in the store" in run.out
    assert (
        "pool overlapping (198.18.2.0/25): overlaps pool 198.18.2.0/24 (Zq9xW2eR4tY6uI8o) already in the store"
        in run.out
    )
    assert "198.18.7.255 of pool fresh: the broadcast address of 198.18.7.0/24" in run.out
    assert snapshot(store) == before
    report = ok("--db", str(store), "migrate", "gipam", str(source), "--skip-refused", "--json").json()
    assert report["imported"] == {"pools": 1, "addresses": 1} and len(report["refused"]) == 3
    leases = ok("--db", str(store), "leases", "--json").json()
    assert [lease["ip"] for lease in leases if lease["network"] == "docker:fresh"] == ["198.18.7.1"]


def test_an_address_held_by_a_cni_lease_is_refused(tmp_path: Path) -> None:
    from tests.support.ctl_calls import plugin

    store = tmp_path / "ipam.db"
    ipam = {
        "type": "cnipam",
        "ipv4-subnet": "198.18.0.0/24",
        "ipv4-gateway": "198.18.0.254",
        "ipv4-address": "198.18.0.3/24",
    }
    plugin("ADD", {"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, "c1", db=store)
    run = migrate(store, write(tmp_path, LEASE_FILE))
    refused(run, says="1 item cannot")
    assert (
        "198.18.0.3 of pool R0KGSOeJ4n3thSpz: already in the store, "
        "held by container 'c1' interface 'eth0' of network 'n'" in run.out
    )


BAD_FILES: list[tuple[str, str]] = [
    (
        "{not json",
        "is not a gipam lease file: not JSON: Expecting property name enclosed in double quotes at line 1 column 2",
    ),
    ("[]", "expected a JSON object"),
    (json.dumps({**LEASE_FILE, "v4": "198.18.0.0/33"}), "v4"),
    (
        json.dumps({**LEASE_FILE, "allocated": [{**LEASE_FILE["allocated"][0], "allocated": ["198.18.5.1"]}]}),
        "outside the block's pool",
    ),
    (json.dumps({**LEASE_FILE, "allocated": [LEASE_FILE["allocated"][0]] * 2}), "appears twice"),
]


def test_a_bad_file_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "ipam.db"
    ok("--db", str(store), "migrate", "gipam", str(write(tmp_path, {**LEASE_FILE, "allocated": [], "free": []})))
    before = snapshot(store)
    for text, message in BAD_FILES:
        refused(migrate(store, write(tmp_path, text, "bad.json")), says=message)
        assert snapshot(store) == before
    refused(migrate(store, tmp_path / "absent.json"), says="cannot read")
    refused(migrate(tmp_path / "never.db", write(tmp_path, "{}", "bad.json")), says="no gipam keys")
    assert not (tmp_path / "never.db").exists()
    refused(call("migrate", "gipam"), status=2, says="Missing argument")
