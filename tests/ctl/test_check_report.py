"""`cnipamctl check --report FILE` and `release --from-report FILE` on both engines: the
report names leases outside every pool named, earlier boots' leases, half dual-stack
pairs, positions and (etcd) blocks nothing explains; applying it releases exactly that,
and a report made before the store changed is refused whole."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Cursor, Owner
from cnipam.store.base import Store
from cnipam.store.etcd import EtcdStore
from cnipam.store.etcd_keys import Block, encode_block
from tests.support.plugin_calls import installed
from tests.support.store_engines import ENGINES

NET = {
    "cniVersion": "1.0.0",
    "name": "net",
    "ipam": {"type": "cnipam", "ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "fd00::/64"},
}
DUAL = parse_ecs(NET["ipam"]).pools  # type: ignore[arg-type]


@pytest.fixture(params=sorted(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, list[str]]]:
    engine = ENGINES[request.param](request, tmp_path)
    if isinstance(engine, EtcdStore):
        endpoint = request.getfixturevalue("etcd_endpoint")
        selector = {
            "type": "etcd",
            "endpoints": [endpoint],
            "prefix": engine.keys.prefix.decode(),
            "host": engine.keys.host,
        }
        where = ["--store", json.dumps(selector)]
    else:
        where = ["--db", str(tmp_path / "ipam.db")]
    yield engine, where
    engine.close()


def ctl(where: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "CNIPAM_BOOT_ID": "boot-now"}
    done = subprocess.run([installed("cnipamctl"), *where, *args], env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def owner(name: str, boot: str = "", network: str = "net") -> Owner:
    return Owner.for_request(None, network, name, "eth0", "", boot)


def test_the_report_round_trip(store: tuple[Store, list[str]], tmp_path: Path) -> None:
    engine, where = store
    config = tmp_path / "net.json"
    config.write_text(json.dumps(NET))
    engine.allocate(owner("fine", "boot-now"), DUAL)
    engine.allocate(owner("half", "boot-now"), DUAL[:1])
    engine.allocate(owner("stray", network="other"), parse_ecs({"ipv4-subnet": "10.9.0.0/24"}).pools)
    engine.allocate(owner("old", "boot-old"), DUAL)  # leases of an earlier boot of this host, not repaired yet
    engine.import_leases([], {"10.8.0.0/24": Cursor(4, 0x0A090909, True)})  # a position outside its pool
    if isinstance(engine, EtcdStore):  # a block claiming an address no lease holds, for a host that is gone
        engine.client.put(engine.keys.block(4, 0x0A0005), encode_block(Block(4, 0x0A0005, "ghost", 1 << 3, 0)))
    report = tmp_path / "report.json"

    checked = ctl(where, "check", "--report", str(report), "--config", str(config), "--json")
    assert checked.returncode == 1, checked.stderr
    document = json.loads(report.read_text())
    problems = sorted(finding["problem"] for finding in document["findings"])
    expected = ["earlier-boot", "earlier-boot", "half-pair", "orphan-cursor", "outside-pools"]
    assert problems == sorted(expected + (["orphan-block"] if isinstance(engine, EtcdStore) else []))
    assert len(json.loads(checked.stdout)["findings"]) == len(problems)

    engine.release(
        owner("stray", network="other").handle
    )  # the store changes under the report: the stray lease is made again
    engine.allocate(owner("stray", network="other"), parse_ecs({"ipv4-subnet": "10.9.0.0/24"}).pools)
    before = engine.leases()
    refused = ctl(where, "release", "--from-report", str(report), "--yes", "--force")
    assert refused.returncode == 1 and "changed since the report was made" in refused.stderr
    assert engine.leases() == before  # nothing of it was applied

    assert ctl(where, "check", "--report", str(report), "--config", str(config)).returncode == 1
    doubted = ctl(where, "release", "--from-report", str(report), "--yes")  # half and stray may still run
    assert doubted.returncode == 1 and "may still be in use (2 of 4 leases)" in doubted.stderr, doubted.stderr
    assert "container 'half'" in doubted.stderr and "container 'stray'" in doubted.stderr
    assert "'old'" not in doubted.stderr and engine.leases() == before  # earlier boot: provably gone
    applied = ctl(where, "release", "--from-report", str(report), "--yes", "--force", "--json")
    assert applied.returncode == 0, applied.stderr
    released = json.loads(applied.stdout)
    assert sorted(lease["container_id"] for lease in released["leases"]) == ["half", "old", "old", "stray"]
    assert released["positions"] == 1 and released["blocks"] == (1 if isinstance(engine, EtcdStore) else 0)
    again = ctl(
        where, "check", "--report", str(report), "--config", str(config)
    )  # the stray pool's position is nobody's now
    assert (
        again.stdout == "found: the position of pool 10.9.0.0/24 (10.9.0.3) belongs to no lease and no config named\n"
    )
    assert ctl(where, "release", "--from-report", str(report), "--yes").returncode == 0
    clean = ctl(where, "check", "--report", str(report), "--config", str(config))
    assert (clean.returncode, clean.stdout) == (0, "ok\n"), clean.stderr
    assert sorted({lease.container_id for lease in engine.leases() if lease.container_id}) == ["fine"]
    assert engine.problems() == []


def test_a_bad_report_is_refused_by_name(store: tuple[Store, list[str]], tmp_path: Path) -> None:
    _, where = store
    bad = tmp_path / "bad.json"
    for document, says in (
        ({"kind": "other"}, "is not a report"),
        ({"kind": "cnipam-check-report", "version": 9}, "version 9"),
        ({"kind": "cnipam-check-report", "version": 1, "findings": [{"problem": "x"}]}, "unknown problem"),
        (
            {"kind": "cnipam-check-report", "version": 1, "store": "elsewhere", "boot": "", "made": 1, "findings": []},
            "not on",
        ),
    ):
        bad.write_text(json.dumps(document))
        done = ctl(where, "release", "--from-report", str(bad), "--yes")
        assert done.returncode == 1 and says in done.stderr, done.stderr
    assert ctl(where, "release", "--from-report", str(bad), "10.0.0.1").returncode == 2
    assert (
        ctl(where, "check", "--subnet", "10.0.0.0/24").returncode == 2
    )  # --subnet only says what --report compares with
    not_a_config = ctl(where, "check", "--config", str(bad))  # a store option too: read even without --report
    assert not_a_config.returncode == 1 and str(bad) in not_a_config.stderr, not_a_config.stderr
