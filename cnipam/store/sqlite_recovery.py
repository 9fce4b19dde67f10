"""A new store rebuilt from what a damaged one still holds (`cnipamctl recover`).

What the pages (sqlite_pages.py) give, each b-tree walked from its root:
* rows of `leases`: whole leases, each checked as the engine checks what it reads (types,
  text form of the address, kind, a pool that contains the address);
* entries of the two lease indexes, each in a b-tree of its own: (owner, slot) and
  (network, container, interface) of an address. When a row is lost and one of its
  entries is not, the address is still known to be held, and by whom;
* the free index: when every page of it was read, an address that is neither free nor
  found in a row or an entry was held by a lease whose every trace is lost.
Rows on pages that no b-tree reaches (under a damaged interior page) are used when they
clash with nothing read from a tree; pages on the freelist never are (deleted rows).

The rule that keeps the new store safe: an address known to be held is never free in it.
A row saved whole is imported as it was. An address known only from an index entry or
from the free index becomes a lease holding it, with its owner and attachment as far as
known (network `cnipam-recovered` when unknown, so `cnipamctl leases --network
cnipam-recovered` lists them), for the operator to release once checked. Only an
address whose row, both index entries and free interval were all lost can come back as
free, and the report says when that cannot be ruled out (the free index was damaged).
Round-robin positions, Docker pools and the pool id counter are kept when readable; a
lost counter restarts above every pool id still in use. The address history's records
are kept when they pass the checks its writer makes (a known event, an address of its
family, text where text was written), and each saved lease's history then goes on with
an IMPORTED record at the recovery, as after any import (core.history).
"""

from __future__ import annotations

import os
import time

from ..core.addresses import BITS, format_ip
from ..core.docker_pools import NETWORK_PREFIX as DOCKER_NETWORK
from ..core.errors import CnipamError, StoreIOError
from ..core.history import EVENTS, IMPORTED, HistoryRecord, record_of
from ..core.ipam_config import parse_pool_key
from ..core.leases import GATEWAY, LEASE, Cursor, Lease
from ..core.record import Record
from .sqlite_pages import Cell, Damaged, Image, freelist, read_page, walk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.docker_pools import DockerPool

RECOVERED_NETWORK = "cnipam-recovered"
UNKNOWN_LIMIT = 65536  # addresses the free index may leave unexplained before it is not trusted
# Root pages of the tables every cnipam store created first (schema version 1), used
# when the schema page itself cannot be read.
LEASE_COLUMNS = 14  # ip and the engine's columns (sqlite._COLUMNS)
HISTORY_COLUMNS = 15  # the id (the rowid, stored as NULL), ip and a record's thirteen fields
LATER_DEFAULTS: tuple[object, ...] = ("", "", None)  # boot, netns, gateway
KNOWN_ROOTS = {"leases": 2, "lease_owner_slot": 3, "lease_attachment": 4, "free": 5, "cursors": 6}


class Recovery(Record):
    """What `recover` saved and what it lost, for the report."""

    __slots__ = (
        "source", "target", "pages", "wal", "damaged", "saved", "saved_unreached", "rebuilt", "unowned",
        "dropped", "cursors", "cursors_lost", "docker_pools", "counter", "free_index_whole", "history",
        "history_lost", "notes",
    )  # fmt: skip

    def __init__(self, source: str, target: str) -> None:
        self.source = source
        self.target = target
        self.pages = 0
        self.wal = ""
        self.damaged: list[str] = []  # what could not be read, by page
        self.saved = 0  # leases and reservations saved whole from their tables
        self.saved_unreached = 0  # of those, found on pages no b-tree reaches
        self.rebuilt: list[str] = []  # addresses held per an index entry: owner as far as known
        self.unowned: list[str] = []  # addresses held per the free index only
        self.dropped: list[str] = []  # rows that could not be used, with the reason
        self.cursors = 0
        self.cursors_lost = False
        self.docker_pools = 0
        self.counter = 0
        self.free_index_whole = False
        self.history = 0  # address history records saved
        self.history_lost = False
        self.notes: list[str] = []

    @property
    def lossless(self) -> bool:
        return not (
            self.damaged or self.rebuilt or self.unowned or self.dropped or self.cursors_lost or self.history_lost
        )


