"""A small, read-only reader of bbolt database files (go.etcd.io/bbolt v1.3.x, file format version 2).

Why our own reader: migrating from ecs-ipam means reading its bbolt file once, and the
only Python port on PyPI (`boltdb` 0.0.2) opens the file read-write, creates or
initialises it when it is missing or empty, takes a lock, maps it writable, trusts the
meta page without its checksum, and fails on damaged files with struct errors or a
deadlock. A migration must never change the store it migrates from, and must say
plainly what is wrong with a damaged one, so this module:

* reads the file with a plain `open(path, "rb")`: no lock, no mmap, no write. The file
  must not be in use (stop the plugin's callers first); a file caught mid-commit is
  read as bbolt itself would read it after a crash (see `BoltFile`);
* validates every structure before using it, and reports any damage as one exception,
  `BoltFormatError`, whose message names the page and what is wrong with it.

The format, as bbolt v1.3 writes it (all integers little-endian):

* The file is an array of pages of `pageSize` bytes. Every page starts with a 16-byte
  header: page id (u64), flags (u16: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10
  freelist), element count (u16), overflow (u32, the number of extra contiguous pages
  this page spans).
* Pages 0 and 1 are meta pages. The meta follows the header: magic 0xED0CDAED (u32),
  version 2 (u32), pageSize (u32), flags (u32), the root bucket (root page id u64,
  sequence u64), freelist page id (u64), high-water page id (u64: the first page never
  allocated), txid (u64), checksum (u64: FNV-1a 64 over the 56 meta bytes before it).
  Commits alternate between the two, so the valid one with the higher txid is current.
* A bucket is a B+tree. Branch elements (16 bytes: pos u32, ksize u32, child page id
  u64) and leaf elements (16 bytes: flags u32, pos u32, ksize u32, vsize u32) follow
  the page header; `pos` is the distance from the element itself to its key, and a
  leaf value follows its key.
* A leaf element with flag 0x01 is a nested bucket, and its value is a bucket header
  (root page id u64, sequence u64). Root page id 0 means an inline bucket: its one leaf
  page (header included) follows in the value itself.
"""

from __future__ import annotations

import struct

from ..core.errors import CnipamError

__all__ = ["BoltFile", "BoltFormatError", "Bucket", "open_file", "read_bucket"]


class BoltFormatError(CnipamError):
    """The file is not a bbolt database we can read: the message says what is wrong and where."""


MAGIC = 0xED0CDAED
VERSION = 2

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQQ")  # magic, version, pageSize, flags, root, sequence, freelist, pgid, txid, checksum
_CHECKSUMMED = _META.size - 8  # the checksum covers the meta up to the checksum field
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, pgid
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BUCKET_HEADER = struct.Struct("<QQ")  # root page id, sequence
_ELEMENT_SIZE = 16  # both element kinds

_BRANCH_PAGE = 0x01
_LEAF_PAGE = 0x02
_BUCKET_LEAF = 0x01  # leaf element flag: the value is a nested bucket

