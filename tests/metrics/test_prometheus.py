"""The daemons' metrics as an operator sees them: a real Prometheus (Debian's package,
private config, storage and loopback port, scraping every second) scrapes the installed
`cnipamd` and `cnipam-docker` on loopback, and the test asks Prometheus's HTTP API for
what it stored, comparing it with what the test did and with what the store holds.
`promtool` checks the shipped alert rules and runs their unit tests; the plugin never
loads prometheus_client (`python -X importtime`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cnipam.testing.agent_process import AgentProcess
from tests.agent.test_agent import cache_entry
from tests.support.docker_driver import RunningDriver
from tests.support.plugin_calls import CALL_TIMEOUT, as_stdin, installed, plugin_env
from tests.support.prometheus import PrometheusServer, need_prometheus
from tests.support.store_files import held

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "cnipam-alerts.yml"
CNI_POOL, DOCKER_POOL = "10.77.0.0/24", "10.88.0.0/24"


def cni_call(command: str, db: Path, socket: Path, container: str, **ipam: str) -> dict[str, Any]:
    """One plugin call, forwarded to the agent on `socket`; the answer (or error object)."""
    config = {
        "cniVersion": "1.0.0",
        "name": "promnet",
        "ipam": {"type": "ecs-ipam", "ipv4-subnet": CNI_POOL, "reuse-delay": "1h", **ipam},
    }
    env = plugin_env(command, db, {"CNI_CONTAINERID": container, "CNIPAM_AGENT_SOCKET": str(socket)})
    done = subprocess.run(
        [installed("cnipam")], input=as_stdin(config), env=env, capture_output=True, timeout=CALL_TIMEOUT
    )
    return json.loads(done.stdout) if done.stdout.strip() else {}


def listening(log: str) -> dict[str, Any]:
    return next(event for event in map(json.loads, log.splitlines()) if event.get("event") == "listening")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[tuple[AgentProcess, RunningDriver, Path]]:
    need_prometheus()
    db = tmp_path / "ipam.db"
    agent = AgentProcess(
        installed("cnipamd"), tmp_path / "agent.sock", tmp_path, "--metrics-address", "127.0.0.1:0", "--db", str(db)
    )
    driver: RunningDriver | None = None
    try:
        agent.start()
        (tmp_path / "driver").mkdir()
        driver = RunningDriver(
            tmp_path / "driver", "--metrics-address", "127.0.0.1:0", "--reuse-delay", "1h", store=["--db", str(db)]
        )
        yield agent, driver, db
    finally:
        if driver is not None:
            driver.stop()
        if agent.alive():
            agent.stop()


def test_a_real_prometheus_scrapes_cnipamd_and_the_driver(
    daemons: tuple[AgentProcess, RunningDriver, Path], tmp_path: Path
) -> None:
    agent, driver, db = daemons
    agent_target = agent.events("listening")[0]["metrics"].removeprefix("http://").removesuffix("/metrics")
    driver_log = (driver.folder / "stderr.log").read_text()
    driver_target = listening(driver_log)["metrics"].removeprefix("http://").removesuffix("/metrics")

    for number in range(7):
        assert "ips" in cni_call("ADD", db, agent.socket, f"c{number}")
    refused = cni_call("ADD", db, agent.socket, "intruder", **{"ipv4-address": "10.77.0.3/24"})  # c1 holds .3
    assert refused["code"] == 100
    assert cni_call("CHECK", db, agent.socket, "c0") == {}
    for number in (2, 5):
        assert cni_call("DEL", db, agent.socket, f"c{number}") == {}
    pool = driver.ok("RequestPool", {"Pool": DOCKER_POOL})["PoolID"]
    for _ in range(3):
        driver.ok("RequestAddress", {"PoolID": pool})
    driver.ok("ReleaseAddress", {"PoolID": pool, "Address": "10.88.0.2"})
    in_store = {prefix: sum(ip.startswith(prefix) for ip, _ in held(db)) for prefix in ("10.77.", "10.88.")}
    assert in_store == {"10.77.": 5, "10.88.": 2}

    server = PrometheusServer(
        tmp_path / "prometheus", {"cnipamd": agent_target, "docker": driver_target}, rule_files=[RULES]
    )
    try:
        expected = {
            'up{job="cnipamd"}': 1.0,
            'up{job="docker"}': 1.0,
            # the pools, as the store holds them, from both daemons (they share the store)
            f'cnipam_pool_addresses{{job="cnipamd",pool="{CNI_POOL}",state="used"}}': float(in_store["10.77."]),
            f'cnipam_pool_addresses{{job="cnipamd",pool="{CNI_POOL}",state="reserved"}}': 1.0,
            # the two DELs rest for the configs' reuse delay, which cnipamd learnt from the calls
            f'cnipam_pool_addresses{{job="cnipamd",pool="{CNI_POOL}",state="cooling"}}': 2.0,
            f'cnipam_pool_addresses{{job="cnipamd",pool="{CNI_POOL}",state="free"}}': 254.0
            - 1
            - in_store["10.77."]
            - 2,
            f'cnipam_pool_size_addresses{{job="cnipamd",pool="{CNI_POOL}",network="promnet"}}': 254.0,
            f'cnipam_pool_addresses{{job="docker",pool="{DOCKER_POOL}",state="used"}}': float(in_store["10.88."]),
            f'cnipam_pool_addresses{{job="cnipamd",pool="{DOCKER_POOL}",state="used"}}': float(in_store["10.88."]),
            f'cnipam_pool_addresses{{job="docker",pool="{CNI_POOL}",state="used"}}': float(in_store["10.77."]),
            f'cnipam_pool_addresses{{job="docker",pool="{DOCKER_POOL}",state="cooling"}}': 1.0,  # its --reuse-delay
            # the driver never saw the CNI config's delay: those two addresses are free to it
            f'cnipam_pool_addresses{{job="docker",pool="{CNI_POOL}",state="cooling"}}': 0.0,
            f'cnipam_store_up{{job="docker",store="{db}"}}': 1.0,
            # the calls, as the test made them
            'cnipam_cni_request_duration_seconds_count{command="ADD",code="0"}': 7.0,
            'cnipam_cni_request_duration_seconds_count{command="ADD",code="100"}': 1.0,
            'cnipam_cni_request_duration_seconds_count{command="CHECK",code="0"}': 1.0,
            'cnipam_cni_request_duration_seconds_count{command="DEL",code="0"}': 2.0,
            'cnipam_docker_request_duration_seconds_count{method="RequestPool",code="200"}': 1.0,
            'cnipam_docker_request_duration_seconds_count{method="RequestAddress",code="200"}': 3.0,
            'cnipam_docker_request_duration_seconds_count{method="ReleaseAddress",code="200"}': 1.0,
            # every write waited for the store's writer lock once (the refused ADD too, and the reboot repair
            # cnipamd runs on a --db store at start), every call queued once
            'cnipam_lock_wait_seconds_count{job="cnipamd",lock="store"}': 11.0,
            'cnipam_lock_wait_seconds_count{job="cnipamd",lock="queue"}': 11.0,
            'cnipam_lock_wait_seconds_count{job="docker",lock="store"}': 5.0,
            'sum(cnipam_store_errors_total{job="cnipamd"})': 0.0,
            'cnipam_etcd_txn_retries_total{job="cnipamd"}': 0.0,
            'cnipam_collector_passes_total{job="cnipamd"}': 0.0,
        }
        assert server.wait_for(expected) == expected
        # a second pass after more changes: the gauges follow the store
        assert cni_call("DEL", db, agent.socket, "c0") == {}
        later = {f'cnipam_pool_addresses{{job="docker",pool="{CNI_POOL}",state="used"}}': in_store["10.77."] - 1.0}
        assert server.wait_for(later) == later
        # the alert rules are loaded and evaluate (the pools are far from full: nothing fires)
        groups = server.api("rules")["groups"]
        rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        assert rules == {"CnipamPoolAlmostFull": "ok", "CnipamCollectorCandidatesStay": "ok", "CnipamStoreDown": "ok"}
        assert server.query("ALERTS") == {}
    finally:
        server.stop()


def test_promtool_checks_the_alert_rules_and_runs_their_tests() -> None:
    need_prometheus()
    promtool = shutil.which("promtool")
    assert promtool is not None, "the prometheus package ships promtool"
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 3 rules found" in checked.stdout, checked.stdout + checked.stderr
    tests = Path(__file__).with_name("cnipam-alerts.test.yml")
    tested = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("forwarded", [False, True], ids=["direct", "through-cnipamd"])
def test_the_plugin_never_imports_prometheus_client(tmp_path: Path, forwarded: bool) -> None:
    """`python -X importtime` over a real ADD, run by the launcher's own interpreter flags,
    alone and forwarded to a cnipamd that serves metrics."""
    db, socket = tmp_path / "ipam.db", tmp_path / "agent.sock"
    agent = AgentProcess(installed("cnipamd"), socket, tmp_path, "--metrics-address", "127.0.0.1:0")
    if forwarded:
        agent.start()
    try:
        config = {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.5.0.0/24"}}
        env = plugin_env("ADD", db, {"CNI_CONTAINERID": "c", "CNIPAM_AGENT_SOCKET": str(socket)})
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-I", "-S", installed("cnipam")],
            input=as_stdin(config),
            env=env,
            capture_output=True,
            timeout=CALL_TIMEOUT,
        )
        assert json.loads(done.stdout)["ips"][0]["address"] == "10.5.0.2/24"
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines() if "|" in line}
        assert ("cnipam.agent_client" if forwarded else "cnipam.commands") in imported  # the probe sees imports
        assert [name for name in imported if name.split(".")[0] == "prometheus_client" or "metrics" in name] == []
        if forwarded:
            assert [event["command"] for event in agent.events("call")] == ["ADD"]
    finally:
        if agent.alive():
            agent.stop()


@pytest.mark.parametrize("executable", ["cnipamd", "cnipam-docker"])
def test_metrics_are_loopback_unless_public_is_asked_for(tmp_path: Path, executable: str) -> None:
    command = [installed(executable), "--socket", str(tmp_path / "x.sock"), "--db", str(tmp_path / "x.db")]
    for address, says in (
        ("0.0.0.0:9464", "--metrics-public"),
        ("localhost", "HOST:PORT"),
        (":" + "9" * 5000, "HOST:PORT"),
    ):
        done = subprocess.run(
            [*command, "--metrics-address", address], capture_output=True, text=True, timeout=30, env=dict(os.environ)
        )
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "x.sock").exists()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_collector_counts_its_passes_candidates_and_releases(tmp_path: Path) -> None:
    """cnipamd's collector (--reconcile-interval) on a store with one leak: the pass
    counter moves, the leak is a candidate (twice) and is released, and the last pass sees
    none; the series are the Reconciler's own counters."""
    db, cache = tmp_path / "ipam.db", tmp_path / "cni-cache"
    for container in ("alive", "gone"):
        assert "ips" in cni_call("ADD", db, tmp_path / "no-agent.sock", container)
    cache_entry(cache, "promnet", "alive")
    agent = AgentProcess(
        installed("cnipamd"),
        tmp_path / "agent.sock",
        tmp_path,
        "--metrics-address",
        "127.0.0.1:0",
        "--reconcile-interval=0.2s",
        "--reconcile-grace=0",
        f"--cni-cache-dir={cache}",
        f"--db={db}",
    )
    agent.start()
    try:
        url = agent.events("listening")[0]["metrics"]
        deadline = time.monotonic() + 20
        while not agent.events("released-leak") and time.monotonic() < deadline:
            time.sleep(0.1)
        passes = scrape(url)["cnipam_collector_passes_total", ()]
        time.sleep(0.5)  # another pass or two, with nothing left to release
        found = scrape(url)
        assert found["cnipam_collector_passes_total", ()] > passes >= 1
        # a candidate in two passes: the collector releases an owner only when a later pass sees it leaked again
        assert found["cnipam_collector_candidates_total", ()] == 2
        assert found["cnipam_collector_released_addresses_total", ()] == 1
        assert found["cnipam_collector_last_candidates", ()] == 0
        assert found["cnipam_etcd_blocks_returned_total", ()] == 0  # SQLite has no blocks
        assert [event["container"] for event in agent.events("released-leak")] == ["gone"]
        assert [ip for ip, _ in held(db)] == ["10.77.0.2"]
    finally:
        assert agent.stop() == 0
