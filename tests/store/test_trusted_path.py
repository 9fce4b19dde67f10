"""The store's path never follows another user's link (docs/security.md,
fix 12): trusted_path and the engines that use it, on real folders and links that belong
to another user (uid 65534), made as root.

What another user could plant is planted: links named like the store, its lock and its
folders, pointing where root's files live (a folder standing in for /etc); the store's
folder owned by that user (who could move the store away); folders writable by others,
with and without the sticky bit. Each is refused with code 5 naming the component, and
nothing is created where the link points.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnipam.core.errors import StoreIOError
from cnipam.plugin import cni_code
from cnipam.store.etcd import EtcdStore
from cnipam.store.opening import open_store
from cnipam.store.settings import EtcdSettings, StoreSettings
from cnipam.store.sqlite import SQLiteStore
from cnipam.store.trusted_path import MAX_LINKS, UntrustedPath, trusted_path

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another user")


def theirs(path: Path) -> Path:
    """Hand `path` (a link itself, not what it names) to uid 65534."""
    os.lchown(path, NOBODY, NOBODY)
    return path


def their_link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return theirs(link)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """Where root's own files live, as /etc does."""
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o755)
    return folder


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A folder like /tmp: everyone may write, the sticky bit keeps them from others' entries."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def opened(path: Path | str, shared_folders: bool = False) -> None:
    SQLiteStore(str(path), 1.0, shared_folders=shared_folders).close()


# -- the scenario --------------------------------------------------------------------


@pytest.mark.parametrize("shared_folders", [False, True], ids=["default", "opted-in"])
def test_links_planted_as_the_store_and_its_lock_are_not_followed(
    shared: Path, etc: Path, shared_folders: bool
) -> None:
    """A dataDir in /tmp: the user plants cnipam.db and cnipam.db.lock as links into /etc.
    Their link is never followed, even where the operator accepts shared folders: root
    creates nothing in /etc."""
    their_link(shared / "cnipam.db", etc / "nologin")
    their_link(shared / "cnipam.db.lock", etc / "lock")
    with pytest.raises(UntrustedPath) as refused:
        opened(shared / "cnipam.db", shared_folders)
    assert cni_code(refused.value) == 5
    assert f"{shared / 'cnipam.db'} is a symbolic link owned by uid {NOBODY}: not followed" == refused.value.message
    assert list(etc.iterdir()) == []


@pytest.mark.parametrize("shared_folders", [False, True], ids=["default", "opted-in"])
def test_a_linked_folder_on_the_way_is_not_followed(shared: Path, etc: Path, shared_folders: bool) -> None:
    """fs.protected_symlinks guards the last component only: a link as a folder of the path
    would make root create folders (and the store) in /etc."""
    their_link(shared / "cni", etc)
    with pytest.raises(UntrustedPath, match=f"{shared / 'cni'} is a symbolic link owned by uid {NOBODY}"):
        opened(shared / "cni" / "net" / "cnipam.db", shared_folders)
    assert list(etc.iterdir()) == []


