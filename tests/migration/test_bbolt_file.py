"""The read-only bbolt reader and the ecs-ipam interpretation of its `IPAM` bucket.

* Every fixture written by the real upstream ecs-ipam (tests/fixtures/ecs-ipam-boltdb,
  see its README.md) must read back exactly as its manifest says: leases, gateway markers,
  lastKnownIP/lastKnownIPv6 and key count; reading must leave the file byte-for-byte unchanged.
* Structures the fixtures do not contain (overflow pages, branch trees several levels deep,
  nested inline and paged buckets, two metas at different transactions) come from
  `build_db`, a minimal bbolt writer below. Its output was checked once against real
  bbolt (v1.3.6 reading it, and our reader reading files that bbolt wrote with the same
  structures), so these tests pin our reader to the real format, not to itself.
* Damaged files (truncated, zeroed or flipped metas, broken pages, garbage, random
  truncations and bit flips) must raise BoltFormatError and nothing else.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnipam.core.addresses import parse_ip
from cnipam.migration import bbolt_file
from cnipam.migration.bbolt_file import BoltFile, BoltFormatError, fnv1a_64, read_bucket
from cnipam.migration.ecs_boltdb import (
    GATEWAY_MARKERS,
    EcsLease,
    Gateway,
    interpret_bucket,
    interpret_file,
    read_ecs_boltdb,
)
from tests.support.fixture_files import FIXTURES as UPSTREAM_FIXTURES

FIXTURES = UPSTREAM_FIXTURES / "ecs-ipam-boltdb"
MANIFESTS = sorted(FIXTURES.glob("*.json"))
EXPECTED_FIXTURES = {"dualstack", "ipv4-basic", "ipv4-explicit", "large", "old-ipv4-only"}
SMALL = FIXTURES / "ipv4-explicit.db"  # 32 KiB, 6 pages in use, meta 0 current (txid 26), IPAM inline

PAGE_HEADER = struct.Struct("<QHHI")
META_BODY = struct.Struct("<IIIIQQQQQ")  # the checksummed part of a meta
BRANCH_ELEMENT = struct.Struct("<IIQ")
LEAF_ELEMENT = struct.Struct("<IIII")
BUCKET_HEADER = struct.Struct("<QQ")
BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
PS = 4096

Tree: TypeAlias = "dict[bytes, bytes | Tree]"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def index(payload: bytes, n: int = 1) -> bytes:
    """A value as libkv stores it: 8-byte little-endian index, then the payload."""
    return n.to_bytes(8, "little") + payload


# --- a minimal bbolt writer ------------------------------------------------------------


def page_bytes(
    pgid: int, flags: int, entries: list[tuple[int, bytes, bytes]], page_size: int = PS
) -> tuple[bytes, int]:
    """One page (header, elements, then keys and values); entries are (leaf flags or child pgid, key, value)."""
    head = PAGE_HEADER.size + 16 * len(entries)
    elements, blobs = b"", b""
    for i, (extra, key, value) in enumerate(entries):
        pos = head + len(blobs) - (PAGE_HEADER.size + 16 * i)
        if flags == BRANCH:
            elements += BRANCH_ELEMENT.pack(pos, len(key), extra)
        else:
            elements += LEAF_ELEMENT.pack(extra, pos, len(key), len(value))
        blobs += key + value
    size = head + len(blobs)
    overflow = max(0, -(-size // page_size) - 1)
    return PAGE_HEADER.pack(pgid, flags, len(entries), overflow) + elements + blobs, overflow


class Writer:
    """Lays out trees bottom-up from page 3 (0 and 1: metas, 2: an empty freelist)."""

    def __init__(self, per_leaf: int, per_branch: int, page_size: int = PS) -> None:
        self.per_leaf, self.per_branch, self.page_size = per_leaf, per_branch, page_size
        self.pages: dict[int, bytes] = {}
        self.next = 3

    def write(self, flags: int, entries: list[tuple[int, bytes, bytes]]) -> int:
        pgid = self.next
        self.pages[pgid], overflow = page_bytes(pgid, flags, entries, self.page_size)
        self.next += 1 + overflow
        return pgid

    def tree(self, entries: list[tuple[int, bytes, bytes]]) -> int:
        chunks = [entries[i : i + self.per_leaf] for i in range(0, len(entries), self.per_leaf)] or [[]]
        level = [(chunk[0][1] if chunk else b"", self.write(LEAF, chunk)) for chunk in chunks]
        while len(level) > 1:
            groups = [level[i : i + self.per_branch] for i in range(0, len(level), self.per_branch)]
            level = [(group[0][0], self.write(BRANCH, [(pgid, key, b"") for key, pgid in group])) for group in groups]
        return level[0][1]

    def entries(self, tree: Tree) -> list[tuple[int, bytes, bytes]]:
        return [
            (1, key, self.bucket(value)) if isinstance(value, dict) else (0, key, value)
            for key, value in sorted(tree.items())
        ]

    def bucket(self, tree: Tree) -> bytes:
        """A bucket header; inline (root 0, page in the value) when bbolt would inline it."""
        entries = self.entries(tree)
        inline_size = PAGE_HEADER.size + sum(16 + len(key) + len(value) for _, key, value in entries)
        if all(flag == 0 for flag, _, _ in entries) and inline_size <= self.page_size // 4:
            return BUCKET_HEADER.pack(0, 7) + page_bytes(0, LEAF, entries, self.page_size)[0]
        return BUCKET_HEADER.pack(self.tree(entries), 7)


def build_db(
    tree: Tree, previous: Tree | None = None, per_leaf: int = 64, per_branch: int = 64, page_size: int = PS
) -> bytes:
    """A bbolt file holding `tree` (top level: buckets only) at txid 10 in meta page 0;
    meta page 1 holds `previous` (or the same tree) at txid 9."""
    writer = Writer(per_leaf, per_branch, page_size)
    root = writer.tree(writer.entries(tree))
    old_root = root if previous is None else writer.tree(writer.entries(previous))
    high_water = writer.next
    data = bytearray(high_water * page_size)
    for pgid, page in writer.pages.items():
        data[pgid * page_size : pgid * page_size + len(page)] = page
    data[2 * page_size : 2 * page_size + 16] = PAGE_HEADER.pack(2, FREELIST, 0, 0)
    for slot, (txid, meta_root) in enumerate([(10, root), (9, old_root)]):
        body = META_BODY.pack(0xED0CDAED, 2, page_size, 0, meta_root, 0, 2, high_water, txid)
        data[slot * page_size : slot * page_size + 80] = (
            PAGE_HEADER.pack(slot, META, 0, 0) + body + struct.pack("<Q", fnv1a_64(body))
        )
    return bytes(data)


def root_page(data: bytes, slot: int = 0) -> int:
    root: int = struct.unpack_from("<Q", data, slot * PS + 16 + 16)[0]
    return root


def patch(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw) :]


def walk(file: BoltFile) -> int:
    """Read every bucket in the file; return how many values it holds."""

    def count(bucket: bbolt_file.Bucket) -> int:
        return len(bucket.values) + sum(count(bucket.bucket(name)) for name in bucket.bucket_names())

    return count(file.root())


def must_be_readable_or_format_error(data: bytes) -> None:
    """Either the file reads (damage that bbolt itself cannot detect, e.g. in a value) or
    the reader says BoltFormatError; any other exception fails the test."""
    try:
        file = BoltFile(data)
        walk(file)
        interpret_file(file)
    except BoltFormatError as error:
        assert str(error)


# --- the upstream fixtures --------------------------------------------------------------


def test_all_fixtures_are_present() -> None:
    assert {path.stem for path in MANIFESTS} == EXPECTED_FIXTURES


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda path: path.stem)
def test_fixture_matches_its_manifest(manifest_path: Path, tmp_path: Path) -> None:
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    source = FIXTURES / manifest["db_file"]
    assert sha256(source) == manifest["db_sha256"]
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)

    store = read_ecs_boltdb(str(copy))

    assert [(lease.text, lease.family, lease.id) for lease in store.leases] == [
        (lease["address"], lease["family"], lease["id"]) for lease in manifest["leases"]
    ]
    assert [EcsLease(lease.family, parse_ip(lease.text)[1], lease.id) for lease in store.leases] == store.leases
    assert [(gw.text, gw.family, GATEWAY_MARKERS[gw.family]) for gw in store.gateways] == [
        (gw["address"], gw["family"], gw["value"]) for gw in manifest["gateways"]
    ]
    assert store.last_known_ip == (None if manifest["lastKnownIP"] is None else parse_ip(manifest["lastKnownIP"])[1])
    assert store.last_known_ipv6 == (
        None if manifest["lastKnownIPv6"] is None else parse_ip(manifest["lastKnownIPv6"])[1]
    )
    assert len(store.leases) == manifest["lease_count"]
    assert store.key_count == manifest["key_count"]
    assert store.unrecognised == []
    assert store.warnings == []
    raw = read_bucket(str(copy), b"IPAM")
    assert len(raw) == manifest["key_count"]
    assert all(len(value) >= 8 for value in raw.values())
    assert sha256(copy) == manifest["db_sha256"]  # reading wrote nothing
    assert sha256(source) == manifest["db_sha256"]


def test_old_ipv4_only_file_has_no_ipv6_entries(tmp_path: Path) -> None:
    copy = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / "old-ipv4-only.db", copy)
    store = read_ecs_boltdb(str(copy))
    assert {lease.family for lease in store.leases} == {4}
    assert store.last_known_ipv6 is None
    assert not any(key.startswith(b"6") for key in read_bucket(str(copy), b"IPAM"))


def test_reader_opens_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "small.db"
    shutil.copyfile(SMALL, copy)
    copy.chmod(0o444)
    modes: list[str] = []
    real_open = builtins.open

    def spy(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        modes.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    read_bucket(str(copy), b"IPAM")
    assert modes == ["rb"]


def test_missing_bucket_and_missing_file(tmp_path: Path) -> None:
    copy = tmp_path / "small.db"
    shutil.copyfile(SMALL, copy)
    with pytest.raises(BoltFormatError, match=r"^no bucket 'NOPE' \(buckets here: 'IPAM'\)$"):
        read_bucket(str(copy), b"NOPE")
    other = tmp_path / "other.db"
    other.write_bytes(build_db({b"NOT-IPAM": {b"k": b"v"}}))
    with pytest.raises(BoltFormatError, match=r"^no bucket 'IPAM'"):
        read_ecs_boltdb(str(other))
    with pytest.raises(FileNotFoundError):
        read_bucket(str(tmp_path / "absent.db"), b"IPAM")
    assert not (tmp_path / "absent.db").exists()


# --- structures beyond the fixtures ---------------------------------------------------


def test_overflow_pages_deep_branches_and_nested_buckets() -> None:
    many: Tree = {f"key-{i:05d}".encode(): f"value-{i}".encode() for i in range(300)}
    tree: Tree = {
        b"IPAM": {
            **many,
            b"big": b"x" * 10_000,  # a leaf spanning 3 pages
            b"empty": b"",
            b"inline": {b"a": b"1", b"b": b"2"},
            b"paged": {**{f"n{i:03d}".encode(): b"z" * 30 for i in range(50)}, b"deeper": {b"d": b"e"}},
        },
        b"OTHER": {},
    }
    data = build_db(tree, per_leaf=4, per_branch=3)  # 300+ keys: four levels of branch pages
    file = BoltFile(data)
    assert file.root().bucket_names() == [b"IPAM", b"OTHER"]
    ipam = file.bucket(b"IPAM")
    assert ipam.values == {**many, b"big": b"x" * 10_000, b"empty": b""}
    assert ipam.bucket_names() == [b"inline", b"paged"]
    assert file.bucket(b"IPAM", b"inline").values == {b"a": b"1", b"b": b"2"}
    assert file.bucket(b"IPAM", b"inline").sequence == 7
    assert len(file.bucket(b"IPAM", b"paged").values) == 50
    assert file.bucket(b"IPAM", b"paged", b"deeper").values == {b"d": b"e"}
    assert file.bucket(b"OTHER").values == {}
    with pytest.raises(BoltFormatError, match="it is a plain value"):
        file.bucket(b"IPAM", b"big")


def test_reads_the_meta_with_the_higher_txid_and_falls_back_like_bbolt() -> None:
    new: Tree = {b"IPAM": {b"10.0.0.2": index(b"new")}}
    old: Tree = {b"IPAM": {b"10.0.0.2": index(b"old")}}
    data = build_db(new, previous=old)
    file = BoltFile(data)
    assert (file.txid, file.warnings) == (10, [])
    assert file.bucket(b"IPAM").values[b"10.0.0.2"] == index(b"new")

    torn = patch(data, 16 + 56, bytes([data[16 + 56] ^ 0xFF]))  # meta 0's checksum
    file = BoltFile(torn)
    assert file.txid == 9
    assert file.bucket(b"IPAM").values[b"10.0.0.2"] == index(b"old")
    assert len(file.warnings) == 1 and "meta page 0 is invalid (bad checksum" in file.warnings[0]
    assert file.warnings == read_ecs_store_warnings(torn)

    swapped = patch(data, PS + 16, bytes(64))  # meta 1 zeroed: meta 0 still current
    assert BoltFile(swapped).txid == 10
    assert "meta page 1 is invalid (bad magic" in BoltFile(swapped).warnings[0]


def read_ecs_store_warnings(data: bytes) -> list[str]:
    return interpret_file(BoltFile(data)).warnings


def test_other_page_sizes() -> None:
    for page_size in (1024, 16384):
        data = build_db({b"IPAM": {b"k": b"v" * 3000}}, page_size=page_size)
        file = BoltFile(data)
        assert file.page_size == page_size
        assert file.bucket(b"IPAM").values == {b"k": b"v" * 3000}
        # meta 0 unusable: meta 1 is found at its own page size
        assert BoltFile(patch(data, 0, bytes(80))).page_size == page_size


# --- what ecs-ipam's entries mean -------------------------------------------------------


def test_interpretation_of_every_kind_of_entry() -> None:
    store = interpret_bucket(
        {
            b"10.0.0.2": index(b"task-a"),
            b"10.0.0.3": index(b""),
            b"10.0.0.1": index(b"GateWay"),
            b"62001:db8::1": index(b"GateWayV6"),
            b"62001:db8::2": index(b"task-a"),
            b"lastKnownIP": index(b"10.0.0.3"),
            b"lastKnownIPv6": index(b"2001:db8::2"),
            b"lastKnownIPv4": index(b"10.0.0.9"),
            b"10.0.0.010": index(b"x"),
            b"62001:DB8::9": index(b"x"),
            b"2001:db8::9": index(b"x"),
            b"6::ffff:10.0.0.1": index(b"x"),
            b"610.0.0.1": index(b"x"),
            b"10.0.0.4": index(b"GateWayV6"),
            b"10.0.0.5": b"short",
            b"10.0.0.6": index(b"\xff\xfe"),
            b"lastKnownIPv6 ": index(b"x"),
            b"hello": index(b"x"),
        }
    )
    assert store.leases == [
        EcsLease(4, 0x0A000002, "task-a"),
        EcsLease(4, 0x0A000003, ""),
        EcsLease(6, parse_ip("2001:db8::2")[1], "task-a"),
    ]
    assert store.gateways == [Gateway(4, 0x0A000001), Gateway(6, parse_ip("2001:db8::1")[1])]
    assert store.last_known_ip == 0x0A000003
    assert store.last_known_ipv6 == parse_ip("2001:db8::2")[1]
    reasons = dict(store.unrecognised)
    assert set(reasons) == {
        b"lastKnownIPv4",
        b"10.0.0.010",
        b"62001:DB8::9",
        b"2001:db8::9",
        b"6::ffff:10.0.0.1",
        b"610.0.0.1",
        b"10.0.0.4",
        b"10.0.0.5",
        b"10.0.0.6",
        b"lastKnownIPv6 ",
        b"hello",
    }
    assert "never used" in reasons[b"lastKnownIPv4"]
    assert "without ecs-ipam's '6' prefix" in reasons[b"2001:db8::9"]
    assert "gateway marker 'GateWayV6' on an IPv4 key" in reasons[b"10.0.0.4"]
    assert "shorter than libkv's 8-byte index" in reasons[b"10.0.0.5"]
    assert store.key_count == 18


def test_nested_and_foreign_buckets_are_reported_not_dropped() -> None:
    data = build_db({b"IPAM": {b"10.0.0.2": index(b"a"), b"sub": {b"k": b"v"}}, b"EXTRA": {b"k": b"v"}})
    store = interpret_file(BoltFile(data))
    assert store.leases == [EcsLease(4, 0x0A000002, "a")]
    assert [key for key, _ in store.unrecognised] == [b"sub", b"EXTRA"]
    assert store.key_count == 2


# --- damaged files --------------------------------------------------------------------


def small() -> bytes:
    return SMALL.read_bytes()


@pytest.mark.parametrize("length", [0, 1, 15, 16, 79, 80, 4095, 4096, 4096 + 80, 8191, 8192, 12288, 16384, 24575])
def test_truncated_small_fixture(length: int, tmp_path: Path) -> None:
    path = tmp_path / "cut.db"
    path.write_bytes(small()[:length])
    with pytest.raises(BoltFormatError, match=r"truncated|empty file"):
        read_bucket(str(path), b"IPAM")


@pytest.mark.parametrize("pages", [2, 3, 10, 30, 47])
def test_truncated_large_fixture(pages: int) -> None:
    data = (FIXTURES / "large.db").read_bytes()
    with pytest.raises(BoltFormatError, match=r"^truncated file: .* 48 pages of 4096 bytes"):
        BoltFile(data[: pages * PS])


def test_unused_tail_may_be_cut() -> None:
    """bbolt grows files ahead of use; only the pages below the high-water mark matter."""
    assert len(BoltFile(small()[: 6 * PS]).bucket(b"IPAM").values) == 12


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: patch(d, 0, bytes(2 * PS)),
            r"^not a bbolt database: meta page 0: bad magic 0x00000000 .*meta page 1: bad magic",
        ),
        (
            lambda d: patch(patch(d, 16 + 56, b"\x00"), PS + 16 + 56, b"\x00"),
            r"meta page 0: bad checksum .*meta page 1: bad checksum",
        ),
        (lambda d: patch(patch(d, 20, b"\x03"), PS + 20, b"\x03"), r"meta page 0: unsupported version 3"),
        (lambda d: b"SQLite format 3\x00" + bytes(32768), r"^not a bbolt database"),
    ],
    ids=["zeroed metas", "flipped checksums", "version", "sqlite"],
)
def test_bad_meta_pages(damage: Any, message: str) -> None:
    with pytest.raises(BoltFormatError, match=message):
        BoltFile(damage(small()))


def branchy() -> bytes:
    """A file whose IPAM bucket has a two-level tree: root branch -> branches -> leaves."""
    return build_db(
        {b"IPAM": {f"k{i:03d}".encode(): b"v" * 20 for i in range(40)}}, per_leaf=4, per_branch=4
    )  # too big to inline


def ipam_root(data: bytes) -> int:
    """The IPAM bucket's root page (the root bucket is one leaf holding IPAM's header)."""
    root = root_page(data)
    _flags, pos, ksize, _vsize = LEAF_ELEMENT.unpack_from(data, root * PS + 16)
    value: int = struct.unpack_from("<Q", data, root * PS + 16 + pos + ksize)[0]
    return value


def branch_child_offset(data: bytes, pgid: int, element: int = 0) -> int:
    return pgid * PS + 16 + element * 16 + 8


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d, r: patch(d, branch_child_offset(d, r, 1), struct.pack("<Q", r)), r"page \d+ is reached twice"),
        (lambda d, r: patch(d, branch_child_offset(d, r, 2), struct.pack("<Q", 1)), r"points at meta page 1"),
        (
            lambda d, r: patch(d, branch_child_offset(d, r, 2), struct.pack("<Q", 10**6)),
            r"page 1000000 is out of range",
        ),
        (
            lambda d, r: patch(d, branch_child_offset(d, r, 2), struct.pack("<Q", 2)),
            r"page 2: flags 0x10, expected a branch or leaf",
        ),
        (lambda d, r: patch(d, r * PS, struct.pack("<Q", r + 1)), r"its header says it is page"),
        (lambda d, r: patch(d, r * PS + 12, struct.pack("<I", 99)), r"99 overflow pages run past"),
        (lambda d, r: patch(d, r * PS + 10, struct.pack("<H", 4000)), r"4000 elements do not fit"),
        (lambda d, r: patch(d, r * PS + 10, struct.pack("<H", 0)), r"branch page with no elements"),
        (lambda d, r: patch(d, r * PS + 16 + 4, struct.pack("<I", 5000)), r"run past the end of the page"),
    ],
    ids=[
        "cycle",
        "meta page",
        "out of range",
        "freelist page",
        "page id",
        "overflow",
        "count",
        "empty branch",
        "key bounds",
    ],
)
def test_broken_tree(damage: Any, message: str) -> None:
    data = branchy()
    assert len(BoltFile(data).bucket(b"IPAM").values) == 40
    assert PAGE_HEADER.unpack_from(data, ipam_root(data) * PS)[1:3] == (BRANCH, 3)
    with pytest.raises(BoltFormatError, match=message):
        BoltFile(damage(data, ipam_root(data))).bucket(b"IPAM")


def test_broken_inline_bucket() -> None:
    data = build_db({b"IPAM": {b"a" * 20: b"1", b"b" * 20: b"2"}})
    assert BoltFile(data).bucket(b"IPAM").values == {b"a" * 20: b"1", b"b" * 20: b"2"}
    inline_page = data.index(BUCKET_HEADER.pack(0, 7) + PAGE_HEADER.pack(0, LEAF, 2, 0)) + BUCKET_HEADER.size
    with pytest.raises(BoltFormatError, match=r"element 1: key 'b+' is out of order in bucket 'IPAM'"):
        BoltFile(patch(data, data.index(b"a" * 20), b"c" * 20)).bucket(b"IPAM")
    with pytest.raises(BoltFormatError, match=r"inline bucket 'IPAM' element 0: unknown element flags 0x4"):
        BoltFile(patch(data, inline_page + 16, struct.pack("<I", 4))).bucket(b"IPAM")
    with pytest.raises(BoltFormatError, match=r"inline bucket 'IPAM': flags 0x1, expected a leaf"):
        BoltFile(patch(data, inline_page + 8, struct.pack("<H", BRANCH))).bucket(b"IPAM")
    with pytest.raises(BoltFormatError, match=r"bucket 'IPAM' has a 3-byte header"):
        root_leaf = root_page(data) * PS + 16  # IPAM's element in the root bucket: vsize at +12
        BoltFile(patch(data, root_leaf + 12, struct.pack("<I", 3))).bucket(b"IPAM")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=32768))
def test_random_truncation(length: int) -> None:
    data = small()[:length]
    if length >= 6 * PS:
        assert len(BoltFile(data).bucket(b"IPAM").values) == 12
    else:
        with pytest.raises(BoltFormatError):
            BoltFile(data).bucket(b"IPAM")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=6 * PS - 1), st.integers(min_value=0, max_value=7)),
        min_size=1,
        max_size=4,
    )
)
def test_random_bit_flips(flips: list[tuple[int, int]]) -> None:
    data = bytearray(small())
    for offset, bit in flips:
        data[offset] ^= 1 << bit
    must_be_readable_or_format_error(bytes(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=0, max_value=PS - 8),
    st.binary(min_size=8, max_size=8),
)
def test_random_overwrites_in_a_deep_tree(page: int, offset: int, junk: bytes) -> None:
    data = branchy()
    must_be_readable_or_format_error(patch(data, (page % (len(data) // PS)) * PS + offset, junk))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=9000))
def test_random_garbage(data: bytes) -> None:
    with pytest.raises(BoltFormatError):
        BoltFile(data).bucket(b"IPAM")
