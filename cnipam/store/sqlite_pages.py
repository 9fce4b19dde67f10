"""Reading an SQLite file page by page, without SQLite, for recovering a damaged store.

Why not SQLite's own recovery (`sqlite3 FILE .recover`): it needs the `sqlite_dbpage`
virtual table, and Debian 12's libsqlite3 (3.40.1) is built without it, so the shell's
`.recover` fails with "SQL logic error" even on a healthy file. And reading through SQL
stops at the first damaged page of a b-tree: every row below a damaged interior page is
out of reach. This reads the file as the format describes it (sqlite.org/fileformat2.html):
the committed frames of its WAL laid over its pages, every b-tree walked from its root,
and every page that no walk reached decoded on its own, so the rows of a subtree whose
parent is damaged are still found. It only reads: never SQLite, never a write, never a
lock, so it leaves the source exactly as it was. It must not run in a process that
holds the file through SQLite (closing its descriptor would drop that connection's
locks); `cnipamctl recover` holds it no other way.
"""

from __future__ import annotations

import errno
import os
import struct

from ..core.record import Record

HEADER = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-, big-endian
LEAF_TABLE, LEAF_INDEX, INTERIOR_TABLE, INTERIOR_INDEX = 13, 10, 5, 2
MAX_FILE = 1 << 32  # a store of a million leases is about 100 MiB


class Damaged(Exception):
    """This page (or record) cannot be decoded."""


class Cell(Record):
    """One entry of a b-tree page: the record's values, the page it came from, and the
    row's rowid in a table's leaf (the value of an INTEGER PRIMARY KEY column, which the
    record itself holds as NULL), else None."""

    __slots__ = ("page", "values", "rowid")

    def __init__(self, page: int, values: tuple[object, ...], rowid: int | None = None) -> None:
        self.page = page
        self.values = values
        self.rowid = rowid