def test_a_store_folder_another_user_owns_is_refused(tmp_path: Path) -> None:
    """Its owner could move the store away, and the next container would get an address
    that is already held."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    theirs(folder)
    with pytest.raises(UntrustedPath, match=f"{folder} belongs to uid {NOBODY}"):
        opened(folder / "cnipam.db")
    assert list(folder.iterdir()) == []
    opened(folder / "cnipam.db", shared_folders=True)  # the operator's choice
    assert (folder / "cnipam.db").exists()


# -- folders ---------------------------------------------------------------------------------


def test_a_sticky_folder_may_be_on_the_way_but_may_not_hold_the_store(shared: Path) -> None:
    """/tmp/cnipam/cnipam.db is fine once root owns /tmp/cnipam; /tmp/cnipam.db is not,
    since others can create its -wal, -shm and .lock first."""
    opened(shared / "cnipam" / "cnipam.db")
    assert (shared / "cnipam").stat().st_mode & 0o7777 == 0o750
    with pytest.raises(UntrustedPath, match="holds the store"):
        opened(shared / "cnipam.db")
    assert not (shared / "cnipam.db").exists()


@pytest.mark.parametrize("mode", [0o777, 0o775], ids=["others", "group"])
def test_a_folder_others_may_write_without_the_sticky_bit_is_refused_on_the_way(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chown(folder, 0, NOBODY)
    folder.chmod(mode)
    with pytest.raises(UntrustedPath, match=f"{folder} is writable by .* and it is not sticky"):
        opened(folder / "sub" / "cnipam.db")
    assert not (folder / "sub").exists()


def test_a_folder_writable_by_roots_group_is_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "wheel"
    folder.mkdir()
    os.chown(folder, 0, 0)
    folder.chmod(0o775)
    opened(folder / "cnipam.db")


def test_a_folder_another_user_made_first_is_looked_at_like_any_other(shared: Path) -> None:
    """The folder the store needs did not exist; another user made it before root did."""
    early = shared / "cnipam"
    early.mkdir(mode=0o755)
    theirs(early)
    with pytest.raises(UntrustedPath, match=f"{early} belongs to uid {NOBODY}"):
        opened(early / "net" / "cnipam.db")
    assert list(early.iterdir()) == []


# -- links -----------------------------------------------------------------------------------


def test_roots_own_links_are_followed_to_the_real_file(tmp_path: Path) -> None:
    """/var/run -> /run: a link root made is as trustworthy as the folder it sits in; the
    engine opens the real path, so the file is held once however it is spelled."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "run").symlink_to("real")
    (real / "store.db").touch(mode=0o600)
    (real / "alias.db").symlink_to("store.db")
    assert trusted_path(str(tmp_path / "run" / "alias.db"), create=False) == str(real / "store.db")
    store = open_store(StoreSettings(str(tmp_path / "run" / "alias.db"), 1.0))
    try:
        assert store.leases() == []
    finally:
        store.close()
    assert sorted(path.name for path in real.iterdir()) == ["alias.db", "store.db", "store.db.lock"]


def test_relative_paths_and_dot_dot_resolve_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    assert trusted_path("b/../b/./x.db", create=False) == str(tmp_path / "a" / "b" / "x.db")
    assert trusted_path("new/x.db", create=True) == str(tmp_path / "a" / "new" / "x.db")
    assert (tmp_path / "a" / "new").is_dir()


def test_a_path_that_names_no_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(StoreIOError, match="names a folder"):
        trusted_path(str(tmp_path / "a") + "/..", create=False)
    (tmp_path / "plain").touch()
    with pytest.raises(StoreIOError, match="is not a folder"):
        trusted_path(str(tmp_path / "plain" / "x.db"), create=True)


def test_a_loop_of_links_ends(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(StoreIOError, match="too many levels of symbolic links"):
        trusted_path(str(tmp_path / "a" / "x.db"), create=True)
    chain = tmp_path / "chain"
    chain.mkdir()
    for step in range(MAX_LINKS):
        (chain / f"l{step}").symlink_to(f"l{step + 1}")
    (chain / f"l{MAX_LINKS}").mkdir()
    assert trusted_path(str(chain / "l0" / "x.db"), create=False) == str(chain / f"l{MAX_LINKS}" / "x.db")


@pytest.mark.parametrize("suffix", ["-wal", "-shm", ".lock"])
def test_a_link_beside_the_store_is_refused_by_name(tmp_path: Path, etc: Path, suffix: str) -> None:
    """Even root's own: SQLite would only say "unable to open database file"."""
    (tmp_path / f"cnipam.db{suffix}").symlink_to(etc / "target")
    with pytest.raises(UntrustedPath, match=f"cnipam.db{suffix} is a symbolic link"):
        opened(tmp_path / "cnipam.db")
    assert list(etc.iterdir()) == []


def test_a_fifo_as_the_store_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "cnipam.db")
    with pytest.raises(StoreIOError, match="is not a regular file"):
        opened(tmp_path / "cnipam.db")


# -- etcd's lock folder ----------------------------------------------------------------------


def test_etcd_lock_dir_through_another_users_link_is_refused(shared: Path, etc: Path) -> None:
    """The lock is opened before etcd is asked anything, so no server is needed."""
    their_link(shared / "cnipam", etc)
    unused = "http://127.0.0.1:9"
    settings = StoreSettings("unused.db", 1.0, "test", EtcdSettings((unused,), lock_dir=str(shared / "cnipam")))
    with pytest.raises(UntrustedPath, match=f"{shared / 'cnipam'} is a symbolic link owned by uid {NOBODY}"):
        open_store(settings)
    assert list(etc.iterdir()) == []
    os.unlink(shared / "cnipam")
    store = open_store(settings)  # root's own folder there: the lock is made in it
    assert isinstance(store, EtcdStore)
    store.close()
    assert (shared / "cnipam" / "etcd.lock").exists()
