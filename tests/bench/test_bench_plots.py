"""bench/plots.py draws PNGs from plain numbers (made up here), with or without run.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import plots  # bench/ is a folder of scripts, not a package: pytest's pythonpath has it
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed (the `test` extra has it)"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 10_000  # a real picture, not an empty canvas


def test_latency_vs_leases_writes_a_png_with_an_empty_store_point(tmp_path: Path) -> None:
    series = [
        plots.Series("cnipam, /16", [0, 10_000, 50_000], [30.1, 31.0, 31.5], [29.0, 30.2, 30.9], [32.0, 33.1, 34.0]),
        plots.Series("cnipam, /8", [0, 1_000_000], [30.5, 33.0], [29.5, 31.0], [31.0, 36.0], dashed=True),
        plots.Series(
            "host-local, /16", [0, 10_000, 50_000], [3.8, 131.0, 681.0], [3.5, 120.0, 650.0], [4.2, 140.0, 700.0]
        ),
    ]
    out = plots.latency_vs_leases(series, tmp_path / "img" / "latency.png")
    assert out == tmp_path / "img" / "latency.png"
    assert is_png(out)


def test_docker_load_writes_a_png(tmp_path: Path) -> None:
    clients: list[float] = [1, 4, 16]
    throughput = [
        plots.Series("cnipam-docker", clients, [900, 1500, 1400], [850, 1400, 1200], [950, 1600, 1500]),
        plots.Series("do-nothing HTTP server", clients, [4000, 6000, 5500], [3900, 5800, 5000], [4100, 6100, 5900]),
    ]
    p99 = [plots.Series("cnipam-docker", clients, [2.0, 5.0, 20.0], [1.8, 4.0, 15.0], [2.5, 6.0, 25.0])]
    assert is_png(plots.docker_load(throughput, p99, tmp_path / "docker.png", ceiling=2500.0, p99_target=10.0))


def test_script_renders_json_jobs_as_run_py_sends_them(tmp_path: Path) -> None:
    """The path bench/run.py takes when its own interpreter has no matplotlib."""
    line = {"label": "cnipam", "x": [0, 10_000], "median": [30.0, 31.0], "low": [29.0, 30.0], "high": [31.0, 32.0]}
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"plot": "latency_vs_leases", "path": str(tmp_path / "a.png"), "series": [line]}]))
    done = subprocess.run(
        [sys.executable, str(BENCH / "plots.py"), str(jobs)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert is_png(tmp_path / "a.png")


def test_concurrency_writes_a_png_with_a_panel_per_verb(tmp_path: Path) -> None:
    line = {"label": "SQLite, direct", "x": [1, 8, 64], "p50": [18.0, 70.0, 500.0], "p99": [30.0, 150.0, 900.0]}
    other = {**line, "label": "host-local", "p50": [7.0, 30.0, 250.0], "p99": [8.0, 40.0, 360.0]}
    path = plots.concurrency({"ADD": [line, other], "DEL": [line]}, tmp_path / "c.png")
    assert is_png(path)
