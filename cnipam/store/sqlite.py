"""The embedded engine: one SQLite file per host.

Layout (schema version 1):
* `leases`: one row per held address, keyed by (family, address) so a duplicate address
  is impossible; a unique index on (handle, slot) makes a second lease per owner and slot
  impossible. Addresses are fixed-width big-endian BLOBs so they sort numerically for both
  families; `ip` repeats them as text for anyone inspecting the file with `sqlite3`.
* `free`: the complement of `leases`, as disjoint intervals per family. Finding the next
  free address at or after X is one index seek, whatever the number of leases or the
  size of the subnet (an IPv6 /48 is one interval until something is taken from it).
* `cursors`: the round-robin position per pool (shared/reference/ecs-ipam.md §6).
* `docker_pools` (version 2): the Docker driver's pools, one block per row with its
  bounds as BLOBs for an overlap seek; ids come from the `counters` row `docker_pool`,
  which only ever grows, so an id is never handed out twice. A pool's addresses are
  ordinary rows of `leases` (cnipam.core.docker_pools says how they are marked).
* version 3, the life of an address after its first day: `leases.boot` and `leases.netns`
  (the kernel boot and the CNI_NETNS a CNI lease was made in); `released`, the free
  addresses released within the last hour with the time of release (the reuse delay,
  core.reuse), and for those a reboot took from an attachment, that attachment's handle
  and slot (it gets the address back if it returns); `repaired_boot`, the boot whose
  earlier boots' leases were last released (core.reboot); `sightings`, when a collector
  first saw an owner leaked (core.collector: released only when seen again later).
* `leases.gateway` (version 4): for a lease, the gateway reserved for the range it came
  from, so its last release can let the reservation go (BLOB, NULL for none).
* version 5: `docker_pool_block` is no longer unique: Docker networks on one `--subnet`
  with distinct `--ip-range`s (siblings) are pools of one block (core.docker_pools).
* version 6, the address history (core.history): `history`, one row per allocation and
  per release (`ip` as text, as in `leases`), its `id` the order written (the oldest
  pruned first, so ids run without gaps and the count is max(id) - min(id) + 1); no
  other index, so that recording costs an ADD one appended row (`cnipamctl history`
  scans it: 13 ms for 100,000 records, bench/history.py);
  `history_retention`, the store's retention when not the default.

Writers serialise on an `flock` of `<db>.lock` before `BEGIN IMMEDIATE`: the kernel
queues waiters in order, where SQLite's own busy handler sleeps and polls (measured in
shared/reference/distributed.md §3.2: 430-930 ms tails with busy_timeout alone, 14-31 ms
with the flock).

Durability (README, Durability). Every commit is on the disk before it returns: one
`fdatasync` of the `-wal` file after the COMMIT, under the writers' flock
(`_SharedFile.committed`), so a committed change survives a process crash, a kernel crash
and a power loss alike, and nothing else of a call waits for the disk. That sync is ours,
not SQLite's `synchronous=FULL` (the connection runs `NORMAL`, which in WAL mode differs
only in that sync): SQLite also syncs the WAL's folder at the first sync of every opening
of the `-wal`, and the plugin's process opens it once per call, so FULL costs it two syncs
a call. The folder needs no sync while the `-wal` exists; whenever SQLite makes the file
anew, it writes and syncs its header (and the folder) itself before any commit in it.
The plugin's own process never closes its connection (plugin.call_opener): closing the
last connection of a file checkpoints the WAL into it and deletes the `-wal` and `-shm`,
more syncs, and the next call would make both files again and sync their folder.
Instead the commit that takes the WAL past CHECKPOINT_BYTES checkpoints it, which
spreads a checkpoint's syncs over the calls it covers and keeps the WAL short: a process
that opens the file alone rebuilds the WAL's index by reading all of it. The checkpoint
empties the WAL (`TRUNCATE`): what SQLite's own checkpoints (`wal_autocheckpoint`, still
there behind ours) record of their progress lives in the `-shm`, which the next process to
open the file alone starts afresh, so it would find a WAL of old frames and copy them all
again at its own commit, every call. A checkpoint syncs the WAL before it writes the file
and the file before the WAL is emptied, and the next commit syncs the new WAL's header
with its own frames.
"""

from __future__ import annotations

import posix
import time
from _thread import RLock
from fcntl import LOCK_UN, flock

from ..config_files import HELD_DATABASES, is_regular_file
from ..core.addresses import BITS, format_ip, from_bytes, parse_cidr, to_bytes
from ..core.allocator import gateway_reservation, grant, refuse_taken, reserved_subnet, returned_address, search_windows
from ..core.errors import (
    AddressConflict,
    CnipamError,
    InvalidConfig,
    NotFound,
    StoreBusy,
    StoreCorrupt,
    StoreFull,
    StoreIOError,
)
from ..core.history import (
    ALLOCATED,
    COLLECTED,
    DEFAULT_RETENTION,
    IMPORTED,
    PRUNE_BATCH,
    PRUNE_EVERY,
    RELEASED,
    REPAIRED,
    HistoryRecord,
    Retention,
    prune_due,
    prune_end,
    record_of,
)
from ..core.leases import GATEWAY, LEASE, Cursor, Lease, refuse_changed
from ..core.reuse import FORGET_AFTER, NO_DELAY, Freed, eligibility, last_resort, older
from .base import Batch, Store
from .sqlite_damage import record_damage, recorded_damage
from .sqlite_disk import (
    FULL,
    disk_fault,
    file_state,
    give_up_reserve,
    keep_reserve,
    no_room_for_reserve,
    reading_uri,
)
from .sqlite_module import Connection, DatabaseError, IntegrityError, OperationalError, connect
from .trusted_path import UntrustedPath, check_siblings, trusted_path
from .write_lock import take_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
    from typing import TypeVar

    T = TypeVar("T")

    from ..core.addresses import Network
    from ..core.collector import Collection  # run time: in collect_garbage
    from ..core.docker_pools import AddressUse, DockerPool, PoolClaim  # run time: in the Docker methods
    from ..core.ipam_config import PoolSpec
    from ..core.leases import Owner
    from ..core.pool_usage import PoolUsage
    from ..core.reuse import Eligibility, ReuseDelay
    from ..core.tenancy import Subject
    from .lease_query import LeaseQuery

SCHEMA_VERSION = 6

# The WAL's size after which a commit checkpoints it. A process opening the store alone
# reads the whole WAL to rebuild its index (about 2 us a page here), and a checkpoint
# costs three syncs beyond the commits' own (two, and one for the next commit's new WAL
# header): a hundred-odd pages, about 24 ADDs or DELs of about five pages each, balance the two.
CHECKPOINT_BYTES = 128 * (4096 + 24)  # pages of SQLite's default size, each with its frame header

