"""A real Prometheus server (Debian's `prometheus` package, which dev.sh installs) with a
private config, storage folder and loopback port, scraping targets every second; and its
HTTP API, as an operator's dashboards and alerts query it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

SCRAPE_INTERVAL = "1s"


def need_prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("no prometheus binary (Debian's prometheus package; ./dev.sh test installs it as root)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    """Prometheus scraping `targets` (job name -> host:port), with `rule_files` loaded."""

    def __init__(self, folder: Path, targets: dict[str, str], rule_files: list[Path] | None = None) -> None:
        executable = need_prometheus()
        folder.mkdir(parents=True, exist_ok=True)
        jobs = [
            {"job_name": job, "scrape_interval": SCRAPE_INTERVAL, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ]
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(path) for path in rule_files or []],
            "scrape_configs": jobs,
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                executable,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        self.folder = folder
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"prometheus did not start: {(folder / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            document = json.load(answer)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant vector: each series' labels (less __name__) -> its value."""
        result = self.api("query", query=expression)["result"]
        return {
            tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")): float(item["value"][1])
            for item in result
        }

    def value(self, expression: str) -> float | None:
        """The value of an expression that selects one series (None when it selects none)."""
        found = self.query(expression)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    def wait_for(self, expected: dict[str, float], timeout: float = 30.0) -> dict[str, float | None]:
        """Poll until every expression has its expected value (scrapes are every second);
        what each one was at the end."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {expression: self.value(expression) for expression in expected}
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.log.close()
