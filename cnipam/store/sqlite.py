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

Writers serialise on an `flock` of `<db>.lock` before `BEGIN IMMEDIATE`: the kernel
queues waiters in order, where SQLite's own busy handler sleeps and polls (measured in
shared/reference/distributed.md §3.2: 430-930 ms tails with busy_timeout alone, 14-31 ms
with the flock). WAL with `synchronous=FULL` makes every commit durable before the
plugin prints its result; a process killed at any moment leaves the last commit intact.
"""

from __future__ import annotations

import os
import time
from _thread import RLock
from fcntl import LOCK_UN, flock

from ..config_files import HELD_DATABASES
from ..core.addresses import BITS, format_ip, from_bytes, parse_cidr, to_bytes
from ..core.allocator import gateway_reservations, grant, refuse_taken, search_windows
from ..core.errors import (
    AddressConflict,
    InvalidConfig,
    NotFound,
    PoolExhausted,
    StoreBusy,
    StoreCorrupt,
    StoreIOError,
)
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
from .base import Store
from .sqlite_module import Connection, DatabaseError, IntegrityError, OperationalError, connect
from .write_lock import take_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeVar

    T = TypeVar("T")

    from ..core.addresses import Network
    from ..core.docker_pools import DockerPool, PoolClaim  # run time: in the Docker methods
    from ..core.ipam_config import PoolSpec
    from ..core.leases import Owner
    from ..core.pool_usage import PoolUsage

SCHEMA_VERSION = 2

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
)

_COLUMNS = "family, address, kind, pool, slot, handle, network, container_id, ifname, created"
_POOL_COLUMNS = "id, address_space, pool, sub_pool, options, created"
_FIND_FREE = "SELECT first, last FROM free WHERE family = ? AND last >= ? ORDER BY last LIMIT 1"


def _lease(row: Sequence[object]) -> Lease:
    family, address = from_bytes(row[1])  # type: ignore[arg-type]
    return Lease(family, address, *row[2:])  # type: ignore[arg-type]


class SQLiteStore(Store):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._file = _attach(path, timeout)
        self._db: Connection = self._file.db
        if self._file.version != SCHEMA_VERSION:
            try:
                self._migrate()
            except BaseException:
                self._close_quietly()
                raise

    # -- the interface ---------------------------------------------------------------

    def allocate(self, owner: Owner, pools: tuple[PoolSpec, ...]) -> list[Lease]:
        with _Writing(self):
            return self._allocate(owner, pools, time.time())

    def _allocate(self, owner: Owner, pools: tuple[PoolSpec, ...], now: float) -> list[Lease]:
        """`allocate` inside an open write transaction."""
        held = self._select("WHERE handle = ?", (owner.handle,)) if owner.handle else []
        return grant(
            owner,
            pools,
            held,
            now,
            self._reserve_gateways,
            self._take_requested,
            self._take_next,
            self._insert,
            self._set_cursor,
        )

    def release(self, handle: str | None, addresses: Iterable[tuple[int, int]] = ()) -> list[Lease]:
        with _Writing(self):
            victims = {}
            if handle:
                for lease in self._select("WHERE handle = ?", (handle,)):
                    victims[lease.family, lease.address] = lease
            for family, address in addresses:
                found = self.lookup(family, address)
                if found is not None and found.kind == LEASE:
                    victims[family, address] = found
            for lease in victims.values():
                self._remove(lease)
            return list(victims.values())

    def release_gateway(self, family: int, address: int) -> Lease | None:
        with _Writing(self):
            found = self.lookup(family, address)
            if found is None or found.kind != GATEWAY:
                return None
            users = self._db.execute(
                "SELECT count(*) FROM leases WHERE pool = ? AND kind = 'lease'", (found.pool,)
            ).fetchone()[0]
            if users:
                raise AddressConflict(f"gateway {found.ip} still serves {users} lease(s) of pool {found.pool}")
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

    def cursors(self) -> dict[str, Cursor]:
        def scan() -> dict[str, Cursor]:
            rows = self._db.execute("SELECT pool, address, moves_on_release FROM cursors ORDER BY pool")
            return {pool: Cursor(*from_bytes(raw), bool(moves)) for pool, raw, moves in rows}

        return self._read(scan)

    def collect_garbage(self, network: str, valid: set[tuple[str, str]]) -> list[Lease]:
        with _Writing(self):
            candidates = self._select("WHERE network = ? AND kind = 'lease' AND container_id != ''", (network,))
            victims = [lease for lease in candidates if (lease.container_id, lease.ifname) not in valid]
            for lease in victims:
                self._remove(lease)
            return victims

    def exhausted(self, pools: tuple[PoolSpec, ...]) -> list[PoolSpec]:
        def scan() -> list[PoolSpec]:
            return [
                spec for spec in pools if all(self._first_free(spec.family, *window) is None for window in spec.pieces)
            ]

        return self._read(scan)

    def usage(self, configured: Iterable[PoolSpec] = ()) -> tuple[list[PoolUsage], list[str]]:
        """Counted in SQLite, never a lease object per row: the pool keys in one scan, each
        range's rows with one index range count, each query on its own (a writer of this
        process waits for one query, not for the whole count)."""
        from ..core.pool_usage import pool_usage

        found: dict[str, str] = {pool.key: pool.lease_network for pool in self.docker_pools()}
        found.update(self._read(self._pool_networks))

        def count(family: int, first: int, last: int) -> tuple[int, int]:
            row = self._read(
                lambda: self._db.execute(
                    "SELECT count(*), coalesce(sum(kind = 'gateway'), 0) FROM leases"
                    " WHERE family = ? AND address BETWEEN ? AND ?",
                    (family, to_bytes(family, first), to_bytes(family, last)),
                ).fetchone()
            )
            return row[0] - row[1], row[1]

        def is_reserved(family: int, address: int) -> bool:
            found = self.lookup(family, address)
            return found is not None and found.kind == GATEWAY

        return pool_usage(found, count, is_reserved, configured)

    def _pool_networks(self) -> dict[str, str]:
        """Every pool key the rows name, with the network of its first row inside its
        ranges ("" when none is, or the key cannot be read: pool_usage names it then)."""
        from ..core.ipam_config import parse_pool_key

        found = {}
        for (key,) in self._db.execute("SELECT DISTINCT pool FROM leases").fetchall():
            found[key] = ""
            try:
                ranges = parse_pool_key(key)
            except InvalidConfig:
                continue
            for address_range in ranges:
                family = address_range.network.family
                row = self._db.execute(
                    "SELECT network FROM leases WHERE family = ? AND address BETWEEN ? AND ? AND pool = ? LIMIT 1",
                    (family, to_bytes(family, address_range.first), to_bytes(family, address_range.last), key),
                ).fetchone()
                if row is not None:
                    found[key] = str(row[0])
                    break
        return found

    def import_leases(self, leases: Iterable[Lease], cursors: dict[str, Cursor]) -> int:
        rows = [_row(lease) for lease in leases]
        with _Writing(self):
            self._db.execute("SAVEPOINT import_rows")
            try:
                self._db.executemany(f"INSERT INTO leases (ip, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            except IntegrityError:
                self._db.execute("ROLLBACK TO import_rows")  # undo the rows before the clash, then name it
                raise AddressConflict(f"import refused: {self._first_conflict(rows)}") from None
            for family in sorted({lease_row[1] for lease_row in rows}):  # type: ignore[type-var]
                self._rebuild_free(family)  # type: ignore[arg-type]
            for pool, cursor in cursors.items():
                self._set_cursor(pool, cursor)
            return len(rows)

    def claim_docker_pool(self, claim: PoolClaim) -> DockerPool:
        from ..core.docker_pools import place_pool, pool_region  # not at the top: the plugin never needs it

        with _Writing(self):
            region = pool_region(claim)
            if claim.network is None:
                in_use = self._docker_pools_within(region)
            else:  # pools are disjoint: one overlapping pool is enough to refuse
                in_use = [clash for clash in (self._docker_overlap(region),) if clash is not None]
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
            for lease in rows:
                self._take(lease.family, lease.address)
                self._insert(lease)
            return len(wanted)

    def release_docker_pool(self, pool_id: str) -> DockerPool:
        with _Writing(self):
            pool = self._docker_pool(pool_id)
            for lease in self._select("WHERE network = ? AND kind = 'lease'", (pool.lease_network,)):
                self._remove(lease)
            self._db.execute("DELETE FROM docker_pools WHERE id = ?", (pool_id,))
            return pool

    def docker_pools(self) -> list[DockerPool]:
        query = f"SELECT {_POOL_COLUMNS} FROM docker_pools ORDER BY created, id"
        return self._read(lambda: [_docker_pool(row) for row in self._db.execute(query)])

    def request_docker_address(self, pool_id: str, requested: int | None, serial: bool = False) -> Lease:
        with _Writing(self):
            pool = self._docker_pool(pool_id)
            if requested is not None:
                pool.check_named(requested)
            return self._allocate(pool.owner(), (pool.spec(requested, serial),), time.time())[0]

    def release_docker_address(self, pool_id: str, family: int, address: int) -> Lease | None:
        with _Writing(self):
            pool = self._docker_pool(pool_id)
            pool.check_own(family, address)
            found = self.lookup(family, address)
            if found is None or not pool.holds(found):
                return None
            self._remove(found)
            return found

    def problems(self) -> list[str]:
        return self._read(self._find_problems_in_one_snapshot)

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

    def _docker_overlap(self, network: Network) -> DockerPool | None:
        """A Docker pool that overlaps `network`, if any: pools are disjoint, so the one
        starting last at or before network's end is the only candidate to look at."""
        row = self._db.execute(
            f"SELECT {_POOL_COLUMNS}, last FROM docker_pools WHERE family = ? AND first <= ?"
            " ORDER BY first DESC LIMIT 1",
            (network.family, to_bytes(network.family, network.last)),
        ).fetchone()
        if row is not None and int.from_bytes(row[-1], "big") >= network.value:
            return _docker_pool(row[:-1])
        return None

    def _docker_pools_within(self, main: Network) -> list[DockerPool]:
        """The Docker pools overlapping `main`, lowest first."""
        rows = self._db.execute(
            f"SELECT {_POOL_COLUMNS} FROM docker_pools WHERE family = ? AND last >= ? AND first <= ? ORDER BY first",
            (main.family, to_bytes(main.family, main.value), to_bytes(main.family, main.last)),
        )
        return [_docker_pool(row) for row in rows]

    def _reserve_gateways(self, spec: PoolSpec, network: str, now: float) -> None:
        for reservation in gateway_reservations(spec, network, now, self.lookup):
            self._take(reservation.family, reservation.address)
            self._insert(reservation)

    def _take_requested(self, spec: PoolSpec) -> int:
        address = spec.requested
        assert address is not None
        refuse_taken(self.lookup(spec.family, address))
        self._take(spec.family, address)
        return address

    def _take_next(self, spec: PoolSpec) -> int:
        cursor = None
        if not spec.lowest_free:
            row = self._db.execute("SELECT family, address FROM cursors WHERE pool = ?", (spec.key,)).fetchone()
            cursor = from_bytes(row[1])[1] if row and row[0] == spec.family else None
        for first, last in search_windows(spec.pieces, cursor):
            found = self._seek_free(spec.family, first)
            if found is not None and max(found[0], first) <= last:
                address = max(found[0], first)
                self._split(spec.family, address, found)
                return address
        raise PoolExhausted(f"no free address left in {spec}")

    def _seek_free(self, family: int, start: int) -> tuple[int, int] | None:
        """The first free interval that ends at or after `start`: one index seek."""
        row = self._db.execute(_FIND_FREE, (family, to_bytes(family, start))).fetchone()
        return (int.from_bytes(row[0], "big"), int.from_bytes(row[1], "big")) if row else None

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

    def _give_back(self, family: int, address: int) -> None:
        """Return one address to the free index, merging it with its neighbours."""
        first = last = address
        if address > 0:
            below = to_bytes(family, address - 1)
            left = self._db.execute("SELECT first FROM free WHERE family = ? AND last = ?", (family, below)).fetchone()
            if left:
                first = int.from_bytes(left[0], "big")
                self._db.execute("DELETE FROM free WHERE family = ? AND last = ?", (family, below))
        right = self._db.execute(_FIND_FREE, (family, to_bytes(family, address))).fetchone()
        if right and int.from_bytes(right[0], "big") == address + 1:
            last = int.from_bytes(right[1], "big")
            self._db.execute("DELETE FROM free WHERE family = ? AND last = ?", (family, right[1]))
        self._db.execute("INSERT INTO free VALUES (?, ?, ?)", (family, to_bytes(family, last), to_bytes(family, first)))

    def _insert(self, lease: Lease) -> None:
        try:
            self._db.execute(f"INSERT INTO leases (ip, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", _row(lease))
        except IntegrityError as exc:
            raise StoreCorrupt(f"cannot record {lease.ip}: {exc}; run `cnipamctl check`") from None

    def _remove(self, lease: Lease) -> None:
        raw = to_bytes(lease.family, lease.address)
        self._db.execute("DELETE FROM leases WHERE family = ? AND address = ?", (lease.family, raw))
        self._give_back(lease.family, lease.address)
        self._db.execute(
            "UPDATE cursors SET family = ?, address = ? WHERE pool = ? AND moves_on_release = 1",
            (lease.family, to_bytes(lease.family, lease.address), lease.pool),
        )

    def _set_cursor(self, pool: str, cursor: Cursor) -> None:
        row = (pool, cursor.family, to_bytes(cursor.family, cursor.address), int(cursor.moves_on_release))
        self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)", row)

    def _rebuild_free(self, family: int) -> None:
        """Recompute the free index of a family from its leases (bulk import, repair)."""
        self._db.execute("DELETE FROM free WHERE family = ?", (family,))
        gaps, start = [], 0
        for (raw,) in self._db.execute("SELECT address FROM leases WHERE family = ? ORDER BY address", (family,)):
            address = int.from_bytes(raw, "big")
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

    def _read(self, query: Callable[[], T]) -> T:
        """A read on the shared connection, by one thread at a time (re-entrant: reads run
        inside write transactions too)."""
        mutex = self._file.mutex
        if not mutex.acquire(timeout=max(self.timeout, 0.05)):
            raise StoreBusy(f"store {self.path} stayed busy with other threads of this process for {self.timeout:g}s")
        try:
            return query()
        except DatabaseError as exc:
            raise _store_error(self.path, exc) from None
        finally:
            mutex.release()

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
                self._file.version = SCHEMA_VERSION
            except DatabaseError as exc:
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
        if self._db.in_transaction:
            return self._find_problems()
        self._db.execute("BEGIN")
        try:
            return self._find_problems()
        finally:
            self._db.execute("ROLLBACK")

    def _find_problems(self) -> list[str]:
        problems: list[str] = []
        check = self._db.execute("PRAGMA integrity_check").fetchall()  # also verifies the unique indexes
        if check != [("ok",)]:
            problems.extend(f"sqlite: {row[0]}" for row in check[:10])
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
        for ip, raw in self._db.execute("SELECT ip, address FROM leases"):
            if format_ip(*from_bytes(raw)) != ip:
                problems.append(f"{ip}: text form does not match the stored address {format_ip(*from_bytes(raw))}")
        for family in (4, 6):
            problems.extend(self._free_index_problems(family))
        from .orphans import orphans  # only when checking

        problems.extend(orphans(self._select("", ()), self.cursors()))
        return problems[:50]

    def _free_index_problems(self, family: int) -> list[str]:
        """Leases and free intervals must tile the family's whole address space exactly once."""
        problems: list[str] = []
        query = "SELECT address FROM leases WHERE family = ? ORDER BY address"
        leased = (int.from_bytes(raw, "big") for (raw,) in self._db.execute(query, (family,)))
        query = "SELECT first, last FROM free WHERE family = ? ORDER BY last"
        intervals = [
            (int.from_bytes(a, "big"), int.from_bytes(b, "big")) for a, b in self._db.execute(query, (family,))
        ]
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
        shared = self._file
        events = self.events
        started = time.monotonic() if events is not None else 0.0
        if not shared.mutex.acquire(timeout=max(self.timeout, 0.05)):
            raise StoreBusy(f"store {self.path} stayed busy with other threads of this process for {self.timeout:g}s")
        try:
            take_lock(shared.lock_fd, self.timeout, self.path)
        except BaseException:
            shared.mutex.release()
            raise
        if events is not None:
            events.lock_waited(time.monotonic() - started)

    def _unlock(self) -> None:
        try:
            flock(self._file.lock_fd, LOCK_UN)
        finally:
            self._file.mutex.release()

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
    """One write transaction under the flock: committed on success, rolled back on any error."""

    def __enter__(self) -> None:
        super().__enter__()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except DatabaseError as exc:
            self.store._unlock()
            raise _store_error(self.store.path, exc) from None

    def __exit__(self, exc_type: object, *rest: object) -> None:
        db = self.store._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except DatabaseError as exc:
                    db.execute("ROLLBACK")
                    raise _store_error(self.store.path, exc) from None
            elif db.in_transaction:
                db.execute("ROLLBACK")
        finally:
            super().__exit__(exc_type)