class _Tables:
    """Every cell found, by the table or index it belongs to."""

    def __init__(self, image: Image, recovery: Recovery) -> None:
        self.image = image
        self.recovery = recovery
        self.overflow: set[int] = set()
        self.reached: set[int] = set()
        self.walked: dict[str, list[Cell]] = {}
        self.whole: dict[str, bool] = {}
        roots = self._roots()
        for name, root in roots.items():
            tree = walk(image, root, self.overflow)
            self.walked[name] = tree.cells
            self.whole[name] = not tree.damaged
            self.reached |= tree.pages
            recovery.damaged.extend(f"{name}: {problem}" for problem in tree.damaged)
        self.unreached = self._unreached_cells()

    def _roots(self) -> dict[str, int]:
        tree = walk(self.image, 1, self.overflow)
        self.reached |= tree.pages
        roots = {}
        for cell in tree.cells:
            kind, name, _, root = cell.values[:4] if len(cell.values) == 5 else (None,) * 4
            if kind in ("table", "index") and isinstance(name, str) and isinstance(root, int) and root > 1:
                roots[name] = root
        if tree.damaged or not roots:
            self.recovery.damaged.extend(f"schema: {problem}" for problem in tree.damaged)
            for name, root in KNOWN_ROOTS.items():
                roots.setdefault(name, root)
            self.recovery.notes.append("the schema page is damaged: the tables were found where cnipam creates them")
        return roots

    def _unreached_cells(self) -> list[Cell]:
        """Cells of b-tree pages no walk reached and that are not free or overflow pages."""
        skip = self.reached | self.overflow | freelist(self.image)
        found: list[Cell] = []
        for number in range(1, self.image.pages + 1):
            if number in skip:
                continue
            try:
                _, cells, _ = read_page(self.image, number, set())
            except Damaged:
                continue
            found.extend(cell for cell in cells if isinstance(cell, Cell))
        return found


def recover(source: str, target: str) -> Recovery:
    """Read `source` (never written), build `target` (which must not exist)."""
    from .sqlite import SQLiteStore

    if os.path.lexists(target):
        raise StoreIOError(f"{target} exists: recover builds a new store and never writes over a file")
    holder = _holder(source)
    if holder is not None:
        raise StoreIOError(
            f"process {holder} has {source} open: stop every process using the store (cnipamd, cnipam-docker) first"
        )
    recovery = Recovery(source, target)
    try:
        image = Image(source)
    except OSError as exc:
        raise StoreIOError(f"cannot read {source}: {exc.strerror}") from None
    recovery.pages, recovery.wal = image.pages, image.wal_note
    tables = _Tables(image, recovery)
    leases = _leases(tables, recovery)
    cursors = _cursors(tables, leases, recovery)
    pools = _docker_pools(tables, recovery)
    counter = max([_counter(tables), *(_serial(pool.id) for pool in pools)], default=0)
    history = _history(tables, recovery)
    store = SQLiteStore(target)
    try:
        now = store.clock()
        history += [
            record_of(lease, IMPORTED, now, store.history_host) for lease in leases.values() if lease.kind == LEASE
        ]
        store.import_leases(sorted(leases.values(), key=lambda lease: (lease.family, lease.address)), cursors, history)
        if pools:
            store.import_docker_pools(pools, [])
        store.keep_counter_at_least("docker_pool", counter)
    finally:
        store.close()
    recovery.docker_pools, recovery.counter = len(pools), counter
    return recovery


