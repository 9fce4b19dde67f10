"""The agent's log: one JSON object per line on stderr, which journald keeps as is and
any log shipper can parse without a grammar."""

from __future__ import annotations

import json
import sys
import threading
import time

_write_lock = threading.Lock()  # calls are answered on many threads: keep lines whole


def log(event: str, **fields: object) -> None:
    line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str) + "\n"
    with _write_lock:
        sys.stderr.write(line)
        sys.stderr.flush()