def _store_error(path: str, exc: Exception) -> StoreIOError | StoreBusy:
    text = str(exc)
    if isinstance(exc, OperationalError) and "locked" in text:
        return StoreBusy(f"store {path} is busy: {text}")
    if "not a database" in text or "malformed" in text:
        return StoreCorrupt(f"store {path} is not a readable cnipam store: {text}")
    return StoreIOError(f"store {path}: {text}")


def _docker_pool(row: Sequence[object]) -> DockerPool:
    from ..core.docker_pools import DockerPool

    pool_id, space, network, sub_pool, options, created = row
    sub = None if sub_pool is None else parse_cidr(sub_pool, "sub_pool")[1]
    return DockerPool(str(pool_id), str(space), parse_cidr(network, "pool")[1], sub, str(options), float(created))  # type: ignore[arg-type]


def _row(lease: Lease) -> tuple[object, ...]:
    return (
        lease.ip, lease.family, to_bytes(lease.family, lease.address), lease.kind, lease.pool, lease.slot,
        lease.handle, lease.network, lease.container_id, lease.ifname, lease.created,
    )  # fmt: skip


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
    """

    __slots__ = ("key", "db", "lock_fd", "mutex", "users", "version")

    def __init__(self, key: tuple[int, int], db: Connection, lock_fd: int, version: int) -> None:
        self.key = key
        self.db = db
        self.lock_fd = lock_fd
        self.mutex = RLock()
        self.users = 1
        self.version = version


_OPEN: dict[tuple[int, int], _SharedFile] = {}
_OPEN_GUARD = RLock()  # held while a file is attached or detached (a detach waits for the call in progress)


def _attach(path: str, timeout: float) -> _SharedFile:
    """The process's connection to the database at `path`, opened if it holds none yet."""
    with _OPEN_GUARD:
        key = _identity(path)
        shared = _OPEN.get(key) if key is not None else None
        if shared is not None:
            shared.users += 1
            return shared
        # No connection of this process holds this file, so opening and closing it here
        # (the header check, the creation with a private mode) cannot drop any lock of ours.
        _refuse_foreign_file(path)
        try:
            _make_parents(path)
            lock_fd = _open_private(path + ".lock")
        except OSError as exc:
            raise StoreIOError(f"cannot create store {path}: {exc.strerror}") from None
        try:
            if key is None:
                os.close(_open_private(path))
                key = _identity(path)
            db = connect(path, timeout=max(timeout, 0.001), isolation_level=None, check_same_thread=False)
        except OSError as exc:
            os.close(lock_fd)
            raise StoreIOError(f"cannot create store {path}: {exc.strerror}") from None
        except DatabaseError as exc:
            os.close(lock_fd)
            raise _store_error(path, exc) from None
        try:
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if key is None or _identity(path) != key:  # replaced while we opened it: its key would lie
                raise OperationalError("the file was replaced while it was being opened")
        except DatabaseError as exc:
            db.close()
            os.close(lock_fd)
            raise _store_error(path, exc) from None
        shared = _OPEN[key] = _SharedFile(key, db, lock_fd, version)
        HELD_DATABASES[key] = os.path.abspath(path)  # a config may not name it now (config_files)
        return shared


