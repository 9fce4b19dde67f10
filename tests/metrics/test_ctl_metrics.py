"""`cnipamctl metrics`: the pool gauges of a host that runs no daemon, printed or written
for node_exporter's textfile collector, on both engines; parsed back with
prometheus_client's own parser, as a scraper reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.ctl_calls import call, ok, plugin, refused
from tests.support.etcd import need_etcd, store_object

IPAM: dict[str, Any] = {"type": "cnipam", "subnet": "10.61.0.0/28"}
NET: dict[str, Any] = {"cniVersion": "1.0.0", "name": "tf", "ipam": IPAM}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "store"))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def pool(state: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"family": "4", "network": "tf", "pool": "10.61.0.0/28", "state": state}
    return "cnipam_pool_addresses", tuple(sorted(labels.items()))


def test_printed_and_textfile_gauges_match_the_store(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    for container in ("a", "b", "c"):
        plugin("ADD", NET, container, db=db)
    printed = samples(ok("--db", str(db), "metrics").out)
    assert (printed[pool("used")], printed[pool("reserved")], printed[pool("free")]) == (3, 1, 10)
    assert printed["cnipam_store_up", ()] == 1
    folder = tmp_path / "textfile"
    folder.mkdir()
    ok("--db", str(db), "metrics", "--textfile", str(folder))
    assert os.listdir(folder) == ["cnipam.prom"]  # nothing left beside it
    plugin("DEL", NET, "b", db=db)
    ok("--db", str(db), "metrics", "--textfile", str(folder))  # replaced whole
    written = samples((folder / "cnipam.prom").read_text())
    assert written[pool("used")] == 2 and written == samples(ok("--db", str(db), "metrics").out)
    assert os.listdir(folder) == ["cnipam.prom"]


def test_a_store_that_cannot_be_read_says_so_in_the_file_and_the_exit_status(tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    missing = str(tmp_path / "missing.db")
    refused(call("--db", missing, "metrics", "--textfile", str(folder)), says="no store at")
    assert samples((folder / "cnipam.prom").read_text()) == {("cnipam_store_up", ()): 0.0}
    refused(call("--db", missing, "metrics", "--textfile", str(tmp_path / "nofolder")), says="not a folder")


def test_etcd_gauges_add_the_blocks_of_each_host(tmp_path: Path, etcd_endpoint: str, etcd_prefix: bytes) -> None:
    need_etcd()
    lock_dir = str(tmp_path / "locks")
    for host, containers in (("node-1", "ab"), ("node-2", "c")):
        config = {**NET, "ipam": {**IPAM, "store": store_object(etcd_endpoint, etcd_prefix, lock_dir, host)}}
        for container in containers:
            plugin("ADD", config, container)
    store = json.dumps(store_object(etcd_endpoint, etcd_prefix, lock_dir))
    found = samples(ok("--store", store, "metrics").out)
    assert (found[pool("used")], found[pool("reserved")], found[pool("free")]) == (3, 1, 10)
    blocks = {labels: value for (name, labels), value in found.items() if name.startswith("cnipam_etcd_block")}
    # the first host claimed the pool's one block; the second borrowed from it
    assert blocks == {
        (("host", "node-1"),): 1,
        (("host", "node-1"), ("state", "used")): 4,
        (("host", "node-1"), ("state", "free")): 252,
    }


def test_with_its_config_a_pools_released_addresses_cool_for_its_reuse_delay(
    tmp_path: Path, etcd_endpoint: str, etcd_prefix: bytes
) -> None:
    """The store does not record a config's reuse delay: alone, cnipamctl counts a
    released address as free; with --config, as cooling for the config's delay. On both
    engines (a released address's time is a `released` row in SQLite, a block's `freed`
    time on etcd)."""
    need_etcd()
    lock_dir = str(tmp_path / "locks")
    etcd = store_object(etcd_endpoint, etcd_prefix, lock_dir, "node-1")
    for engine, where, ipam in (
        ("sqlite", ["--db", str(tmp_path / "ipam.db")], {}),
        ("etcd", ["--store", json.dumps(store_object(etcd_endpoint, etcd_prefix, lock_dir))], {"store": etcd}),
    ):
        config = {**NET, "ipam": {**IPAM, **ipam, "reuseDelay": "1h"}}
        (tmp_path / f"{engine}.json").write_text(json.dumps(config))
        for container in ("a", "b", "c"):
            plugin("ADD", config, container, db=tmp_path / "ipam.db")
        plugin("DEL", config, "b", db=tmp_path / "ipam.db")
        alone = samples(ok(*where, "metrics").out)
        assert [alone[pool(state)] for state in ("reserved", "used", "cooling", "free")] == [1, 2, 0, 11], engine
        configured = samples(ok(*where, "metrics", "--config", str(tmp_path / f"{engine}.json")).out)
        assert [configured[pool(state)] for state in ("reserved", "used", "cooling", "free")] == [1, 2, 1, 10], engine
