"""A bounded libFuzzer session over the request parsers (tests/plugin/fuzz/request_parsers.py),
when atheris is installed (it needs a clang-built wheel; without it this is skipped and
the hypothesis tests in test_fuzz_plugin.py still cover the same parsers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
FUZZ = Path(__file__).with_name("fuzz")


def test_libfuzzer_finds_no_crash_in_the_request_parsers(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)  # the seeds, and whatever this session adds, in tmp
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "request_parsers.py"),
            "-runs=300000",
            "-max_total_time=15",
            "-max_len=4096",
            str(corpus),
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    report = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, report[-3000:]
    assert "Done" in report, report[-3000:]