def _leases(tables: _Tables, recovery: Recovery) -> dict[tuple[int, int], Lease]:
    found: dict[tuple[int, int], Lease] = {}
    slots: dict[tuple[str, str], tuple[int, int]] = {}

    def take(lease: Lease, unreached: bool) -> None:
        key = (lease.family, lease.address)
        slot = (lease.handle, lease.slot) if lease.handle is not None else None
        if key in found or (slot is not None and slot in slots):
            recovery.dropped.append(f"{lease.ip} ({lease.describe_holder()}): clashes with a row read before it")
            return
        found[key] = lease
        if slot is not None:
            slots[slot] = key
        recovery.saved += 1
        recovery.saved_unreached += unreached

    for cells, unreached in (
        (tables.walked.get("leases", []), False),
        (_shaped(tables.unreached, *range(11, LEASE_COLUMNS + 1)), True),
    ):
        for cell in cells:
            try:
                take(_lease_row(cell.values), unreached)
            except Damaged as exc:
                if not unreached:
                    recovery.dropped.append(f"page {cell.page}: {exc}")
    _add_indexed(tables, found, slots, recovery)
    _add_unexplained(tables, found, recovery)
    return found


def _lease_row(values: tuple[object, ...]) -> Lease:
    """A row of `leases` as the engine would read it; Damaged when it cannot be one."""
    from .sqlite import _BadRow, _lease

    if not 11 <= len(values) <= LEASE_COLUMNS:
        raise Damaged(f"a lease row of {len(values)} columns")
    # Columns added after a row was written (boot, netns: schema 3; gateway: 4) take their defaults.
    later = (*values[11:], *LATER_DEFAULTS[len(values) - 11 :])
    try:
        lease = _lease((*values[:2], *values[3:11], *later))
    except _BadRow as exc:
        raise Damaged(str(exc)) from None
    if values[2] != lease.ip:
        raise Damaged(f"a lease row whose address {lease.ip} does not match its text {values[2]!r:.60}")
    try:
        ranges = parse_pool_key(lease.pool)
    except CnipamError:
        raise Damaged(f"{lease.ip}: pool {lease.pool!r:.60} is not a pool description") from None
    if not any(
        r.network.family == lease.family
        and (lease.address in r.network if lease.kind == GATEWAY else r.first <= lease.address <= r.last)
        for r in ranges
    ):
        raise Damaged(f"{lease.ip} lies outside its pool {lease.pool}")
    return lease


def _add_indexed(
    tables: _Tables,
    found: dict[tuple[int, int], Lease],
    slots: dict[tuple[str, str], tuple[int, int]],
    recovery: Recovery,
) -> None:
    """Addresses whose row is lost but an index entry says who held them."""
    owners: dict[tuple[int, int], tuple[str | None, str]] = {}
    for cell in tables.walked.get("lease_owner_slot", []):
        handle, slot, family, raw = cell.values if len(cell.values) == 4 else (0, 0, 0, 0)
        if isinstance(handle, (str, type(None))) and isinstance(slot, str) and _address(family, raw):
            owners[family, int.from_bytes(raw, "big")] = (handle, slot)  # type: ignore[index,arg-type]
    attachments: dict[tuple[int, int], tuple[str, str, str]] = {}
    for cell in tables.walked.get("lease_attachment", []):
        values = cell.values
        if len(values) == 5 and all(isinstance(v, str) for v in values[:3]) and _address(values[3], values[4]):
            attachments[values[3], int.from_bytes(values[4], "big")] = values[:3]  # type: ignore[index,arg-type,assignment]
    pools = {lease.pool for lease in found.values()}
    now = time.time()
    for key in sorted(set(owners) | set(attachments)):
        if key in found:
            continue
        handle, slot = owners.get(key, (None, "recovered"))
        if handle is not None and (handle, slot) in slots:
            handle = None  # the owner's slot is taken by a row: keep the address, not the claim
        network, container, ifname = attachments.get(key, (RECOVERED_NETWORK, "", ""))
        if handle is None and _a_gateway(key, attachments.get(key), pools):
            slot = GATEWAY
        kind = GATEWAY if handle is None and slot == GATEWAY else LEASE
        lease = Lease(key[0], key[1], kind, _pool_for(key, pools), slot, handle, network, container, ifname, now)
        found[key] = lease
        if handle is not None:
            slots[handle, slot] = key
        recovery.rebuilt.append(f"{lease.ip} ({lease.describe_holder()}, network {network})")


