"""The address history in etcd: each host appends its records under its own keys and
prunes them itself, in the transactions that make the changes.

* `history/<host>/<sequence, 16 hex digits>`: one record (core.history) as JSON, written
  by that host, whichever host the lease was on (the record's `host` says that).
* `historylog/<host>`: the host's log: the sequence number of its next record, of its
  oldest kept one, and marks (sequence, time) saying that every record below the
  sequence was written by that time. Read with the change's other reads (an ADD's
  prefetch; a warm change knows it already), compared and rewritten by every change
  that appends: so appending costs no extra round trip, and two processes of one host,
  which queue on its flock anyway, cannot hand out one sequence number twice.
* `historyretention`: the store's retention, shared by every host (core.history).

Pruning is a key range delete in the same Txn, never a read: records below
`prune_end`'s end go, at most as many as the change appends plus PRUNE_BATCH. The
count is `next - oldest`; the age comes from the marks, added at most every 1/MARKS of
the maximum age, so a record outlives the age by less than that. Each host bounds its own
records. A host that stops writing (gone for good, `cnipamctl hosts release`d) leaves
at most the retention's count of records; once it has written nothing for longer than
the retention's age, every one of them is past it, and cnipamd's reconciler on any host
(or `cnipamctl history-retention`) deletes them with the log (`silent`).
"""

from __future__ import annotations

from ..core.addresses import format_ip, parse_ip
from ..core.errors import DecodeFailure, InvalidConfig, StoreCorrupt
from ..core.history import DEFAULT_RETENTION, PRUNE_BATCH, HistoryRecord, Retention, prune_end
from ..core.json_codec import dumps, loads
from ..core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .etcdv3 import KeyValue

MARKS = 16  # a mark per 1/MARKS of the retention's age (at most two: see appended)
MIN_MARK_SPACING = 60.0


class HistoryLog(Record):
    """A host's log as read (`revision` 0: absent, a host that never wrote history)."""

    __slots__ = ("next", "oldest", "marks", "written", "revision")

    def __init__(
        self,
        next: int = 0,
        oldest: int = 0,
        marks: tuple[tuple[int, float], ...] = (),
        written: float = 0.0,
        revision: int = 0,
    ) -> None:
        self.next = next
        self.oldest = oldest
        self.marks = marks
        self.written = written  # when the host last appended
        self.revision = revision

    def appended(self, count: int, now: float, retention: Retention) -> tuple[HistoryLog, int]:
        """The log once `count` records are appended at `now` (from sequence `next`), and
        the sequence below which records go (`oldest` when none does)."""
        marks = list(self.marks)
        # A mark says when the host last appended, so a record's time is known within one
        # spacing even after a silent spell; two marks at most fall within one spacing.
        if count and (not marks or now - marks[-1][1] >= max(retention.max_age / MARKS, MIN_MARK_SPACING)):
            marks.append((self.next, self.written or now))
        newest = self.next + count - 1
        batch = count + PRUNE_BATCH
        # Each record's time at the latest, from the first mark above it (else: written just now).
        oldest = [
            (sequence, next((at for mark, at in marks if mark > sequence), now))
            for sequence in range(self.oldest, min(self.oldest + batch, newest + 1))
        ]
        end = min(prune_end(oldest, newest, retention, now, batch) or self.oldest, self.next)  # not this change's
        kept = tuple((mark, at) for mark, at in marks if mark > end)
        return HistoryLog(self.next + count, end, kept, now if count else self.written, self.revision), end


def silent(log: HistoryLog, retention: Retention, now: float) -> bool:
    """Whether every record of the log is past the retention's age."""
    return log.written < now - retention.max_age


def decode_log(kvs: list[KeyValue]) -> HistoryLog:
    if not kvs:
        return HistoryLog()
    try:
        record = loads(kvs[0].value, "etcd value")
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        marks = tuple((int(mark), float(at)) for mark, at in record.get("marks", []))
        written = float(record.get("written", 0.0))
        return HistoryLog(int(record["next"]), int(record["oldest"]), marks, written, kvs[0].mod_revision)
    except (ValueError, KeyError, TypeError, DecodeFailure) as exc:
        raise StoreCorrupt(f"etcd key {kvs[0].key.decode(errors='replace')} is not a history log ({exc})") from None


def encode_log(log: HistoryLog) -> bytes:
    marks = [list(mark) for mark in log.marks]
    return dumps({"next": log.next, "oldest": log.oldest, "marks": marks, "written": log.written}).encode()


def decode_retention(kvs: list[KeyValue]) -> Retention:
    if not kvs:
        return DEFAULT_RETENTION
    try:
        record = loads(kvs[0].value, "etcd value")
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        return Retention(float(record["max_age"]), int(record["max_records"]))
    except (ValueError, KeyError, TypeError, DecodeFailure) as exc:
        raise StoreCorrupt(f"etcd key {kvs[0].key.decode(errors='replace')} is not a retention ({exc})") from None


def encode_retention(retention: Retention) -> bytes:
    return dumps({"max_age": retention.max_age, "max_records": retention.max_records}).encode()


def encode_record(record: HistoryRecord) -> bytes:
    fields = {
        "at": record.at, "event": record.event, "ip": format_ip(record.family, record.address), "pool": record.pool,
        "network": record.network, "handle": record.handle, "container": record.container_id,
        "ifname": record.ifname, "netns": record.netns, "host": record.host, "boot": record.boot,
        "held_from": record.held_from,
    }  # fmt: skip
    return dumps(fields).encode()


def decode_record(kv: KeyValue) -> HistoryRecord:
    try:
        record = loads(kv.value, "etcd value")
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        family, address = parse_ip(record["ip"], "history record")
        handle = record["handle"]
        return HistoryRecord(
            float(record["at"]), str(record["event"]), family, address, str(record["pool"]), str(record["network"]),
            None if handle is None else str(handle), str(record["container"]), str(record["ifname"]),
            str(record["netns"]), str(record["host"]), str(record["boot"]), float(record["held_from"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, DecodeFailure, InvalidConfig) as exc:
        raise StoreCorrupt(f"etcd key {kv.key.decode(errors='replace')} is not a history record ({exc})") from None
