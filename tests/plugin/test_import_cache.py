"""The plugin's module cache (cnipam/import_cache.py) in fresh interpreters, on a package
of its own in a temp site-packages: saved after the ordinary imports, used by the next
process, never staler than Python's own byte code cache, and harmless when it cannot be
written or read."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cnipam.import_cache

PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("probe_cache", {module!r})
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)
sys.path.insert(0, {site!r})
cache = probe.install({site!r})
import cnipam.inner.value
print(cnipam.inner.value.VALUE, type(cnipam.inner.value.__spec__.loader).__name__, cnipam.inner.__path__[0])
cache.save()
"""


def package(site: Path, value: str) -> None:
    inner = site / "cnipam" / "inner"
    inner.mkdir(parents=True, exist_ok=True)
    (site / "cnipam" / "__init__.py").write_text("")
    (inner / "__init__.py").write_text("from __future__ import annotations\n")
    (inner / "value.py").write_text(f"from __future__ import annotations\nVALUE = {value!r}\n")


def run(site: Path) -> tuple[str, str, str]:
    probe = PROBE.format(module=cnipam.import_cache.__file__, site=str(site))
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True)
    value, loader, path = done.stdout.split()
    return value, loader, path


def cache_file(site: Path) -> Path:
    return site / "cnipam" / "__pycache__" / f"plugin-modules.{sys.implementation.cache_tag}.bin"


def test_the_next_process_loads_from_the_cache_the_first_one_saved(tmp_path: Path) -> None:
    package(tmp_path, "one")
    assert run(tmp_path)[:2] == ("one", "SourceFileLoader")  # the ordinary import, which writes the .pyc
    assert cache_file(tmp_path).exists()
    value, loader, path = run(tmp_path)
    assert (value, loader, path) == ("one", "ModuleCache", str(tmp_path / "cnipam" / "inner"))


def test_a_changed_source_is_imported_anew_and_the_cache_follows(tmp_path: Path) -> None:
    package(tmp_path, "one")
    run(tmp_path)
    assert run(tmp_path)[1] == "ModuleCache"
    time.sleep(1.1)  # a .pyc records whole seconds
    (tmp_path / "cnipam" / "inner" / "value.py").write_text("from __future__ import annotations\nVALUE = 'two'\n")
    assert run(tmp_path)[:2] == ("two", "SourceFileLoader")
    assert run(tmp_path)[:2] == ("two", "ModuleCache")


def test_a_damaged_cache_is_ignored_and_replaced(tmp_path: Path) -> None:
    package(tmp_path, "one")
    run(tmp_path)
    cache_file(tmp_path).write_bytes(b"\x00not marshal data")
    assert run(tmp_path)[:2] == ("one", "SourceFileLoader")
    assert run(tmp_path)[:2] == ("one", "ModuleCache")


def test_a_cache_it_cannot_write_leaves_the_ordinary_import_and_no_litter(tmp_path: Path) -> None:
    """A folder in the cache file's place: it can be neither read nor replaced (as root,
    too, unlike a folder without write permission)."""
    package(tmp_path, "one")
    run(tmp_path)
    cache_file(tmp_path).unlink()
    cache_file(tmp_path).mkdir()
    assert run(tmp_path)[:2] == ("one", "SourceFileLoader")
    assert run(tmp_path)[:2] == ("one", "SourceFileLoader")
    assert sorted(path.name for path in cache_file(tmp_path).parent.glob("plugin-modules.*")) == [
        cache_file(tmp_path).name
    ]