def _detach(shared: _SharedFile) -> None:
    with _OPEN_GUARD:
        shared.users -= 1
        if shared.users > 0:
            return
        # Closed before it leaves the registry: until then, an `_attach` of the same file
        # finds it held and shares it instead of opening (and closing) the file beside it.
        with shared.mutex:  # a thread still inside a call on it finishes first
            shared.db.close()
            os.close(shared.lock_fd)
        if _OPEN.get(shared.key) is shared:
            del _OPEN[shared.key]
            HELD_DATABASES.pop(shared.key, None)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreIOError(f"cannot open store {path}: {exc.strerror}") from None
    return info.st_dev, info.st_ino


def _refuse_foreign_file(path: str) -> None:
    """A path that holds something other than an SQLite database is refused before
    anything is created next to it (not even the lock file)."""
    try:
        with open(path, "rb") as existing:
            header = existing.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreIOError(f"cannot open store {path}: {exc.strerror}") from None
    if header and header != b"SQLite format 3\x00":
        raise StoreCorrupt(f"{path} is not an SQLite database; refusing to use it as a store")


def _make_parents(path: str) -> None:
    """Create missing parent folders with mode 0750, each level (os.makedirs only sets the leaf)."""
    parent = os.path.dirname(os.path.abspath(path))
    missing = []
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o750)
        except FileExistsError:
            pass


def _open_private(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
