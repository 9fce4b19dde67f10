"""Reading a small file that a config names (host-local's `resolvConf`, etcd's
`passwordFile`).

A config value is not trusted to name something sensible: a FIFO or a terminal would
block the plugin for ever (a runtime then kills it with nothing said), a device such as
`/dev/zero` never ends. So the file is opened without blocking and without becoming our
controlling terminal, must be a regular file, and is read up to a limit.
"""

from __future__ import annotations

import os
import stat

from .core.errors import FileUnreadable


def read_config_file(path: str, what: str, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`; FileUnreadable naming `what` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileUnreadable(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileUnreadable(f"{what}: {path} is not a regular file")
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileUnreadable(f"{what}: cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