# Page sizes tried to find meta page 1 when meta page 0 is unusable: bbolt uses the OS
# page size unless told otherwise, and meta page 1 records its own page size.
_FALLBACK_PAGE_SIZES = tuple(1 << shift for shift in range(9, 17))
_MIN_PAGE_SIZE = _PAGE_HEADER.size + _META.size

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a_64(data: bytes) -> int:
    """FNV-1a 64, the hash bbolt's meta checksum uses (Go's hash/fnv New64a)."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value


class _Meta:
    """The fields of one valid meta page that the reader needs."""

    __slots__ = ("slot", "page_size", "root", "high_water", "txid")

    def __init__(self, slot: int, page_size: int, root: int, high_water: int, txid: int) -> None:
        self.slot = slot
        self.page_size = page_size
        self.root = root
        self.high_water = high_water
        self.txid = txid


def _read_meta(data: bytes, slot: int, offset: int) -> _Meta | str:
    """The meta page at `offset`, or the reason it is not valid (bbolt's own three checks)."""
    start = offset + _PAGE_HEADER.size
    if len(data) < start + _META.size:
        return f"truncated ({len(data)} bytes in the file, the meta page needs {start + _META.size})"
    magic, version, page_size, _flags, root, _sequence, _freelist, high_water, txid, checksum = _META.unpack_from(
        data, start
    )
    if magic != MAGIC:
        return f"bad magic 0x{magic:08x} (a bbolt file has 0x{MAGIC:08x})"
    if version != VERSION:
        return f"unsupported version {version} (bbolt v1.3 writes {VERSION})"
    expected = fnv1a_64(data[start : start + _CHECKSUMMED])
    if checksum != expected:
        return f"bad checksum 0x{checksum:016x} (the meta hashes to 0x{expected:016x})"
    if page_size < _MIN_PAGE_SIZE:
        return f"page size {page_size} is too small"
    if slot == 1 and page_size != offset:
        return f"page size {page_size} does not match the meta page's offset {offset}"
    return _Meta(slot, page_size, root, high_water, txid)


def _choose_meta(data: bytes) -> tuple[_Meta, list[str]]:
    """The current meta, chosen as bbolt chooses it: the valid one with the higher txid.

    A commit writes its meta page last, so a crash mid-commit leaves that page invalid
    and the other one describes the previous, intact transaction; bbolt then opens the
    file at that transaction, and so do we, with a warning.
    """
    if not data:
        raise BoltFormatError("empty file (0 bytes): not a bbolt database")
    meta0 = _read_meta(data, 0, 0)
    if isinstance(meta0, _Meta):
        meta1 = _read_meta(data, 1, meta0.page_size)
    else:
        meta1 = "not found at any usual page size"
        for size in _FALLBACK_PAGE_SIZES:
            candidate = _read_meta(data, 1, size)
            if isinstance(candidate, _Meta):
                meta1 = candidate
                break
        else:
            if len(data) >= 4096:
                meta1 = _read_meta(data, 1, 4096)  # name the reason at the usual offset
    if isinstance(meta0, _Meta) and isinstance(meta1, _Meta):
        return (meta1 if meta1.txid > meta0.txid else meta0), []
    if isinstance(meta0, _Meta):
        return meta0, [f"meta page 1 is invalid ({meta1}); read the file as of meta page 0 (txid {meta0.txid})"]
    if isinstance(meta1, _Meta):
        return meta1, [f"meta page 0 is invalid ({meta0}); read the file as of meta page 1 (txid {meta1.txid})"]
    raise BoltFormatError(f"not a bbolt database: meta page 0: {meta0}; meta page 1: {meta1}")


class _ChildRef:
    """Where a nested bucket's tree is: its root page, or (root 0) the inline page's bytes."""

    __slots__ = ("root", "sequence", "inline_start", "inline_end")

    def __init__(self, root: int, sequence: int, inline_start: int, inline_end: int) -> None:
        self.root = root
        self.sequence = sequence
        self.inline_start = inline_start
        self.inline_end = inline_end


class Bucket:
    """One bucket's contents: plain key/value pairs, and the names of its nested buckets.

    Nested buckets are read only when asked for (`bucket(name)`), so reading one bucket
    of a large file does not walk the whole file.
    """

    __slots__ = ("values", "sequence", "_file", "_children", "_opened")

    def __init__(
        self, file: BoltFile, values: dict[bytes, bytes], children: dict[bytes, _ChildRef], sequence: int
    ) -> None:
        self.values = values
        self.sequence = sequence  # the bucket's NextSequence counter, as stored in its header
        self._file = file
        self._children = children
        self._opened: dict[bytes, Bucket] = {}

    def bucket_names(self) -> list[bytes]:
        """The names of the nested buckets, in key order."""
        return list(self._children)

    def bucket(self, name: bytes) -> Bucket:
        """The nested bucket `name`; BoltFormatError if there is none."""
        opened = self._opened.get(name)
        if opened is not None:
            return opened
        child = self._children.get(name)
        if child is None:
            if name in self.values:
                raise BoltFormatError(f"no bucket {_show(name)} (it is a plain value)")
            others = ", ".join(_show(other) for other in self._children)
            raise BoltFormatError(f"no bucket {_show(name)}" + (f" (buckets here: {others})" if others else ""))
        opened = self._file._read_bucket(name, child)
        self._opened[name] = opened
        return opened


class BoltFile:
    """A bbolt file's bytes, checked and ready to read.

    `txid` is the transaction the file was read at, `page_size` its page size, and
    `warnings` notes anything a migration should report although the file was readable
    (today: one meta page was invalid, so the file was read at the other one).
    Once it has raised BoltFormatError it is not meant to be read further: the pages
    walked so far count as seen, so a retry would report them as reached twice.
    """

    __slots__ = ("page_size", "txid", "warnings", "_data", "_high_water", "_seen", "_root_page", "_root")

    def __init__(self, data: bytes) -> None:
        meta, self.warnings = _choose_meta(data)
        self._data = data
        self.page_size = meta.page_size
        self.txid = meta.txid
        if meta.high_water < 3:
            raise BoltFormatError(
                f"meta page {meta.slot}: high-water mark {meta.high_water} leaves no page for the root bucket"
            )
        needed = meta.high_water * meta.page_size
        if len(data) < needed:
            raise BoltFormatError(
                f"truncated file: {len(data)} bytes, but meta page {meta.slot} (txid {meta.txid}) uses "
                f"{meta.high_water} pages of {meta.page_size} bytes ({needed} bytes)"
            )
        self._high_water = meta.high_water
        self._seen = bytearray(meta.high_water)  # 1 = the page belongs to a tree already read
        self._root_page = meta.root
        self._root: Bucket | None = None

    def root(self) -> Bucket:
        """The root bucket, whose entries are the top-level buckets."""
        if self._root is None:
            if self._root_page == 0:
                raise BoltFormatError("the root bucket has no page (root page id 0)")
            self._root = self._read_bucket(b"(root)", _ChildRef(self._root_page, 0, 0, 0))
        return self._root

    def bucket(self, *path: bytes) -> Bucket:
        """The bucket reached by following `path` from the root, e.g. `bucket(b"IPAM")`."""
        current = self.root()
        for name in path:
            current = current.bucket(name)
        return current

    def _read_bucket(self, name: bytes, ref: _ChildRef) -> Bucket:
        """Walk one bucket's B+tree in key order, checking every page and element bounds."""
        values: dict[bytes, bytes] = {}
        children: dict[bytes, _ChildRef] = {}
        previous: bytes | None = None
        data = self._data
        # Pages still to visit, as (start, end, flags, count, label), last one first, so
        # that popping visits the leaves in key order without recursion.
        if ref.root == 0:
            stack = [self._inline_page(name, ref.inline_start, ref.inline_end)]
        else:
            stack = [self._page(ref.root, f"bucket {_show(name)}")]
        while stack:
            start, end, flags, count, where = stack.pop()
            elements = start + _PAGE_HEADER.size
            if elements + count * _ELEMENT_SIZE > end:
                raise BoltFormatError(f"{where}: {count} elements do not fit in the page")
            if flags == _BRANCH_PAGE:
                if count == 0:
                    raise BoltFormatError(f"{where}: branch page with no elements")
                children_pages = []
                for index in range(count):
                    element = elements + index * _ELEMENT_SIZE
                    pos, ksize, pgid = _BRANCH_ELEMENT.unpack_from(data, element)
                    self._slice(element + pos, ksize, end, where, index)
                    children_pages.append(pgid)
                stack.extend(
                    self._page(pgid, f"{where} child {index}")
                    for index, pgid in reversed(list(enumerate(children_pages)))
                )
                continue
            for index in range(count):
                element = elements + index * _ELEMENT_SIZE
                element_flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(data, element)
                key = self._slice(element + pos, ksize, end, where, index)
                value_start = element + pos + ksize
                value = self._slice(value_start, vsize, end, where, index)
                if previous is not None and key <= previous:
                    raise BoltFormatError(
                        f"{where} element {index}: key {_show(key)} is out of order in bucket {_show(name)}"
                    )
                previous = key
                if element_flags == 0:
                    values[key] = value
                elif element_flags == _BUCKET_LEAF:
                    if vsize < _BUCKET_HEADER.size:
                        raise BoltFormatError(f"{where} element {index}: bucket {_show(key)} has a {vsize}-byte header")
                    child_root, child_sequence = _BUCKET_HEADER.unpack_from(data, value_start)
                    children[key] = _ChildRef(
                        child_root, child_sequence, value_start + _BUCKET_HEADER.size, value_start + vsize
                    )
                else:
                    raise BoltFormatError(f"{where} element {index}: unknown element flags 0x{element_flags:x}")
        return Bucket(self, values, children, ref.sequence)

    def _page(self, pgid: int, where: str) -> tuple[int, int, int, int, str]:
        """Bounds of page `pgid` and its header, after checking it may be part of a tree."""
        label = f"page {pgid}"
        if pgid < 2:
            raise BoltFormatError(f"{where}: points at meta page {pgid}")
        if pgid >= self._high_water:
            raise BoltFormatError(
                f"{where}: page {pgid} is out of range (the file has {self._high_water} pages in use)"
            )
        start = pgid * self.page_size
        page_id, flags, count, overflow = _PAGE_HEADER.unpack_from(self._data, start)
        if page_id != pgid:
            raise BoltFormatError(f"{label}: its header says it is page {page_id}")
        if flags not in (_BRANCH_PAGE, _LEAF_PAGE):
            raise BoltFormatError(f"{label}: flags 0x{flags:x}, expected a branch or leaf page ({where})")
        last = pgid + overflow
        if last >= self._high_water:
            raise BoltFormatError(f"{label}: {overflow} overflow pages run past the {self._high_water} pages in use")
        for covered in range(pgid, last + 1):
            if self._seen[covered]:
                raise BoltFormatError(
                    f"{label}: page {covered} is reached twice (a cycle, or pages shared between trees)"
                )
            self._seen[covered] = 1
        return start, start + (overflow + 1) * self.page_size, flags, count, label

    def _inline_page(self, name: bytes, start: int, end: int) -> tuple[int, int, int, int, str]:
        """Bounds of an inline bucket's page, which lives inside its parent's leaf value."""
        label = f"inline bucket {_show(name)}"
        if end - start < _PAGE_HEADER.size:
            raise BoltFormatError(f"{label}: {end - start} bytes, too short for a page header")
        _page_id, flags, count, _overflow = _PAGE_HEADER.unpack_from(self._data, start)
        if flags != _LEAF_PAGE:
            raise BoltFormatError(f"{label}: flags 0x{flags:x}, expected a leaf page")
        return start, end, flags, count, label

    def _slice(self, start: int, size: int, end: int, where: str, index: int) -> bytes:
        if start + size > end:
            raise BoltFormatError(
                f"{where} element {index}: {size} bytes at offset {start} run past the end of the page"
            )
        return self._data[start : start + size]


def _show(name: bytes) -> str:
    """A bucket name or key for a message: as text when it is printable ASCII."""
    text = name.decode("ascii", "replace")
    return repr(text) if text.isprintable() and "\ufffd" not in text else repr(name)


def open_file(path: str) -> BoltFile:
    """Read the bbolt file at `path` (plain read, no lock, never written).

    OSError (missing file, no permission) passes through unchanged: it is not a format
    problem. Damage raises BoltFormatError.
    """
    with open(path, "rb") as file:
        data = file.read()
    return BoltFile(data)


def read_bucket(path: str, bucket: bytes) -> dict[bytes, bytes]:
    """The plain key/value pairs of top-level bucket `bucket` (nested buckets are left out:
    use `open_file(path).bucket(...)` to see them)."""
    return open_file(path).bucket(bucket).values