def _add_unexplained(tables: _Tables, found: dict[tuple[int, int], Lease], recovery: Recovery) -> None:
    """Addresses the free index says are taken that nothing else accounts for."""
    intervals: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    whole = tables.whole.get("free", False)
    for cell in tables.walked.get("free", []):
        family, last, first = cell.values if len(cell.values) == 3 else (0, 0, 0)
        if _address(family, last) and _address(family, first):
            intervals[family].append((int.from_bytes(first, "big"), int.from_bytes(last, "big")))  # type: ignore[index,arg-type]
        else:
            whole = False
    if not whole:
        recovery.notes.append(
            "the free index is damaged: an address whose row and index entries were all lost cannot be told "
            "from a free one, and may be handed out again"
        )
        return
    # The addresses between free intervals are the taken ones: as many as the leases found,
    # plus those nothing else explains. More than that budget (a damaged interval whose
    # bytes still look like an address can open a gap of 2^100) and it is not trusted:
    # counted before a single address of a gap is looked at.
    budget = len(found) + UNKNOWN_LIMIT
    gaps: list[tuple[int, int, int]] = []
    for family, spans in intervals.items():
        position = 0
        for first, last in [*sorted(spans, key=lambda span: span[1]), (1 << BITS[family], 0)]:
            if first > position:
                gaps.append((family, position, first))
                budget -= first - position
            if budget < 0:
                recovery.notes.append(
                    "the free index leaves too many addresses unexplained to be trusted: an address whose row and "
                    "index entries were all lost cannot be told from a free one, and may be handed out again"
                )
                return
            position = max(position, last + 1)
    unexplained = [(family, a) for family, start, end in gaps for a in range(start, end) if (family, a) not in found]
    recovery.free_index_whole = True
    pools = {lease.pool for lease in found.values()}
    now = time.time()
    for family, address in unexplained:
        key = (family, address)
        kind, slot = (GATEWAY, GATEWAY) if _a_gateway(key, None, pools) else (LEASE, "recovered")
        found[key] = Lease(family, address, kind, _pool_for(key, pools), slot, None, RECOVERED_NETWORK, "", "", now)
        recovery.unowned.append(
            format_ip(family, address) + (" (taken for its subnet's gateway)" if kind == GATEWAY else "")
        )


def _cursors(tables: _Tables, leases: dict[tuple[int, int], Lease], recovery: Recovery) -> dict[str, Cursor]:
    cursors: dict[str, Cursor] = {}
    for cell in tables.walked.get("cursors", []):
        pool, family, raw, moves = cell.values if len(cell.values) == 4 else (0, 0, 0, 0)
        if isinstance(pool, str) and _address(family, raw) and moves in (0, 1):
            cursors[pool] = Cursor(family, int.from_bytes(raw, "big"), bool(moves))  # type: ignore[arg-type]
    recovery.cursors = len(cursors)
    pools = {lease.pool for lease in leases.values() if lease.kind == LEASE and lease.network != RECOVERED_NETWORK}
    lost = [pool for pool in pools if pool not in cursors and "[" not in pool]
    if not tables.whole.get("cursors", False) or lost:
        recovery.cursors_lost = True
        recovery.notes.append("round-robin positions were lost: those pools start again from their first free address")
    return cursors


def _docker_pools(tables: _Tables, recovery: Recovery) -> list[DockerPool]:
    from .sqlite import _BadRow, _docker_pool

    kept: list[DockerPool] = []
    for cells in (tables.walked.get("docker_pools", []), _shaped(tables.unreached, 9)):
        for cell in cells:
            values = cell.values
            if len(values) != 9:
                continue
            try:
                pool = _docker_pool((values[0], values[1], values[3], values[6], values[7], values[8]))
            except _BadRow as exc:
                recovery.dropped.append(f"page {cell.page}: {exc}")
                continue
            if any(other.id == pool.id or other.network.overlaps(pool.network) for other in kept):
                continue
            kept.append(pool)
    if not tables.whole.get("docker_pools", True):
        recovery.notes.append("Docker pools may be lost: their addresses stay held (network docker:<id>)")
    return kept