# Forward migrations: MIGRATIONS[n] takes a store from schema version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE leases (
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            address BLOB NOT NULL CHECK (length(address) = CASE family WHEN 4 THEN 4 ELSE 16 END),
            ip TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('lease', 'gateway')),
            pool TEXT NOT NULL,
            slot TEXT NOT NULL,
            handle TEXT CHECK (handle IS NULL OR kind = 'lease'),
            network TEXT NOT NULL DEFAULT '',
            container_id TEXT NOT NULL DEFAULT '',
            ifname TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            PRIMARY KEY (family, address)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX lease_owner_slot ON leases (handle, slot)",
        "CREATE INDEX lease_attachment ON leases (network, container_id, ifname)",
        """CREATE TABLE free (
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            last BLOB NOT NULL,
            first BLOB NOT NULL CHECK (first <= last),
            PRIMARY KEY (family, last)
        ) WITHOUT ROWID""",
        """CREATE TABLE cursors (
            pool TEXT PRIMARY KEY,
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            address BLOB NOT NULL,
            moves_on_release INTEGER NOT NULL CHECK (moves_on_release IN (0, 1))
        ) WITHOUT ROWID""",
        "INSERT INTO free VALUES (4, x'ffffffff', x'00000000')",
        "INSERT INTO free VALUES (6, x'ffffffffffffffffffffffffffffffff', x'00000000000000000000000000000000')",
    ),
    (
        """CREATE TABLE docker_pools (
            id TEXT PRIMARY KEY,
            address_space TEXT NOT NULL,
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            pool TEXT NOT NULL,
            first BLOB NOT NULL,
            last BLOB NOT NULL CHECK (first <= last),
            sub_pool TEXT,
            options TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX docker_pool_block ON docker_pools (family, first)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO counters VALUES ('docker_pool', 0)",
    ),
    (
        "ALTER TABLE leases ADD COLUMN boot TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE leases ADD COLUMN netns TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE released (
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            address BLOB NOT NULL CHECK (length(address) = CASE family WHEN 4 THEN 4 ELSE 16 END),
            released REAL NOT NULL,
            handle TEXT,
            slot TEXT CHECK ((handle IS NULL) = (slot IS NULL)),
            PRIMARY KEY (family, address)
        ) WITHOUT ROWID""",
        "CREATE INDEX released_age ON released (released)",
        "CREATE UNIQUE INDEX released_return ON released (handle, slot) WHERE handle IS NOT NULL",
        "CREATE INDEX released_held ON released (released) WHERE handle IS NOT NULL",
        "CREATE TABLE repaired_boot (one INTEGER PRIMARY KEY CHECK (one = 1), boot TEXT NOT NULL)",
        """CREATE TABLE sightings (
            network TEXT NOT NULL,
            handle TEXT NOT NULL,
            first_seen REAL NOT NULL,
            PRIMARY KEY (network, handle)
        ) WITHOUT ROWID""",
    ),
    ("ALTER TABLE leases ADD COLUMN gateway BLOB",),
    (  # Docker sibling networks share their parent subnet: several pools may start at one address
        "DROP INDEX docker_pool_block",
        "CREATE INDEX docker_pool_block ON docker_pools (family, first)",
    ),
    (
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            ip TEXT NOT NULL,
            at REAL NOT NULL,
            event TEXT NOT NULL,
            family INTEGER NOT NULL CHECK (family IN (4, 6)),
            address BLOB NOT NULL CHECK (length(address) = CASE family WHEN 4 THEN 4 ELSE 16 END),
            pool TEXT NOT NULL,
            network TEXT NOT NULL,
            handle TEXT,
            container_id TEXT NOT NULL,
            ifname TEXT NOT NULL,
            netns TEXT NOT NULL,
            host TEXT NOT NULL,
            boot TEXT NOT NULL,
            held_from REAL NOT NULL
        )""",
        """CREATE TABLE history_retention (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            max_age REAL NOT NULL CHECK (max_age > 0),
            max_records INTEGER NOT NULL CHECK (max_records > 0)
        )""",
    ),
)

_COLUMNS = "family, address, kind, pool, slot, handle, network, container_id, ifname, created, boot, netns, gateway"
_POOL_COLUMNS = "id, address_space, pool, sub_pool, options, created"
_FIND_FREE = "SELECT first, last FROM free WHERE family = ? AND last >= ? ORDER BY last LIMIT 1"
_RESTING = (
    "SELECT address, released, handle IS NOT NULL FROM released"
    " WHERE family = ? AND address >= ? AND address <= ? ORDER BY address"
)
_OLDEST = (
    "SELECT address, released FROM released"
    " WHERE family = ? AND address >= ? AND address <= ? AND (handle IS NOT NULL) = ?"
    " ORDER BY released LIMIT 1"
)
AGE_PEEK = 1024  # history records a prune reads to judge their age
_DUE = (  # the oldest history record, the newest id and the retention (NULLs: its default)
    "SELECT h.id, h.at, (SELECT max(id) FROM history), r.max_age, r.max_records"
    " FROM (SELECT 1) LEFT JOIN (SELECT id, at FROM history ORDER BY id LIMIT 1) AS h"
    " LEFT JOIN history_retention AS r"
)
_HISTORY_COLUMNS = (
    "at, event, family, address, pool, network, handle, container_id, ifname, netns, host, boot, held_from"
)
_ENDED = "kind = 'lease' AND boot != '' AND boot != ?"  # core.reboot.ended_by_reboot, as an index-free filter


# The Python type of each column of `_COLUMNS`, as cnipam writes them.
_LEASE_TYPES: tuple[type | tuple[type, ...], ...] = (
    int, bytes, str, str, str, (str, type(None)), str, str, str, (float, int), str, str, (bytes, type(None)),
)  # fmt: skip


class _BadRow(Exception):
    """A row holding values the schema's constraints never let in: a damaged page. SQLite
    checks a page's structure, not its values' types, so this is how such damage shows."""


def _lease(row: Sequence[object]) -> Lease:
    """Checked before use, so that a damaged row fails as a damaged store (code 5), not
    later as a bug (999)."""
    if (
        len(row) != len(_LEASE_TYPES)
        or not all(isinstance(value, kind) for value, kind in zip(row, _LEASE_TYPES, strict=True))
        or len(row[1]) != {4: 4, 6: 16}.get(row[0], -1)  # type: ignore[arg-type,call-overload]
        or row[2] not in (LEASE, GATEWAY)
    ):
        raise _BadRow(f"a lease row holds values cnipam never writes: {tuple(row)!r:.200}")
    family, address = from_bytes(row[1])  # type: ignore[arg-type]
    kind, pool, slot, handle, network, container_id, ifname, created, boot, netns, gateway = row[2:]
    return Lease(
        family, address, kind, pool, slot, handle, network, container_id, ifname, created,  # type: ignore[arg-type]
        boot, netns, None if gateway is None else int.from_bytes(gateway, "big"),  # type: ignore[arg-type]
    )  # fmt: skip


def _history_row(record: HistoryRecord) -> tuple[object, ...]:
    return (
        record.ip, record.at, record.event, record.family, to_bytes(record.family, record.address), record.pool,
        record.network,
        record.handle, record.container_id, record.ifname, record.netns, record.host, record.boot, record.held_from,
    )  # fmt: skip


def _history_record(row: Sequence[object]) -> HistoryRecord:
    """As SQLite gives the row back: the types the schema and cnipam wrote (only the
    address is checked, as `_value` checks every address read)."""
    at, event, family, raw, *rest = row
    return HistoryRecord(at, event, family, _value(raw), *rest)  # type: ignore[arg-type]


# What a failed SQLite call raises: its own errors, and UnicodeDecodeError when its message
# or a text value holds bytes that are not UTF-8 (a damaged schema or row); then a row
# whose values are of the wrong kind.
_FAILED = (DatabaseError, UnicodeDecodeError)
_DAMAGED = (DatabaseError, UnicodeDecodeError, _BadRow)
_REREADS = 3  # a read without locks that a writer overtook, run again on a fresh opening


def _value(raw: object) -> int:
    """A stored address BLOB as an integer, checked as `_lease` checks rows."""
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        raise _BadRow(f"an address column holds {raw!r:.80}, not a 4 or 16 byte BLOB")
    return int.from_bytes(raw, "big")


def _releasing(method: Callable[..., T]) -> Callable[..., T]:
    """A release works on a full disk: when it fails for lack of room, the reserve beside
    the store is given up and it runs once more (store/sqlite_disk.py)."""

    def run(self: SQLiteStore, *args: object, **kwargs: object) -> T:
        try:
            return method(self, *args, **kwargs)
        except StoreFull:
            if self._batch is not None or not give_up_reserve(self.path):  # a batch runs it again alone
                raise
        return method(self, *args, **kwargs)

    run.__doc__ = method.__doc__
    return run


class _Counts:
    """core.pool_usage's counts, as SQL: the pool keys in one scan, each range's rows with
    one index range count, its resting addresses from the `released` rows of the range
    (at most an hour's releases), the rows of one pool key (only for a pool whose ranges
    its key does not name) with a scan."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.db = store._db

    def pools(self) -> dict[str, str]:
        found: dict[str, str] = {pool.key: pool.lease_network for pool in self.store.docker_pools()}
        found.update(self.store._read(self._networks))
        return found

    def _networks(self) -> dict[str, str]:
        """Every pool key the rows name, with the network of its first row inside its
        ranges ("" when none is, or the key cannot be read)."""
        from ..core.ipam_config import parse_pool_key

        found = {}
        for (key,) in self.db.execute("SELECT DISTINCT pool FROM leases").fetchall():
            found[key] = ""
            try:
                ranges = parse_pool_key(key)
            except InvalidConfig:
                row = self.db.execute("SELECT network FROM leases WHERE pool = ? LIMIT 1", (key,)).fetchone()
                found[key] = str(row[0]) if row is not None else ""
                continue
            for address_range in ranges:
                family = address_range.network.family
                row = self.db.execute(
                    "SELECT network FROM leases WHERE family = ? AND address BETWEEN ? AND ? AND pool = ? LIMIT 1",
                    (family, to_bytes(family, address_range.first), to_bytes(family, address_range.last), key),
                ).fetchone()
                if row is not None:
                    found[key] = str(row[0])
                    break
        return found

    def in_range(self, family: int, first: int, last: int) -> tuple[int, int]:
        row = self.store._read(
            lambda: self.db.execute(
                "SELECT count(*), coalesce(sum(kind = 'gateway'), 0) FROM leases"
                " WHERE family = ? AND address BETWEEN ? AND ?",
                (family, to_bytes(family, first), to_bytes(family, last)),
            ).fetchone()
        )
        return row[0] - row[1], row[1]

    def is_reserved(self, family: int, address: int) -> bool:
        found = self.store.lookup(family, address)
        return found is not None and found.kind == GATEWAY

    def resting(self, family: int, first: int, last: int, rule: Eligibility) -> int:
        rows = self.store._read(
            lambda: self.db.execute(_RESTING, (family, to_bytes(family, first), to_bytes(family, last))).fetchall()
        )
        return sum(not rule.allows(released, bool(held)) for _, released, held in rows)

    def of_key(self, key: str) -> tuple[int, int, int]:
        row = self.store._read(
            lambda: self.db.execute(
                "SELECT coalesce(min(family), 0), count(*), coalesce(sum(kind = 'gateway'), 0)"
                " FROM leases WHERE pool = ?",
                (key,),
            ).fetchone()
        )
        return row[0], row[1] - row[2], row[2]