class Image:
    """The database as its last commit left it: the file's pages with the WAL's committed
    frames over them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = _read(path)  # the caller holds no SQLite connection to it
        self.page_size = _page_size(self.data)
        reserved = self.data[20] if len(self.data) >= 100 and self.data.startswith(HEADER) else 0
        self.usable = self.page_size - reserved
        self.overlay: dict[int, bytes] = {}
        self.wal_frames, self.wal_note = self._read_wal(path + "-wal")
        self.pages = max(len(self.data) // self.page_size, max(self.overlay, default=0))

    def page(self, number: int) -> bytes:
        if number in self.overlay:
            return self.overlay[number]
        if not 1 <= number <= self.pages:
            raise Damaged(f"page {number} is outside the file")
        start = (number - 1) * self.page_size
        page = self.data[start : start + self.page_size]
        if len(page) < self.page_size:
            raise Damaged(f"page {number} is cut short")
        return page

    def _read_wal(self, path: str) -> tuple[int, str]:
        """(frames applied, what was found): the frames up to the last valid commit, as
        SQLite itself reads a WAL (salts and running checksums must match)."""
        try:
            wal = _read(path)
        except FileNotFoundError:
            return 0, "no WAL"
        if len(wal) < 32:
            return 0, "an empty WAL"
        magic, _, size, _, salt1, salt2, sum1, sum2 = struct.unpack(">8I", wal[:32])
        if magic not in WAL_MAGIC or size != self.page_size:
            return 0, "a WAL with a damaged header: its commits are lost"
        big = magic & 1
        s0, s1 = _checksum(wal[:24], 0, 0, big)
        if (s0, s1) != (sum1, sum2):
            return 0, "a WAL with a damaged header: its commits are lost"
        frames: dict[int, bytes] = {}
        committed = 0
        offset = 32
        while offset + 24 + size <= len(wal):
            number, commit, frame_salt1, frame_salt2, frame_sum1, frame_sum2 = struct.unpack(
                ">6I", wal[offset : offset + 24]
            )
            if (frame_salt1, frame_salt2) != (salt1, salt2):
                break
            s0, s1 = _checksum(wal[offset : offset + 8], s0, s1, big)
            s0, s1 = _checksum(wal[offset + 24 : offset + 24 + size], s0, s1, big)
            if (s0, s1) != (frame_sum1, frame_sum2):
                break
            frames[number] = wal[offset + 24 : offset + 24 + size]
            offset += 24 + size
            if commit:
                self.overlay.update(frames)
                committed += len(frames)
                frames = {}
        ignored = f"; {len(frames)} frames after the last commit ignored" if frames else ""
        return committed, f"{committed} committed WAL frames{ignored}"


class Tree:
    """What walking one b-tree from its root found."""

    __slots__ = ("cells", "pages", "damaged")

    def __init__(self) -> None:
        self.cells: list[Cell] = []
        self.pages: set[int] = set()
        self.damaged: list[str] = []


def walk(image: Image, root: int, overflow: set[int]) -> Tree:
    """Every cell reachable from `root`, skipping (and naming) pages that cannot be read."""
    tree = Tree()
    pending = [root]
    while pending:
        number = pending.pop()
        if number in tree.pages:
            tree.damaged.append(f"page {number} is reached twice")
            continue
        tree.pages.add(number)
        try:
            _, cells, children = read_page(image, number, overflow)
        except Damaged as exc:
            tree.damaged.append(str(exc))
            continue
        for cell in cells:
            if isinstance(cell, Damaged):
                tree.damaged.append(str(cell))
            else:
                tree.cells.append(cell)
        pending.extend(children)
    return tree


def read_page(image: Image, number: int, overflow: set[int]) -> tuple[int, list[Cell | Damaged], list[int]]:
    """(page type, its cells, its children) of one b-tree page, a cell that cannot be
    decoded as its Damaged; Damaged when the page is not a b-tree page at all."""
    page = image.page(number)
    start = 100 if number == 1 else 0
    kind = page[start]
    if kind not in (LEAF_TABLE, LEAF_INDEX, INTERIOR_TABLE, INTERIOR_INDEX):
        raise Damaged(f"page {number} is not a b-tree page (type {kind})")
    interior = kind in (INTERIOR_TABLE, INTERIOR_INDEX)
    count, content = struct.unpack(">HH", page[start + 3 : start + 7])
    head = start + (12 if interior else 8)
    if head + 2 * count > (content or 65536) or (content or 65536) > image.usable:
        raise Damaged(f"page {number} has a damaged header ({count} cells)")
    children = [struct.unpack(">I", page[start + 8 : start + 12])[0]] if interior else []
    cells: list[Cell | Damaged] = []
    for index in range(count):
        (pointer,) = struct.unpack(">H", page[head + 2 * index : head + 2 * index + 2])
        if not content <= pointer < image.usable:
            cells.append(Damaged(f"page {number}: cell {index} points outside the page"))
            continue
        position = pointer
        if interior:
            children.append(struct.unpack(">I", page[position : position + 4])[0])
            position += 4
        if kind == INTERIOR_TABLE:
            continue  # a divider key only: table rows live in leaves
        try:
            size, position = _varint(page, position)
            rowid = None
            if kind == LEAF_TABLE:
                rowid, position = _varint(page, position)
            payload = _payload(image, page, position, size, kind == LEAF_TABLE, overflow, number)
            cells.append(Cell(number, decode_record(payload, number), rowid))
        except (Damaged, IndexError) as exc:
            cells.append(exc if isinstance(exc, Damaged) else Damaged(f"page {number}: a cell runs past the page"))
    outside = [child for child in children if not 1 <= child <= image.pages]
    if outside:
        raise Damaged(f"page {number} names child page {outside[0]}, outside the file")
    return kind, cells, children


def freelist(image: Image) -> set[int]:
    """The pages the header says are free (their old contents are not rows); as many as
    can be read."""
    found: set[int] = set()
    if len(image.data) < 100 or not image.data.startswith(HEADER):
        return found
    trunk, _ = struct.unpack(">II", image.page(1)[32:40])
    while trunk and trunk not in found and 1 <= trunk <= image.pages:
        found.add(trunk)
        try:
            page = image.page(trunk)
        except Damaged:
            break
        following, count = struct.unpack(">II", page[:8])
        if count > (image.usable - 8) // 4:
            break
        found.update(struct.unpack(f">{count}I", page[8 : 8 + 4 * count]))
        trunk = following
    return found


def decode_record(payload: bytes, page: int = 0) -> tuple[object, ...]:
    """A record's values (NULL, integers, floats, BLOBs, UTF-8 text); Damaged unless every
    byte of it is accounted for."""
    try:
        header_size, position = _varint(payload, 0)
        types = []
        while position < header_size:
            serial, position = _varint(payload, position)
            types.append(serial)
        if position != header_size or header_size > len(payload):
            raise Damaged(f"page {page}: a record with a damaged header")
        values: list[object] = []
        offset = header_size
        for serial in types:
            if serial in (10, 11):
                raise Damaged(f"page {page}: a record with a reserved type")
            length = _SIZES[serial] if serial < 12 else (serial - 12) // 2
            chunk = payload[offset : offset + length]
            if len(chunk) != length:
                raise Damaged(f"page {page}: a record longer than its cell")
            offset += length
            if serial == 0:
                values.append(None)
            elif serial <= 6:
                values.append(int.from_bytes(chunk, "big", signed=True))
            elif serial == 7:
                values.append(struct.unpack(">d", chunk)[0])
            elif serial in (8, 9):
                values.append(serial - 8)
            elif serial % 2 == 0:
                values.append(bytes(chunk))
            else:
                values.append(chunk.decode("utf-8"))
        if offset != len(payload):
            raise Damaged(f"page {page}: a record shorter than its cell")
        return tuple(values)
    except (IndexError, UnicodeDecodeError):
        raise Damaged(f"page {page}: a record that cannot be decoded") from None


_SIZES = (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)


def _payload(
    image: Image, page: bytes, position: int, size: int, table: bool, overflow: set[int], number: int
) -> bytes:
    usable = image.usable
    most = usable - 35 if table else (usable - 12) * 64 // 255 - 23
    if size <= most:
        local = size
    else:
        least = (usable - 12) * 32 // 255 - 23
        local = least + (size - least) % (usable - 4)
        if local > most:
            local = least
    data = page[position : position + local]
    if len(data) != local or size > MAX_FILE:
        raise Damaged(f"page {number}: a cell runs past the page")
    if local == size:
        return bytes(data)
    (following,) = struct.unpack(">I", page[position + local : position + local + 4])
    pieces = [data]
    gathered = local
    seen: set[int] = set()
    while gathered < size:
        if following in seen or not 1 <= following <= image.pages:
            raise Damaged(f"page {number}: a broken overflow chain")
        seen.add(following)
        chunk = image.page(following)
        pieces.append(chunk[4 : 4 + min(usable - 4, size - gathered)])
        gathered += usable - 4
        (following,) = struct.unpack(">I", chunk[:4])
    overflow.update(seen)
    return b"".join(pieces)[:size]


def _read(path: str) -> bytes:
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        if size > MAX_FILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE} bytes: not a store")
        return source.read()


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for step in range(8):
        byte = data[position + step]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, position + step + 1
    return (value << 8) | data[position + 8], position + 9


def _page_size(data: bytes) -> int:
    """From the header; when the header is damaged, the usual size."""
    if len(data) >= 100 and data.startswith(HEADER):
        (raw,) = struct.unpack(">H", data[16:18])
        size = 65536 if raw == 1 else raw
        if 512 <= size <= 65536 and size & (size - 1) == 0:
            return size
    return 4096


def _checksum(data: bytes, s0: int, s1: int, big: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for index in range(0, len(words), 2):
        s0 = (s0 + words[index] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[index + 1] + s0) & 0xFFFFFFFF
    return s0, s1
