"""The SQLite C module loaded without functools (cnipam/store/sqlite_module.py)."""

import subprocess
import sys
import sysconfig

from cnipam.store.sqlite_module import preload_sqlite

PROBE = """
import sys
sys.path.insert(0, {path!r})
import cnipam.store.sqlite as engine
loaded = sorted(name for name in ("functools", "collections") if name in sys.modules)
db = engine.connect(":memory:", isolation_level=None)
db.execute("CREATE TABLE t (x)")
for i in range(500):  # the same statements again and again: the statement cache at work
    db.execute("INSERT INTO t VALUES (?)", (i % 7,))
total = db.execute("SELECT sum(x) FROM t").fetchone()[0]
import functools
print(loaded, total, functools.lru_cache.__module__)
"""


def test_a_fresh_plugin_process_loads_sqlite_without_functools() -> None:
    probe = PROBE.format(path=sysconfig.get_path("purelib"))
    done = subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True, text=True, check=True)
    loaded, total, module = done.stdout.rsplit(maxsplit=2)
    assert int(total) == sum(i % 7 for i in range(500))
    assert module == "functools"  # the real functools imports normally afterwards
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        assert loaded == "[]", "the stand-in no longer keeps functools out: re-measure and revisit sqlite_module"


def test_nothing_is_stood_in_once_functools_is_loaded() -> None:
    import functools

    assert preload_sqlite() is False
    assert sys.modules["functools"] is functools