class SQLiteStore(Store):
    def __init__(
        self,
        path: str,
        timeout: float = 5.0,
        boot: str = "",
        shared_folders: bool = False,
        reading: bool = False,
    ) -> None:
        """`shared_folders`: accept folders other users could change on the way to the file
        (trusted_path.py; their links are never followed either way). `reading`: the caller
        only reads, so on a full or read-only disk the store is opened read-only instead of
        refused (store/sqlite_disk.py)."""
        self.path = path
        self.timeout = timeout
        self.boot = boot
        self.clock = time.time
        self.reuse_delays = {}
        self.history_host = posix.uname().nodename
        self._history: list[tuple[object, ...]] = []  # the records of the write under way (core.history)
        self._repair_due = False  # as the current write transaction found it (core.reboot)
        self._batch: _Batch | None = None
        self._file = _attach(path, timeout, shared_folders, reading)
        if self._file.version != SCHEMA_VERSION and self._file.read_only:
            version = self._file.version
            self._close_quietly()
            if version == 0:
                raise StoreIOError(f"no store at {path}: the file holds no cnipam schema")
            raise StoreIOError(f"store {path} has schema version {version}; upgrading it needs a writable disk")
        if self._file.version != SCHEMA_VERSION:
            try:
                self._migrate()
            except BaseException:
                self._close_quietly()
                raise

    # -- the interface ---------------------------------------------------------------

    def allocate(self, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        with _Writing(self):
            return self._allocate(owner, pools, self.clock())

    def _allocate(self, owner: Owner, pools: tuple[PoolSpec, ...], now: float) -> list[Lease]:
        """`allocate` inside an open write transaction."""
        for spec in pools:
            self.reuse_delays[spec.key] = spec.reuse.delay
        self._db.execute("DELETE FROM released WHERE released < ?", (now - FORGET_AFTER,))
        held = self._select("WHERE handle = ?", (owner.handle,)) if owner.handle else []
        if self._repair_due and held:  # an attachment back after a reboot: it takes its kept addresses again
            ended = [lease for lease in held if lease.kind == LEASE and lease.boot and lease.boot != self.boot]
            self._release_ended(ended)
            held = [lease for lease in held if lease.kind != LEASE or not lease.boot or lease.boot == self.boot]

        def take_next(spec: PoolSpec, owner: Owner) -> int:
            return self._take_next(spec, owner, now)

        return grant(
            owner,
            pools,
            held,
            now,
            self._reserve_gateway,
            self._take_requested,
            take_next,
            self._insert,
            self._set_cursor,
        )

    def release(self, handle: str | None, addresses: Iterable[tuple[int, int]] = ()) -> list[Lease]:
        return self._release(handle, list(addresses))

    @_releasing
    def _release(self, handle: str | None, addresses: list[tuple[int, int]]) -> list[Lease]:
        with _Writing(self, releasing=True):
            victims = {}
            if handle:
                for lease in self._select("WHERE handle = ?", (handle,)):
                    victims[lease.family, lease.address] = lease
            for family, address in addresses:
                found = self.lookup(family, address)
                if found is not None and found.kind == LEASE:
                    victims[family, address] = found
            now = self.clock()
            for lease in victims.values():
                self._remove(lease, now)
            return list(victims.values())

    @_releasing
    def release_gateway(self, family: int, address: int) -> Lease | None:
        with _Writing(self, releasing=True):
            found = self.lookup(family, address)
            if found is None or found.kind != GATEWAY:
                return None
            subnet = reserved_subnet(found)
            if subnet is None:  # recorded before reservations named their subnet: its pool's leases
                users = self._db.execute(
                    "SELECT count(*) FROM leases WHERE pool = ? AND kind = 'lease'", (found.pool,)
                ).fetchone()[0]
            else:
                users = self._db.execute(
                    "SELECT count(*) FROM leases WHERE family = ? AND address BETWEEN ? AND ? AND kind = 'lease'",
                    (family, to_bytes(family, subnet.value), to_bytes(family, subnet.last)),
                ).fetchone()[0]
            if users:
                served = f"pool {found.pool}" if subnet is None else str(subnet)
                raise AddressConflict(f"gateway {found.ip} still serves {users} lease(s) of {served}")
            self._db.execute("DELETE FROM leases WHERE family = ? AND address = ?", (family, to_bytes(family, address)))
            self._give_back(family, address)
            return found

    def held_by(self, handle: str) -> list[Lease]:
        return self._read(lambda: self._select("WHERE handle = ? ORDER BY family, address", (handle,)))

    def lookup(self, family: int, address: int) -> Lease | None:
        rows = self._read(lambda: self._select("WHERE family = ? AND address = ?", (family, to_bytes(family, address))))
        return rows[0] if rows else None

    def leases(self, network: str | None = None) -> list[Lease]:
        if network is None:
            return self._read(lambda: self._select("ORDER BY family, address", ()))
        return self._read(lambda: self._select("WHERE network = ? ORDER BY family, address", (network,)))

    def scan_leases(self, query: LeaseQuery) -> Iterator[Lease]:
        from .lease_query import PAGE  # only for listings

        where, params = ["1"], []
        if query.within is not None:
            within = query.within
            where.append("family = ? AND address >= ? AND address <= ?")
            params += [within.family, *_span_bytes(within.family, within.value, within.last)]
        for column, value in (("network", query.network), ("handle", query.handle), ("container_id", query.container)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        after = query.after

        def page() -> list[Lease]:
            clause, values = " AND ".join(where), tuple(params)
            if after is not None:
                clause, values = f"{clause} AND (family, address) > (?, ?)", (*values, after[0], to_bytes(*after))
            return self._select(f"WHERE {clause} ORDER BY family, address LIMIT {PAGE}", values)

        while True:
            rows = self._read(page)
            yield from rows
            if len(rows) < PAGE:
                return
            after = (rows[-1].family, rows[-1].address)

    def cursors(self) -> dict[str, Cursor]:
        def scan() -> dict[str, Cursor]:
            rows = self._db.execute("SELECT pool, address, moves_on_release FROM cursors ORDER BY pool")
            return {pool: Cursor(4 if len(raw) == 4 else 6, _value(raw), bool(moves)) for pool, raw, moves in rows}

        return self._read(scan)

    @_releasing
    def collect_garbage(
        self, network: str, valid: Container[tuple[str, str]], grace: float = 0.0, apply: bool = True
    ) -> Collection:
        from ..core.collector import Collection, judge, leaked_owners  # not at the top: ADD and DEL never need it

        def judged(now: float) -> tuple[Collection, list[str]]:
            leased = self._select("WHERE network = ? AND kind = 'lease' AND container_id != ''", (network,))
            leaked = leaked_owners(leased, network, valid)
            seen = self._sightings(network) if grace > 0 else {}
            due, keep = judge(leaked, seen, now, grace)
            candidates = [lease for held in leaked.values() for lease in held]
            return Collection(candidates, [lease for owner in due for lease in leaked[owner]], keep), due

        if not apply:
            return self._read(lambda: judged(self.clock()))[0]
        with _Writing(self, releasing=True):
            now = self.clock()
            collection, due = judged(now)
            for lease in collection.released:
                self._remove(lease, now, COLLECTED)
            if grace > 0:
                self._db.execute("DELETE FROM sightings WHERE network = ?", (network,))
                self._db.executemany(
                    "INSERT INTO sightings VALUES (?, ?, ?)",
                    [(network, owner, at) for owner, at in collection.sightings.items()],
                )
            else:  # one pass: no sighting is made, and those of the owners released are of no use any more
                self._db.executemany(
                    "DELETE FROM sightings WHERE network = ? AND handle = ?", [(network, owner) for owner in due]
                )
            return collection

    def _sightings(self, network: str) -> dict[str, float]:
        return dict(
            self._db.execute("SELECT handle, first_seen FROM sightings WHERE network = ?", (network,)).fetchall()
        )

    def earlier_boot_leases(self) -> list[Lease]:
        return self._read(self._earlier_boot_leases)

    def _earlier_boot_leases(self, within: tuple[int, int, int] | None = None, limit: int = -1) -> list[Lease]:
        """This host's leases of earlier boots (`within`: family, first, last), in address order."""
        from ..core.reboot import ended_by_reboot  # only while a repair is due, or by hand

        where: str = _ENDED
        params: tuple[object, ...] = (self.boot,)
        if within is not None:
            family, first, last = within
            where, params = (
                f"{where} AND family = ? AND address >= ? AND address <= ?",
                (*params, family, *_span_bytes(family, first, last)),
            )
        rows = self._select(f"WHERE {where} ORDER BY family, address LIMIT ?", (*params, limit))
        return [lease for lease in rows if ended_by_reboot(lease, self.boot)]

    @_releasing
    def release_earlier_boots(self) -> list[Lease]:
        if not self.boot:
            return []
        with _Writing(self, repair=False, releasing=True):
            ended = self._earlier_boot_leases()
            self._release_ended(ended)
            self._db.execute("INSERT OR REPLACE INTO repaired_boot VALUES (1, ?)", (self.boot,))
            self._repair_due = False
            return ended

    def _repair_step(self) -> None:
        """The start of every write of a store opened with a boot: one row compared, and
        while the repair is due, at most REPAIR_CHUNK of the earlier boots' leases released
        (core.reboot): the first call after a reboot stays cheap however many there are."""
        row = self._db.execute("SELECT boot FROM repaired_boot").fetchone()
        self._repair_due = row is None or row[0] != self.boot
        if not self._repair_due:
            return
        from ..core.reboot import REPAIR_CHUNK  # not before: no other call needs it

        ended = self._earlier_boot_leases(limit=REPAIR_CHUNK)
        self._release_ended(ended + self._partners(ended))
        if len(ended) < REPAIR_CHUNK:
            self._db.execute("INSERT OR REPLACE INTO repaired_boot VALUES (1, ?)", (self.boot,))
            self._repair_due = False

    def _partners(self, ended: list[Lease]) -> list[Lease]:
        """The other earlier-boot leases of the owners of `ended`: a step releases owners whole."""
        handles = sorted({lease.handle for lease in ended if lease.handle is not None})
        if not handles:
            return []
        known = {(lease.family, lease.address) for lease in ended}
        rows = self._select(f"WHERE handle IN ({','.join('?' * len(handles))}) AND {_ENDED}", (*handles, self.boot))
        return [lease for lease in rows if (lease.family, lease.address) not in known]

    def _release_ended(self, leases: list[Lease]) -> None:
        """Release leases a reboot ended, each address kept for its attachment (core.reboot),
        runs of neighbouring addresses given back to the free index together. The round-robin
        positions stay where they are: no container asked for these releases."""
        if not leases:
            return
        from ..core.reboot import kept_for

        now = self.clock()
        keys = [(lease.family, to_bytes(lease.family, lease.address)) for lease in leases]
        self._db.executemany("DELETE FROM leases WHERE family = ? AND address = ?", keys)
        for lease in leases:
            self._record(lease, REPAIRED, now)
        kept = [(*key, now, *(kept_for(lease) or (None, None))) for key, lease in zip(keys, leases, strict=True)]
        self._db.executemany("INSERT OR REPLACE INTO released VALUES (?, ?, ?, ?, ?)", kept)
        for family, first, last in _runs(leases):
            self._give_back(family, first, last)

    @_releasing
    def release_exactly(self, leases: Sequence[Lease], cursors: Mapping[str, Cursor]) -> None:
        with _Writing(self, releasing=True):
            current = [found for found in (self.lookup(lease.family, lease.address) for lease in leases) if found]
            refuse_changed(leases, current, cursors, self.cursors())
            now = self.clock()
            for lease in leases:
                self._remove(lease, now)
            for pool in cursors:
                self._db.execute("DELETE FROM cursors WHERE pool = ?", (pool,))

    def exhausted(self, pools: tuple[PoolSpec, ...]) -> list[PoolSpec]:
        """While a reboot repair is due, a pool whose only addresses are earlier boots'
        leases is not exhausted: the next ADD frees one (core.reboot)."""

        def scan() -> list[PoolSpec]:
            due = bool(self.boot) and self._db.execute("SELECT boot FROM repaired_boot").fetchone() != (self.boot,)
            return [
                spec for spec in pools
                if all(self._first_free(spec.family, *window) is None for window in spec.pieces)
                and not (due and any(self._earlier_boot_leases((spec.family, *window), 1) for window in spec.pieces))
            ]  # fmt: skip

        return self._read(scan)

    def usage(self, configured: Iterable[PoolSpec] = ()) -> list[PoolUsage]:
        """Counted in SQLite, never a lease object per row (`_Counts`), each query on its
        own (a writer of this process waits for one query, not for the whole count)."""
        from ..core.pool_usage import pool_usage

        return pool_usage(_Counts(self), configured, self.reuse_delays, self.clock())

    def import_leases(
        self, leases: Iterable[Lease], cursors: dict[str, Cursor], history: Sequence[HistoryRecord] | None = None
    ) -> int:
        wanted = list(leases)
        rows = [_row(lease) for lease in wanted]
        with _Writing(self):
            self._db.execute("SAVEPOINT import_rows")
            try:
                self._db.executemany(f"INSERT INTO leases (ip, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            except IntegrityError:
                self._db.execute("ROLLBACK TO import_rows")  # undo the rows before the clash, then name it
                raise AddressConflict(f"import refused: {self._first_conflict(rows)}") from None
            self._db.executemany(
                "DELETE FROM released WHERE family = ? AND address = ?", [lease_row[1:3] for lease_row in rows]
            )
            for family in sorted({lease_row[1] for lease_row in rows}):  # type: ignore[type-var]
                self._rebuild_free(family)  # type: ignore[arg-type]
            for pool, cursor in cursors.items():
                self._set_cursor(pool, cursor)
            if history is None:
                now = self.clock()
                for lease in wanted:
                    self._record(lease, IMPORTED, now)
            else:
                self._history.extend(_history_row(record) for record in history)
            return len(rows)

    def history(self, subject: Subject | None = None) -> list[HistoryRecord]:
        """A scan of the history, bounded by the retention's count: an index by address
        would cost every ADD a second page written, for a question asked after the fact."""
        query = f"SELECT {_HISTORY_COLUMNS} FROM history"
        params: tuple[object, ...] = ()
        if subject is not None and subject.address is not None:
            family, address = subject.address
            query += " WHERE family = ? AND address = ?"
            params = (family, to_bytes(family, address))
        elif subject is not None:
            marks = ",".join("?" * len(subject.handles))
            query += f" WHERE handle IN ({marks}) OR (container_id != '' AND container_id = ?)"
            params = (*subject.handles, subject.container_id)
        rows = self._read(lambda: self._db.execute(query + " ORDER BY at, id", params).fetchall())
        return [_history_record(row) for row in rows]

    def history_retention(self) -> Retention:
        return self._read(self._retention)

    def _retention(self) -> Retention:
        row = self._db.execute("SELECT max_age, max_records FROM history_retention").fetchone()
        return DEFAULT_RETENTION if row is None else Retention(float(row[0]), int(row[1]))

    def set_history_retention(self, retention: Retention) -> None:
        """Applied at once: one DELETE of what it no longer keeps."""
        with _Writing(self):
            self._db.execute(
                "INSERT OR REPLACE INTO history_retention VALUES (1, ?, ?)", (retention.max_age, retention.max_records)
            )
            while self._prune_history(1 << 62):
                pass

    def claim_docker_pool(self, claim: PoolClaim) -> DockerPool:
        from ..core.docker_pools import place_pool, pool_region  # not at the top: the plugin never needs it

        with _Writing(self):
            region = pool_region(claim)
            in_use = self._docker_pools_within(region) if claim.network is None else self._docker_overlap(region)
            serial = self._db.execute("SELECT value FROM counters WHERE name = 'docker_pool'").fetchone()[0] + 1
            pool = place_pool(claim, in_use, serial, time.time())
            self._db.execute("UPDATE counters SET value = ? WHERE name = 'docker_pool'", (serial,))
            self._insert_docker_pool(pool)
            return pool

    def import_docker_pools(self, pools: Iterable[DockerPool], leases: Iterable[Lease]) -> int:
        from ..core.docker_pools import pool_serial, refuse_import

        wanted, rows = list(pools), list(leases)
        with _Writing(self):
            refuse_import(wanted, rows, self._docker_pool_exists, self._docker_overlap, self.lookup)
            for pool in wanted:
                self._insert_docker_pool(pool)
                serial = pool_serial(pool.id)
                if serial is not None:
                    self._db.execute("UPDATE counters SET value = max(value, ?) WHERE name = 'docker_pool'", (serial,))
            now = self.clock()
            for lease in rows:
                self._take(lease.family, lease.address)
                self._insert(lease, IMPORTED, now)
            return len(wanted)

    @_releasing
    def release_docker_pool(self, pool_id: str) -> DockerPool:
        with _Writing(self, releasing=True):
            pool = self._docker_pool(pool_id)
            now = self.clock()
            for lease in self._select("WHERE network = ? AND kind = 'lease'", (pool.lease_network,)):
                self._remove(lease, now)
            self._db.execute("DELETE FROM docker_pools WHERE id = ?", (pool_id,))
            return pool

    def docker_pools(self) -> list[DockerPool]:
        query = f"SELECT {_POOL_COLUMNS} FROM docker_pools ORDER BY created, id"
        return self._read(lambda: [_docker_pool(row) for row in self._db.execute(query)])

    def request_docker_address(
        self,
        pool_id: str,
        requested: int | None,
        serial: bool = False,
        reuse: ReuseDelay | None = None,
        use: AddressUse | None = None,
    ) -> Lease:
        from ..core.docker_pools import AddressUse  # not at the top: the plugin never needs it

        with _Writing(self):
            pool = self._docker_pool(pool_id)
            if requested is not None:
                pool.check_named(requested)
            spec = pool.spec(requested, serial, NO_DELAY if reuse is None else reuse, use)
            return self._allocate(pool.owner(use or AddressUse()), (spec,), self.clock())[0]

    @_releasing
    def release_docker_address(self, pool_id: str, family: int, address: int) -> Lease | None:
        with _Writing(self, releasing=True):
            pool = self._docker_pool(pool_id)
            pool.check_own(family, address)
            found = self.lookup(family, address)
            if found is None or not pool.holds(found):
                return None
            self._remove(found, self.clock())
            return found

    def keep_counter_at_least(self, name: str, value: int) -> None:
        """Move a never-decreasing counter up to `value` (a recovered store must not mint
        the ids its damaged original had already handed out)."""
        with _Writing(self):
            self._db.execute("UPDATE counters SET value = max(value, ?) WHERE name = ?", (value, name))

    def repair(self, apply: bool) -> list[str]:
        if not apply:
            return self._read(lambda: self._in_one_snapshot(lambda: self._repairs(False)))
        with _Writing(self, repair=False):
            return self._repairs(True)

    def _repairs(self, apply: bool) -> list[str]:
        from .orphans import orphan_cursors  # only when repairing

        changes = []
        for family in (4, 6):
            wrong = self._free_index_problems(family)
            if wrong:
                changes.append(f"IPv{family}: rebuilt the free index from the leases ({wrong[0]}" + (
                    f", and {len(wrong) - 1} more problem(s))" if len(wrong) > 1 else ")"
                ))  # fmt: skip
                if apply:
                    self._rebuild_free(family)
        for ip, raw in self._db.execute("SELECT ip, address FROM leases").fetchall():
            stored = format_ip(4 if len(raw) == 4 else 6, _value(raw))
            if stored != ip:
                changes.append(f"{stored}: wrote its text form again (it read {ip})")
                if apply:
                    self._db.execute("UPDATE leases SET ip = ? WHERE address = ?", (stored, raw))
        for (ip,) in self._db.execute("SELECT ip FROM leases JOIN released USING (family, address)").fetchall():
            changes.append(f"{ip}: forgot its release time (it is leased)")
        if apply:
            self._db.execute("DELETE FROM released WHERE (family, address) IN (SELECT family, address FROM leases)")
        for pool in sorted(orphan_cursors(self.cursors())):
            changes.append(f"forgot the position of pool {pool}, which lies outside it")
            if apply:
                self._db.execute("DELETE FROM cursors WHERE pool = ?", (pool,))
        return changes

    def problems(self) -> list[str]:
        found = self._read(self._find_problems_in_one_snapshot)
        damage = recorded_damage(self.path, self._file.key)
        return found if damage is None else [f"a call found this file damaged: {damage}", *found]

    def batch(self) -> _Batch:
        """The writes of a `with` block in one transaction (the Docker driver's group
        commit): each is a savepoint that a failure rolls back alone, and all of them are
        durable when the block ends. The transaction begins with the first write, under the
        writers' flock, which other processes then wait for until the block ends."""
        return _Batch(self)

    def close(self) -> None:
        self._close_quietly()

    # -- write-side steps (always inside _Writing) --------------------------------------

    def _docker_pool(self, pool_id: str) -> DockerPool:
        row = self._db.execute(f"SELECT {_POOL_COLUMNS} FROM docker_pools WHERE id = ?", (pool_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown pool id {pool_id!r}")
        return _docker_pool(row)

    def _insert_docker_pool(self, pool: DockerPool) -> None:
        network = pool.network
        self._db.execute(
            "INSERT INTO docker_pools VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pool.id, pool.address_space, network.family, str(network), to_bytes(network.family, network.value),
                to_bytes(network.family, network.last), None if pool.sub_pool is None else str(pool.sub_pool),
                pool.options, pool.created,
            ),
        )  # fmt: skip

    def _docker_pool_exists(self, pool_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM docker_pools WHERE id = ?", (pool_id,)).fetchone() is not None

    def _docker_overlap(self, network: Network) -> list[DockerPool]:
        """The Docker pools that overlap `network`, or enough of them to refuse it: blocks
        are disjoint or equal (siblings share theirs), so the block starting last at or
        before network's end is the only one to look at, with every pool on it."""
        family = network.family
        row = self._db.execute(
            "SELECT first, last FROM docker_pools WHERE family = ? AND first <= ? ORDER BY first DESC LIMIT 1",
            (family, to_bytes(family, network.last)),
        ).fetchone()
        if row is None or _value(row[1]) < network.value:
            return []
        query = f"SELECT {_POOL_COLUMNS} FROM docker_pools WHERE family = ? AND first = ? ORDER BY created, id"
        return [_docker_pool(found) for found in self._db.execute(query, (family, row[0]))]

    def _docker_pools_within(self, main: Network) -> list[DockerPool]:
        """The Docker pools overlapping `main`, lowest first."""
        rows = self._db.execute(
            f"SELECT {_POOL_COLUMNS} FROM docker_pools WHERE family = ? AND last >= ? AND first <= ? ORDER BY first",
            (main.family, to_bytes(main.family, main.value), to_bytes(main.family, main.last)),
        )
        return [_docker_pool(row) for row in rows]

    def _reserve_gateway(self, spec: PoolSpec, address: int, network: str, now: float) -> int | None:
        gateway, reservation = gateway_reservation(spec, address, network, now, self.lookup)
        if reservation is not None:
            raw = to_bytes(reservation.family, reservation.address)
            widened = self._db.execute(
                "UPDATE leases SET slot = ? WHERE family = ? AND address = ? AND kind = 'gateway'",
                (reservation.slot, reservation.family, raw),
            ).rowcount
            if not widened:
                self._take(reservation.family, reservation.address)
                self._insert(reservation)
        return gateway

    def _let_gateway_go(self, lease: Lease) -> None:
        """After `lease` is gone: the reservation of its gateway too, when no lease is left
        in the subnet it protects (allocator.gateway_reservation says why that covers every
        lease depending on it). One index seek; a pool nothing holds leaves no rows."""
        if lease.kind != LEASE or lease.gateway is None:
            return
        found = self.lookup(lease.family, lease.gateway)
        subnet = reserved_subnet(found) if found is not None and found.kind == GATEWAY else None
        if subnet is None:
            return
        family = lease.family
        still = self._db.execute(
            "SELECT 1 FROM leases WHERE family = ? AND address BETWEEN ? AND ? AND kind = 'lease' LIMIT 1",
            (family, to_bytes(family, subnet.value), to_bytes(family, subnet.last)),
        ).fetchone()
        if still is None:
            self._db.execute(
                "DELETE FROM leases WHERE family = ? AND address = ?", (family, to_bytes(family, lease.gateway))
            )
            self._give_back(family, lease.gateway)

    def _take_requested(self, spec: PoolSpec) -> int:
        address = spec.requested
        assert address is not None
        refuse_taken(self.lookup(spec.family, address))
        self._take(spec.family, address)
        return address

    def _take_next(self, spec: PoolSpec, owner: Owner, now: float) -> int:
        """The address a reboot kept for the owner, else the first eligible one in search
        order (core.reuse), else what core.reuse.last_resort says."""
        family = spec.family
        if owner.handle is not None:
            row = self._db.execute(
                "SELECT family, address FROM released WHERE handle = ? AND slot = ?", (owner.handle, spec.slot)
            ).fetchone()
            address = returned_address(spec, from_bytes(row[1]) if row else None)
            if address is not None:
                self._take(family, address)
                return address
        cursor = None
        if not spec.lowest_free:
            row = self._db.execute("SELECT family, address FROM cursors WHERE pool = ?", (spec.key,)).fetchone()
            cursor = _value(row[1]) if row and row[0] == family else None
        rule = eligibility(spec.reuse, now)
        held = self._db.execute(
            "SELECT 1 FROM released WHERE handle IS NOT NULL AND released > ? LIMIT 1", (rule.held_since,)
        )
        anything_rests = not rule.trivial or held.fetchone() is not None
        windows = search_windows(spec.pieces, cursor)
        for first, last in windows:
            position = first
            while position <= last:
                found = self._seek_free(family, position)
                if found is None or max(found[0], position) > last:
                    break
                start, end = max(found[0], position), min(found[1], last)
                address = self._first_unresting(family, start, end, rule) if anything_rests else start
                if address is not None:
                    self._split(family, address, found)
                    return address
                position = end + 1
        if self._repair_due:  # a pool full of earlier boots' leases serves a new container at once
            from ..core.reboot import REPAIR_CHUNK

            for first, last in windows:
                ended = self._earlier_boot_leases((family, first, last), REPAIR_CHUNK)
                self._release_ended(ended + self._partners(ended))
        cooling = kept = None
        for first, last in windows:
            cooling = older(cooling, self._oldest_released(family, first, last, False))
            kept = older(kept, self._oldest_released(family, first, last, True))
        address = last_resort(spec, cooling, kept, now)
        self._take(family, address)
        return address

    def _first_unresting(self, family: int, start: int, end: int, rule: Eligibility) -> int | None:
        """The first address of the free run [start, end] that `rule` allows: one pass over
        the run's released rows, stopping at the first gap or allowed one."""
        expected = start
        for raw, released, held in self._db.execute(_RESTING, (family, to_bytes(family, start), to_bytes(family, end))):
            if int.from_bytes(raw, "big") != expected or rule.allows(released, bool(held)):
                return expected
            expected += 1
        return expected if expected <= end else None

    def _oldest_released(self, family: int, first: int, last: int, held: bool) -> Freed | None:
        row = self._db.execute(_OLDEST, (family, to_bytes(family, first), to_bytes(family, last), int(held))).fetchone()
        return Freed(int.from_bytes(row[0], "big"), row[1], held) if row else None

    def _seek_free(self, family: int, start: int) -> tuple[int, int] | None:
        """The first free interval that ends at or after `start`: one index seek."""
        row = self._db.execute(_FIND_FREE, (family, to_bytes(family, start))).fetchone()
        return (_value(row[0]), _value(row[1])) if row else None

    def _first_free(self, family: int, first: int, last: int) -> int | None:
        found = self._seek_free(family, first)
        return max(found[0], first) if found is not None and max(found[0], first) <= last else None

    def _take(self, family: int, address: int) -> None:
        """Remove one given address from the free index."""
        found = self._seek_free(family, address)
        if found is None or found[0] > address:
            raise StoreCorrupt(f"{format_ip(family, address)} is neither leased nor free; run `cnipamctl check`")
        self._split(family, address, found)

    def _split(self, family: int, address: int, interval: tuple[int, int]) -> None:
        """Cut `address` out of the free `interval` that contains it."""
        first, last = interval
        if address < last:
            self._db.execute(
                "UPDATE free SET first = ? WHERE family = ? AND last = ?",
                (to_bytes(family, address + 1), family, to_bytes(family, last)),
            )
        else:
            self._db.execute("DELETE FROM free WHERE family = ? AND last = ?", (family, to_bytes(family, last)))
        if first < address:
            self._db.execute(
                "INSERT INTO free VALUES (?, ?, ?)", (family, to_bytes(family, address - 1), to_bytes(family, first))
            )

    def _give_back(self, family: int, address: int, until: int | None = None) -> None:
        """Return one address (or the run `address`..`until`) to the free index, merging it
        with its neighbours."""
        first, last = address, address if until is None else until
        end = last
        if address > 0:
            below = to_bytes(family, address - 1)
            left = self._db.execute("SELECT first FROM free WHERE family = ? AND last = ?", (family, below)).fetchone()
            if left:
                first = _value(left[0])
                self._db.execute("DELETE FROM free WHERE family = ? AND last = ?", (family, below))
        right = self._db.execute(_FIND_FREE, (family, to_bytes(family, end))).fetchone()
        if right and _value(right[0]) == end + 1:
            last = _value(right[1])
            self._db.execute("DELETE FROM free WHERE family = ? AND last = ?", (family, right[1]))
        self._db.execute("INSERT INTO free VALUES (?, ?, ?)", (family, to_bytes(family, last), to_bytes(family, first)))

    def _insert(self, lease: Lease, event: str = ALLOCATED, at: float | None = None) -> None:
        """A lease row (an allocation's at the lease's own time), and its history record."""
        row = _row(lease)
        try:
            self._db.execute(f"INSERT INTO leases (ip, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        except IntegrityError as exc:
            raise StoreCorrupt(f"cannot record {lease.ip}: {exc}; run `cnipamctl check`") from None
        self._db.execute("DELETE FROM released WHERE family = ? AND address = ?", row[1:3])
        self._record(lease, event, lease.created if at is None else at)

    def _remove(self, lease: Lease, now: float, event: str = RELEASED) -> None:
        raw = to_bytes(lease.family, lease.address)
        self._db.execute("DELETE FROM leases WHERE family = ? AND address = ?", (lease.family, raw))
        self._give_back(lease.family, lease.address)
        if lease.kind == LEASE:
            self._db.execute("INSERT OR REPLACE INTO released VALUES (?, ?, ?, NULL, NULL)", (lease.family, raw, now))
            self._record(lease, event, now)
        self._db.execute(
            "UPDATE cursors SET family = ?, address = ? WHERE pool = ? AND moves_on_release = 1",
            (lease.family, to_bytes(lease.family, lease.address), lease.pool),
        )
        self._let_gateway_go(lease)

    def _record(self, lease: Lease, event: str, at: float) -> None:
        """A history record of a lease (not of a gateway reservation), written with the
        transaction's other records when it commits."""
        if lease.kind == LEASE:
            self._history.append(_history_row(record_of(lease, event, at, self.history_host)))

    def _write_history(self) -> None:
        """The write's history records, then, when their ids cross a multiple of
        PRUNE_EVERY, the expired ones pruned: as many as were added since the last prune
        and PRUNE_BATCH more per write. The history stays within its retention a few rows
        at a time, never with one large delete in a call's way, and most writes only append."""
        written, self._history = self._history, []
        insert = f"INSERT INTO history (ip, {_HISTORY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        if len(written) == 1:
            last = self._db.execute(insert, written[0]).lastrowid or 0
            if prune_due(last):
                self._prune_history(PRUNE_EVERY * (1 + PRUNE_BATCH))
        elif written:
            self._db.executemany(insert, written)
            self._prune_history(len(written) + PRUNE_EVERY * (1 + PRUNE_BATCH))

    def _prune_history(self, batch: int) -> bool:
        """Delete the oldest records past the retention, at most `batch`; whether any went.
        One read of the oldest record, the newest id and the retention says whether any is
        due (the count needs only the ids); only then are up to AGE_PEEK records read to
        judge their age (a bulk import's records go by count, in one statement)."""
        first, at, newest, max_age, max_records = self._db.execute(_DUE).fetchone()
        retention = DEFAULT_RETENTION if max_age is None else Retention(float(max_age), int(max_records))
        if first is None or (newest - first < retention.max_records and at >= self.clock() - retention.max_age):
            return False
        oldest = self._db.execute("SELECT id, at FROM history ORDER BY id LIMIT ?", (min(batch, AGE_PEEK),)).fetchall()
        end = prune_end(oldest, newest, retention, self.clock(), batch)
        if end == first:
            return False
        self._db.execute("DELETE FROM history WHERE id < ?", (end,))
        return True

    def _set_cursor(self, pool: str, cursor: Cursor) -> None:
        row = (pool, cursor.family, to_bytes(cursor.family, cursor.address), int(cursor.moves_on_release))
        self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)", row)

    def _rebuild_free(self, family: int) -> None:
        """Recompute the free index of a family from its leases (bulk import, repair)."""
        self._db.execute("DELETE FROM free WHERE family = ?", (family,))
        gaps, start = [], 0
        for (raw,) in self._db.execute("SELECT address FROM leases WHERE family = ? ORDER BY address", (family,)):
            address = _value(raw)
            if address > start:
                gaps.append((family, to_bytes(family, address - 1), to_bytes(family, start)))
            start = address + 1
        top = (1 << BITS[family]) - 1
        if start <= top:
            gaps.append((family, to_bytes(family, top), to_bytes(family, start)))
        self._db.executemany("INSERT INTO free VALUES (?, ?, ?)", gaps)

    def _first_conflict(self, rows: list[tuple[object, ...]]) -> str:
        seen: set[tuple[object, object]] = set()
        for row in rows:
            key = (row[1], row[2])
            if key in seen:
                return f"{row[0]} appears twice in the input"
            seen.add(key)
            existing = self._db.execute(
                "SELECT ip, handle FROM leases WHERE family = ? AND address = ?", key
            ).fetchone()
            if existing:
                return f"{row[0]} is already held by {existing[1] or 'a reservation'}"
            if row[6] is not None:
                owner = self._db.execute(
                    "SELECT ip FROM leases WHERE handle = ? AND slot = ?", (row[6], row[5])
                ).fetchone()
                if owner:
                    return f"owner {row[6]} already holds {owner[0]} in slot {row[5]}"
        return "a lease conflicts with the store"

    # -- reads, schema, integrity -------------------------------------------------------

    def _select(self, where: str, params: tuple[object, ...]) -> list[Lease]:
        return [_lease(row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM leases {where}", params)]

    @property
    def _db(self) -> Connection:
        """The process's one connection to the file, looked up each time: a read without
        locks may replace it (`_read`)."""
        return self._file.db

    def _read(self, query: Callable[[], T]) -> T:
        """A read on the shared connection, by one thread at a time (re-entrant: reads run
        inside write transactions too). A read without locks (`immutable`) is trusted only
        if nothing wrote the file meanwhile; when something did, the writer now holds the
        store, so the file is opened afresh (under its locks, as sqlite_disk.py chooses)
        and the read runs again, a few times at most."""
        shared = self._file
        if not shared.mutex.acquire(timeout=max(self.timeout, 0.05)):
            raise StoreBusy(f"store {self.path} stayed busy with other threads of this process for {self.timeout:g}s")
        try:
            rereads = 0
            while True:
                if not self._db.in_transaction:  # a call of its own: SQLite's own waits end with its deadline
                    self._db.execute(f"PRAGMA busy_timeout = {_milliseconds(self.timeout)}")
                try:
                    try:
                        result = query()
                    except _DAMAGED as exc:
                        shared.check_unchanged(self.path)  # an error from a file changed under the read is no damage
                        raise self._failure(exc) from None
                    shared.check_unchanged(self.path)
                    return result
                except StoreBusy:
                    rereads += 1
                    if shared.unchanged is None or rereads > _REREADS:
                        raise
                    _reopen_read_only(shared, self.path, self.timeout)
        finally:
            shared.mutex.release()

    def _migrate(self) -> None:
        with _Locked(self):
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreCorrupt(
                    f"store {self.path} has schema version {version}; this cnipam knows up to {SCHEMA_VERSION}"
                )
            if version == 0 and self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreCorrupt(
                    f"{self.path} is an SQLite database of something else; refusing to add cnipam's tables to it"
                )
            try:
                if version == 0:
                    self._switch_to_wal()
                for step in range(version, SCHEMA_VERSION):
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        for statement in MIGRATIONS[step]:
                            self._db.execute(statement)
                        self._db.execute(f"PRAGMA user_version = {step + 1}")
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._file.committed()
                self._file.version = SCHEMA_VERSION
            except _FAILED as exc:
                raise _store_error(self.path, exc) from None

    def _switch_to_wal(self) -> None:
        """Changing the journal mode needs a lock upgrade for which SQLite does not call
        its busy handler; a reader still looking at the new, empty file makes it fail at
        once. We hold the flock, so retrying until the deadline is safe."""
        deadline = time.monotonic() + max(self.timeout, 0.05)
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.002)

    def _find_problems_in_one_snapshot(self) -> list[str]:
        """`cnipamctl check` runs beside live writers: every table is read in one read
        transaction, so a lease committed between two of the checks' reads is never
        mistaken for an address that is neither leased nor free."""
        return self._in_one_snapshot(self._find_problems)

    def _in_one_snapshot(self, reads: Callable[[], T]) -> T:
        if self._db.in_transaction:
            return reads()
        self._db.execute("BEGIN")
        try:
            return reads()
        finally:
            self._db.execute("ROLLBACK")

    def _find_problems(self) -> list[str]:
        """Every problem found, SQLite's own first; reading stops at damage that cannot be
        read past, which is then the last problem named."""
        problems: list[str] = []
        try:
            check = self._db.execute("PRAGMA integrity_check").fetchall()  # also verifies the unique indexes
            if check != [("ok",)]:
                problems.extend(f"sqlite: {row[0]}" for row in check[:10])
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
            for ip, raw in self._db.execute("SELECT ip, address FROM leases"):
                stored = format_ip(4 if len(raw) == 4 else 6, _value(raw))
                if stored != ip:
                    problems.append(f"{ip}: text form does not match the stored address {stored}")
            for family in (4, 6):
                problems.extend(self._free_index_problems(family))
            for (ip,) in self._db.execute("SELECT ip FROM leases JOIN released USING (family, address)"):
                problems.append(
                    f"{ip}: leased, yet recorded as released (its reuse delay would apply to its next holder)"
                )
            from .orphans import orphans  # only when checking

            problems.extend(orphans(self._select("", ()), self.cursors()))
        except _DAMAGED as exc:
            problems.append(f"damaged: {exc}")
        return problems[:50]

    def _free_index_problems(self, family: int) -> list[str]:
        """Leases and free intervals must tile the family's whole address space exactly once."""
        problems: list[str] = []
        query = "SELECT address FROM leases WHERE family = ? ORDER BY address"
        leased = (_value(raw) for (raw,) in self._db.execute(query, (family,)))
        query = "SELECT first, last FROM free WHERE family = ? ORDER BY last"
        intervals = [(_value(a), _value(b)) for a, b in self._db.execute(query, (family,))]
        position, pending = 0, next(leased, None)  # position: the next address still to account for

        def account_for_leases_below(limit: int) -> None:
            nonlocal position, pending
            while pending is not None and pending < limit:
                if pending < position:
                    problems.append(f"IPv{family}: {format_ip(family, pending)} is both leased and free")
                elif pending > position:
                    problems.append(f"IPv{family}: {_span(family, position, pending - 1)} is neither leased nor free")
                position, pending = max(position, pending + 1), next(leased, None)

        for first, last in intervals:
            account_for_leases_below(first)
            if first != position:
                problems.append(
                    f"IPv{family}: free interval {_span(family, first, last)} does not start where expected"
                )
            position = max(position, last + 1)
        account_for_leases_below(1 << BITS[family])
        if position != 1 << BITS[family]:
            problems.append(
                f"IPv{family}: {_span(family, position, (1 << BITS[family]) - 1)} is neither leased nor free"
            )
        return problems

    def _lock(self) -> None:
        """The other threads of this process, then the other processes (the flock), then
        SQLite's own lock, all within one deadline: the timeout is the call's, not each
        wait's (SQLite waits for a writer outside the flock, such as `sqlite3` run by hand)."""
        shared = self._file
        started = time.monotonic()
        deadline = started + self.timeout
        if not shared.mutex.acquire(timeout=max(self.timeout, 0.05)):
            raise StoreBusy(f"store {self.path} stayed busy with other threads of this process for {self.timeout:g}s")
        try:
            if shared.read_only:
                raise _store_error(self.path, OperationalError("attempt to write a readonly database"))
            take_lock(shared.lock_fd, max(deadline - time.monotonic(), 0.0), self.path)
            self._db.execute(f"PRAGMA busy_timeout = {_milliseconds(deadline - time.monotonic())}")
        except BaseException:
            shared.mutex.release()
            raise
        if self.events is not None:
            self.events.lock_waited(time.monotonic() - started)

    def _unlock(self) -> None:
        try:
            flock(self._file.lock_fd, LOCK_UN)
        finally:
            self._file.mutex.release()

    def _failure(self, exc: Exception) -> StoreIOError | StoreBusy:
        """The error a failed SQLite call means; damage is recorded so that nothing writes here again."""
        error = _store_error(self.path, exc)
        if isinstance(error, StoreCorrupt):
            record_damage(self.path, self._file.key, error.message)
        return error

    def _refuse_if_damaged(self) -> None:
        damage = recorded_damage(self.path, self._file.key)
        if damage is not None:
            raise StoreCorrupt(
                f"store {self.path} was found damaged ({damage}); nothing is written to it until it is replaced "
                "(`cnipamctl check`, `cnipamctl recover`)"
            )

    def _close_quietly(self) -> None:
        shared = getattr(self, "_file", None)
        if shared is not None:
            del self._file
            _detach(shared)


class _Locked:
    """Holds the store's flock: the writers' queue."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store._lock()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.store._unlock()


class _Writing(_Locked):
    """One write transaction under the flock: committed on success, rolled back on any
    error. In a store opened with a boot, it starts with the reboot repair when due.

    `releasing`: it only frees addresses, so it runs without the reserve (and `_releasing`
    gives the reserve up when it fails for lack of room); any other write first makes sure
    the reserve is in place, and is refused as a full disk when it cannot be.

    Inside a batch (SQLiteStore.batch) it is a savepoint of the batch's transaction
    instead, which the first write of the batch begins: released on success, rolled back
    to on any error, so that only this write is undone. An SQLite failure (I/O, a full
    disk, damage) may have ended the whole transaction: it breaks the batch."""

    def __init__(self, store: SQLiteStore, repair: bool = True, releasing: bool = False) -> None:
        super().__init__(store)
        self.repair = repair and bool(store.boot)
        self.releasing = releasing
        self.batch = store._batch

    def __enter__(self) -> None:
        batch = self.batch
        if batch is not None and batch.begun:
            if batch.broken:
                raise StoreBusy(f"store {self.store.path}: the transaction of this batch was lost")
            self._keep_reserve()
            self.store._history = []
            self.store._db.execute("SAVEPOINT write")
            return
        super().__enter__()
        try:
            self.store._refuse_if_damaged()
            self._keep_reserve()
            self.store._history = []
            self.store._db.execute("BEGIN IMMEDIATE")
            if self.repair:
                self.store._repair_step()
            if batch is not None:
                batch.begun = True
                self.store._db.execute("SAVEPOINT write")
        except BaseException as exc:
            db = self.store._db
            if db.in_transaction:
                _roll_back(db)
            self.store._unlock()
            if isinstance(exc, _FAILED):
                raise self.store._failure(exc) from None
            raise

    def _keep_reserve(self) -> None:
        if not self.releasing and not keep_reserve(self.store.path):
            path = self.store.path
            raise StoreFull(f"store {path}: {no_room_for_reserve(path)}; nothing was written (releases still work)")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        exc = rest[0] if rest else None
        db = self.store._db
        if self.batch is not None:
            self._end_savepoint(exc)
            return
        try:
            if exc_type is None:
                try:
                    self.store._write_history()
                    db.execute("COMMIT")
                except _FAILED as failed:
                    _roll_back(db)  # after some failures (SQLITE_FULL) SQLite has rolled back already
                    raise self.store._failure(failed) from None
                self.store._file.committed()
            else:
                _roll_back(db)
                if isinstance(exc, _DAMAGED):  # a statement of the transaction failed
                    raise self.store._failure(exc) from None
                if isinstance(exc, StoreCorrupt):  # the free index and the leases disagree
                    record_damage(self.store.path, self.store._file.key, exc.message)
        finally:
            super().__exit__(exc_type)

    def _end_savepoint(self, exc: object) -> None:
        db, batch = self.store._db, self.batch
        assert batch is not None
        try:
            if exc is None:
                self.store._write_history()  # this write's records, in its savepoint
                db.execute("RELEASE write")
                return
            self.store._history = []
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
        except _FAILED as failed:
            batch.broken = True
            raise self.store._failure(failed) from None
        if isinstance(exc, (*_DAMAGED, StoreIOError, StoreBusy)):  # the store failed, not the request
            batch.broken = True
        if isinstance(exc, _DAMAGED):
            raise self.store._failure(exc) from None
        if isinstance(exc, StoreCorrupt):
            record_damage(self.store.path, self.store._file.key, exc.message)


class _Batch(Batch):
    """SQLiteStore.batch: the transaction its first write begins (under the flock, which
    it keeps until the end), committed at the end unless it broke."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.begun = False

    def __enter__(self) -> _Batch:
        if self.store._batch is not None:
            raise RuntimeError("batches do not nest")
        self.store._batch = self
        return self

    def __exit__(self, *exc: object) -> None:
        store, db = self.store, self.store._db
        store._batch = None
        if not self.begun:
            return
        try:
            if exc[0] is not None or self.broken:
                _roll_back(db)
                return
            try:
                db.execute("COMMIT")
            except _FAILED as failed:
                _roll_back(db)
                self.broken = True
                raise store._failure(failed) from None
            store._file.committed()
        finally:
            store._unlock()


def _roll_back(db: Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except DatabaseError:
            pass  # nothing of the transaction is committed either way (WAL: no commit frame)


def _milliseconds(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _store_error(path: str, exc: Exception) -> StoreIOError | StoreBusy:
    text = str(exc)
    if isinstance(exc, _BadRow):
        return StoreCorrupt(f"store {path} is damaged: {text} (`cnipamctl recover` saves what is readable)")
    if isinstance(exc, UnicodeDecodeError):
        return StoreCorrupt(
            f"store {path} is not a readable cnipam store: it holds text that is not UTF-8 "
            "(`cnipamctl recover` saves what is readable)"
        )
    if isinstance(exc, OperationalError) and "locked" in text:
        return StoreBusy(f"store {path} is busy: {text}")
    if "not a database" in text or "malformed" in text:
        return StoreCorrupt(
            f"store {path} is not a readable cnipam store: {text} (`cnipamctl recover` saves what is readable)"
        )
    if any(word in text for word in ("I/O error", "full", "readonly", "unable to open")):
        fault = disk_fault(path, failed=True)  # SQLite's words do not say which: the file system does
        if fault is not None:
            error = StoreFull if fault[0] == FULL else StoreIOError
            return error(f"store {path}: {fault[1]}; nothing was written ({text})")
    return StoreIOError(f"store {path}: {text}")


def _docker_pool(row: Sequence[object]) -> DockerPool:
    from ..core.docker_pools import DockerPool

    try:
        pool_id, space, network, sub_pool, options, created = row
        sub = None if sub_pool is None else parse_cidr(sub_pool, "sub_pool")[1]
        return DockerPool(str(pool_id), str(space), parse_cidr(network, "pool")[1], sub, str(options), float(created))  # type: ignore[arg-type]
    except (CnipamError, TypeError, ValueError):
        raise _BadRow(f"a Docker pool row holds values cnipam never writes: {tuple(row)!r:.200}") from None


def _row(lease: Lease) -> tuple[object, ...]:
    gateway = None if lease.gateway is None else to_bytes(lease.family, lease.gateway)
    return (
        lease.ip, lease.family, to_bytes(lease.family, lease.address), lease.kind, lease.pool, lease.slot,
        lease.handle, lease.network, lease.container_id, lease.ifname, lease.created, lease.boot, lease.netns, gateway,
    )  # fmt: skip


def _span_bytes(family: int, first: int, last: int) -> tuple[bytes, bytes]:
    return to_bytes(family, first), to_bytes(family, last)


def _runs(leases: list[Lease]) -> list[tuple[int, int, int]]:
    """(family, first, last) of each run of neighbouring addresses among `leases`."""
    runs: list[tuple[int, int, int]] = []
    for family, address in sorted((lease.family, lease.address) for lease in leases):
        if runs and runs[-1][0] == family and runs[-1][2] == address - 1:
            runs[-1] = (family, runs[-1][1], address)
        else:
            runs.append((family, address, address))
    return runs


def _span(family: int, first: int, last: int) -> str:
    return format_ip(family, first) if first == last else f"{format_ip(family, first)}-{format_ip(family, last)}"


class _SharedFile:
    """One database file as this process holds it: the one connection, the one descriptor
    of its writers' lock, and a mutex that lets one thread at a time use them.

    A process must never hold a database file twice. POSIX drops *every* advisory lock a
    process holds on a file when *any* of its descriptors of that file is closed, so a
    second open (even a short one, to read the header) behind a live connection silently
    unlocks that connection; the next process to close its own connection then believes
    it is the last user and deletes the WAL still being written ("How To Corrupt An SQLite
    Database File" section 2.2; issue 19 corrupted stores exactly so, through cnipamd).
    And two descriptors of `<db>.lock` would be two independent flocks, so the writers'
    queue would no longer keep two stores of one process apart. Hence one `_SharedFile`
    per (device, inode), however the path is spelled, shared by every `SQLiteStore` of the
    process, and counted so that the last `close` closes it.

    `read_only`: opened by a reader on a disk that cannot be written (no lock file then:
    `lock_fd` is -1); `unchanged`: what a read without locks relies on (sqlite_disk.py).
    """

    __slots__ = ("key", "path", "db", "lock_fd", "wal_fd", "mutex", "users", "version", "read_only", "unchanged")

    def __init__(self, key: tuple[int, int], path: str, db: Connection, lock_fd: int, version: int) -> None:
        self.key = key
        self.path = path  # the real one (trusted_path)
        self.db = db
        self.lock_fd = lock_fd
        self.wal_fd = -1  # the -wal file, opened at the first commit (`committed`)
        self.mutex = RLock()
        self.users = 1
        self.version = version
        self.read_only = False
        self.unchanged: tuple[object, ...] | None = None

    def committed(self) -> None:
        """Right after a commit, under the writers' flock: the commit on the disk, with one
        `fdatasync` of the WAL (the module's docstring, Durability), then the WAL
        checkpointed if it is long. A sync that fails leaves the commit in place but not
        known to be durable: the call fails, and the runtime's DEL or retry follows."""
        try:
            if self.wal_fd < 0:  # the -wal stays the same file while this connection is open
                self.wal_fd = posix.open(self.path + "-wal", posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
            posix.fdatasync(self.wal_fd)
        except OSError as exc:
            raise StoreIOError(f"store {self.path}: a commit could not be synced to the disk: {exc.strerror}") from None
        self.checkpoint_if_long()

    def checkpoint_if_long(self) -> None:
        """Right after a commit, under the writers' flock: empty the WAL into the file once
        it is past CHECKPOINT_BYTES (the module's docstring). It does not wait for readers,
        and a checkpoint that fails or cannot finish is left to a later commit: the commit
        it follows stands either way."""
        try:
            if posix.stat(self.path + "-wal").st_size < CHECKPOINT_BYTES:
                return
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (OSError, *_FAILED):
            pass

    def check_unchanged(self, path: str) -> None:
        """After a read without locks: StoreBusy (try again) if a writer came meanwhile."""
        if self.unchanged is None:
            return
        try:
            same = file_state(path) == self.unchanged
        except OSError:
            same = False
        if not same:
            raise StoreBusy(f"store {path} changed while it was read without locks (a disk that cannot be written)")


_OPEN: dict[tuple[int, int], _SharedFile] = {}
_OPEN_GUARD = RLock()  # held while a file is attached or detached (a detach waits for the call in progress)


def _attach(path: str, timeout: float, shared_folders: bool = False, reading: bool = False) -> _SharedFile:
    """The process's connection to the database at `path`, opened if it holds none yet.

    The path is walked first (trusted_path): every name below is the real one, in folders
    only root and this user can change, and a link found there now is refused, not followed.
    How the file is opened is decided here, once: a process that holds the file uses that
    connection for every call, whatever the call (a read-only one cannot write)."""
    with _OPEN_GUARD:
        real = trusted_path(path, create=True, shared_folders=shared_folders)
        key = _identity(real)
        shared = _OPEN.get(key) if key is not None else None
        if shared is not None:
            shared.users += 1
            return shared
        # No connection of this process holds this file, so opening and closing it here
        # (the header check, the creation with a private mode) cannot drop any lock of ours.
        check_siblings(real, ("-wal", "-shm", ".lock"))
        _refuse_foreign_file(real)
        if reading and key is not None and disk_fault(real) is not None:
            shared = _open_read_only(real, key, timeout)
        else:
            try:
                shared = _open(real, key, timeout)
            except StoreCorrupt as error:
                if key is not None:
                    record_damage(real, key, error.message)
                raise
            except StoreIOError as error:
                shared = _open_on_bad_disk(real, key, timeout, reading, error)
        _OPEN[shared.key] = shared
        HELD_DATABASES[shared.key] = real  # a config may not name it now (config_files)
        return shared


def _open(path: str, key: tuple[int, int] | None, timeout: float) -> _SharedFile:
    """The normal opening: read-write, creating the store and its lock file if missing."""
    try:
        lock_fd = _open_private(path + ".lock")
    except OSError as exc:
        raise _cannot_open(path, key is not None, exc) from None
    try:
        if key is None:
            posix.close(_open_private(path))
            key = _identity(path)
        db = connect(path, timeout=max(timeout, 0.001), isolation_level=None, check_same_thread=False)
    except OSError as exc:
        posix.close(lock_fd)
        raise _cannot_open(path, False, exc) from None
    except _FAILED as exc:
        posix.close(lock_fd)
        raise _store_error(path, exc) from None
    try:
        db.execute("PRAGMA synchronous=NORMAL")  # and one sync of our own per commit: `committed`
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if key is None or _identity(path) != key:  # replaced while we opened it: its key would lie
            raise OperationalError("the file was replaced while it was being opened")
    except _FAILED as exc:
        db.close()
        posix.close(lock_fd)
        raise _store_error(path, exc) from None
    return _SharedFile(key, path, db, lock_fd, version)


def _open_on_bad_disk(
    path: str, key: tuple[int, int] | None, timeout: float, reading: bool, error: StoreIOError
) -> _SharedFile:
    """After the normal opening failed: on a disk that cannot be written a reader opens the
    store read-only, and on a full one a writer gives up the reserve and tries once more
    (an ADD then finds the reserve gone and says the disk is full; a release goes on)."""
    fault = disk_fault(path) if key is not None and not isinstance(error, StoreCorrupt) else None
    if fault is None or key is None:
        raise error
    if reading:
        return _open_read_only(path, key, timeout)
    if fault[0] == FULL and give_up_reserve(path):
        return _open(path, key, timeout)
    raise error


def _open_read_only(path: str, key: tuple[int, int], timeout: float) -> _SharedFile:
    """A reader's opening on a disk that cannot be written: `mode=ro` or `immutable=1`,
    whichever is exact for the files beside the store (store/sqlite_disk.py)."""
    uri, immutable = reading_uri(path)
    before = file_state(path) if immutable else None
    try:
        db = connect(uri, timeout=max(timeout, 0.001), isolation_level=None, check_same_thread=False, uri=True)
    except _FAILED as exc:
        raise _store_error(path, exc) from None
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if _identity(path) != key:
            raise OperationalError("the file was replaced while it was being opened")
    except _FAILED as exc:
        db.close()
        raise _store_error(path, exc) from None
    shared = _SharedFile(key, path, db, -1, version)
    shared.read_only, shared.unchanged = True, before
    return shared


def _reopen_read_only(shared: _SharedFile, path: str, timeout: float) -> None:
    """Replace a read-only file's connection with a fresh opening (its mutex held)."""
    fresh = _open_read_only(path, shared.key, timeout)
    stale, shared.db, shared.unchanged = shared.db, fresh.db, fresh.unchanged
    stale.close()


def _cannot_open(path: str, existed: bool, exc: OSError) -> StoreIOError:
    fault = disk_fault(path, failed=True)
    what = f"cannot open store {path} for writing" if existed else f"cannot create store {path}"
    if fault is not None:
        return (StoreFull if fault[0] == FULL else StoreIOError)(f"{what}: {fault[1]}")
    return StoreIOError(f"{what}: {exc.strerror}")


def _detach(shared: _SharedFile) -> None:
    with _OPEN_GUARD:
        shared.users -= 1
        if shared.users > 0:
            return
        # Closed before it leaves the registry: until then, an `_attach` of the same file
        # finds it held and shares it instead of opening (and closing) the file beside it.
        with shared.mutex:  # a thread still inside a call on it finishes first
            if shared.wal_fd >= 0:  # before the close that may delete the -wal
                posix.close(shared.wal_fd)
            shared.db.close()
            if shared.lock_fd >= 0:
                posix.close(shared.lock_fd)
        if _OPEN.get(shared.key) is shared:
            del _OPEN[shared.key]
            HELD_DATABASES.pop(shared.key, None)


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file at the real path `path`; None when there is none.
    A link there now appeared after the walk: refused, as the walk would have."""
    try:
        info = posix.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreIOError(f"cannot open store {path}: {exc.strerror}") from None
    if info.st_mode & 0o170000 == 0o120000:
        raise UntrustedPath(f"{path} is a symbolic link: not followed")
    return info.st_dev, info.st_ino


def _refuse_foreign_file(path: str) -> None:
    """A path that holds something other than an SQLite database is refused before
    anything is created next to it (not even the lock file)."""
    try:
        fd = posix.open(
            path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW | posix.O_NONBLOCK
        )  # a FIFO must not hang it
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreIOError(f"cannot open store {path}: {exc.strerror}") from None
    try:
        if not is_regular_file(posix.fstat(fd)):
            raise StoreIOError(f"store {path} is not a regular file")
        header = posix.read(fd, 16)
    except OSError as exc:
        raise StoreIOError(f"cannot read store {path}: {exc.strerror}") from None
    finally:
        posix.close(fd)
    if header and header != b"SQLite format 3\x00":
        raise StoreCorrupt(f"{path} is not an SQLite database; refusing to use it as a store")


def _open_private(path: str) -> int:
    return posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW, 0o600)