def _history(tables: _Tables, recovery: Recovery) -> list[HistoryRecord]:
    """The history records still readable, in the order they were written (their ids)."""
    kept: list[tuple[int, HistoryRecord]] = []
    lost = 0
    for cells in (tables.walked.get("history", []), _shaped(tables.unreached, HISTORY_COLUMNS)):
        for cell in cells:
            record = _readable_record(cell.values)
            if record is None or cell.rowid is None:
                lost += 1
            else:
                kept.append((cell.rowid, record))
    recovery.history = len(kept)
    if lost or not tables.whole.get("history", True):
        recovery.history_lost = True
        recovery.notes.append("address history records were lost: `cnipamctl history` cannot name every earlier holder")
    return [record for _, record in sorted(kept, key=lambda item: item[0])]  # in the order written


def _readable_record(values: tuple[object, ...]) -> HistoryRecord | None:
    """A row of `history` as its writer made it, or None."""
    if len(values) != HISTORY_COLUMNS:
        return None
    _, _, at, event, family, raw, *texts, held_from = values
    handle, others = texts[2], texts[:2] + texts[3:]
    if not (
        isinstance(at, float | int) and isinstance(held_from, float | int) and event in EVENTS
        and _address(family, raw) and all(isinstance(text, str) for text in others)
        and (handle is None or isinstance(handle, str))
    ):  # fmt: skip
        return None
    pool, network, _, container_id, ifname, netns, host, boot = texts
    address = int.from_bytes(raw, "big")  # type: ignore[arg-type]
    return HistoryRecord(
        float(at), event, family, address, pool, network, handle, container_id, ifname, netns, host, boot,  # type: ignore[arg-type]
        float(held_from),
    )  # fmt: skip


def _counter(tables: _Tables) -> int:
    for cell in tables.walked.get("counters", []):
        if cell.values[:1] == ("docker_pool",) and len(cell.values) == 2 and isinstance(cell.values[1], int):
            return cell.values[1]
    return 0


def _serial(pool_id: str) -> int:
    from ..core.docker_pools import pool_serial

    return pool_serial(pool_id) or 0


def _holder(source: str) -> int | None:
    """A process holding SQLite's locks on the store (an open connection keeps one on the
    -shm, a transaction one on the file), else None. Its file descriptors are opened here
    only because this process holds no SQLite connection to the file."""
    import fcntl
    import struct

    for name in (source + "-shm", source):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            query = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock, Linux
            kind, _, _, _, pid = struct.unpack("hh4xqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))
        finally:
            os.close(fd)
        if kind != fcntl.F_UNLCK:
            return int(pid)
    return None


def _shaped(cells: list[Cell], *columns: int) -> list[Cell]:
    return [cell for cell in cells if len(cell.values) in columns]


def _address(family: object, raw: object) -> bool:
    return family in (4, 6) and isinstance(raw, bytes) and len(raw) == (4 if family == 4 else 16)


def _a_gateway(key: tuple[int, int], attachment: tuple[str, str, str] | None, pools: set[str]) -> bool:
    """Whether an address known to be held, without an owner, was a gateway reservation
    (an ADD meeting it as a lease would refuse the whole pool). Its attachment entry says
    so when it names no container and no interface outside a Docker pool (an anonymous
    ecs lease looks alike, and stays held either way); with no entry, when it is the first
    address of a known pool's subnet, where a gateway is unless the config moves it."""
    if attachment is not None:
        network, container, ifname = attachment
        return not container and not ifname and not network.startswith(DOCKER_NETWORK)
    family, address = key
    for pool in pools:
        try:
            ranges = parse_pool_key(pool)
        except CnipamError:
            continue
        if any(r.network.family == family and address == r.network.value + 1 for r in ranges):
            return True
    return False


def _pool_for(key: tuple[int, int], pools: set[str]) -> str:
    """The narrowest known pool that contains the address, else one of the address alone."""
    family, address = key
    best: tuple[int, str] | None = None
    for pool in pools:
        try:
            ranges = parse_pool_key(pool)
        except CnipamError:
            continue
        for r in ranges:
            if r.network.family == family and address in r.network and (best is None or r.network.prefix > best[0]):
                best = (r.network.prefix, pool)
    if best is not None:
        return best[1]
    text = format_ip(family, address)
    return f"{text}/{BITS[family]}[{text}-{text}]"
