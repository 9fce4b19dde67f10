"""cnipam: IP address management for containers.

The package is imported by a fresh plugin process for every CNI call, so nothing
here may import more than the standard library's C-level modules eagerly. The modules a
call runs through use `posix`, not `os`, whose own imports (`_collections_abc`,
`posixpath`, `stat`) cost a call about a millisecond; tests/plugin/test_startup_imports.py
keeps `os` and the other heavier modules off that path.
"""

__version__ = "0.1.0"
