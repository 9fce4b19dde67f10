"""The plugin's own modules loaded from one file instead of thirty.

A call runs in a new interpreter that imports about thirty of cnipam's modules, and
Python's import system spends about 50 us on each one before its code runs: it searches
the package's folder, stats the source, opens and reads its byte code file and checks it,
all in Python code. That was a fifth of an ADD (docs/benchmarks.md). The launcher installs
this finder first: it holds the byte code of the modules the last calls imported, read
from one file, `<package>/__pycache__/plugin-modules.<tag>.bin`, and a module found there
costs one `stat` of its source and the run of its code.

It is exactly as fresh as Python's own byte code cache, because it is that cache: each
entry is the module's `.pyc` as Python wrote it, and is used only while its header still
matches the source's modification time and size, which is Python's own rule; anything
else (a changed or missing source, a hash-based `.pyc`, another interpreter's magic
number, an unreadable or damaged cache) is left to the ordinary import. After a call that
imported a module the ordinary way, the launcher saves the file again, with the `.pyc`
files Python has just checked or written; where the folder is not writable (an install
owned by another user) nothing is saved and every call imports the ordinary way.
"""

from __future__ import annotations

import marshal
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# The interpreter's byte code magic number, from its own importer (importlib.util, where it
# is documented, imports `warnings`: a few milliseconds).
_MAGIC: bytes = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
_Spec = type(__spec__)  # importlib.machinery.ModuleSpec, without importing importlib


def _pyc_matches(pyc: bytes, source: str) -> bool:
    """Python's own test of a timestamp-based `.pyc` against its source."""
    if len(pyc) < 16 or pyc[:4] != _MAGIC or pyc[4:8] != b"\0\0\0\0":
        return False
    try:
        info = posix.stat(source)
    except OSError:
        return False
    stamp = (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (info.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    return pyc[8:16] == stamp


def _kept(name: str) -> bool:
    return name == "__future__" or name == "cnipam" or name.startswith("cnipam.")


class ModuleCache:
    """A meta path finder and loader over the modules of one cache file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, tuple[str, bool, bytes]] = {}  # name -> (source, is a package, .pyc)
        try:
            loaded = marshal.loads(_read(path))
        except (OSError, ValueError, EOFError, TypeError):
            return
        if isinstance(loaded, dict):
            self.entries = {
                name: entry
                for name, entry in loaded.items()
                if isinstance(name, str) and _kept(name) and isinstance(entry, tuple) and len(entry) == 3
                and isinstance(entry[0], str) and isinstance(entry[1], bool) and isinstance(entry[2], bytes)
            }  # fmt: skip

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = self.entries.get(name)
        if entry is None or not _pyc_matches(entry[2], entry[0]):
            return None
        spec = _Spec(name, self, origin=entry[0], is_package=entry[1])  # type: ignore[arg-type]  # a Loader but by name
        spec.has_location = True
        if entry[1]:
            spec.submodule_search_locations = [entry[0].rpartition("/")[0]]
        return spec

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(marshal.loads(memoryview(self.entries[module.__name__][2])[16:]), module.__dict__)

    def save(self) -> None:
        """When this process imported a module of ours the ordinary way, write the file
        again: what it imported, and the entries it did not use that are still fresh (so
        calls that import different modules do not keep replacing each other's). Best
        effort: a folder it cannot write is no error."""
        imported: dict[str, tuple[str, bool, bytes]] = {}
        for name, module in list(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            if not _kept(name) or spec is None or spec.loader is self or not isinstance(spec.origin, str):
                continue
            if spec.origin.endswith(".py") and isinstance(spec.cached, str):
                try:
                    pyc = _read(spec.cached)
                except OSError:
                    continue
                if _pyc_matches(pyc, spec.origin):
                    imported[name] = (spec.origin, spec.submodule_search_locations is not None, pyc)
        if not imported.keys() - self.entries.keys() and all(
            self.entries[name] == entry for name, entry in imported.items()
        ):
            return
        kept = {name: entry for name, entry in self.entries.items() if _pyc_matches(entry[2], entry[0])}
        temporary = f"{self.path}.{posix.getpid()}"
        try:
            fd = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            data = marshal.dumps({**kept, **imported})
            while data:
                data = data[posix.write(fd, data) :]
            posix.close(fd)
            posix.rename(temporary, self.path)
        except OSError:
            try:
                posix.unlink(temporary)
            except OSError:
                pass


def _read(path: str) -> bytes:
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while chunk := posix.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        posix.close(fd)


def install(site_packages: str) -> ModuleCache:
    """The finder for the package installed in `site_packages`, first in line from now on."""
    cache = ModuleCache(f"{site_packages}/cnipam/__pycache__/plugin-modules.{sys.implementation.cache_tag}.bin")
    sys.meta_path.insert(0, cache)
    return cache
