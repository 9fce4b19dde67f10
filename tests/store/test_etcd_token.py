"""The auth token shared by a host's plugin processes (store/etcd_token.py): reused while
etcd accepts it, replaced when it does not, and never read from a file that is not as
private as the password."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnipam.store.etcd_token import load_token, save_token, token_file
from cnipam.store.etcdv3 import EtcdClient
from tests.support.etcd import PASSWORD


class Counting(EtcdClient):
    """Counts the password checks it asks etcd for."""

    checks = 0

    def _authenticate(self, deadline: float) -> None:
        Counting.checks += 1
        super()._authenticate(deadline)


def client(endpoint: str, path: Path, password: str = PASSWORD) -> Counting:
    return Counting([endpoint], username="root", password=password, token_file=str(path))


def test_a_fresh_process_reuses_the_token_and_replaces_a_rejected_one(auth_etcd: str, tmp_path: Path) -> None:
    path = tmp_path / "lock" / "etcd-token"
    path.parent.mkdir(mode=0o700)
    Counting.checks = 0
    with client(auth_etcd, path) as first:
        first.put(b"k", b"v")
    assert Counting.checks == 1 and (os.stat(path).st_mode & 0o777) == 0o600
    with client(auth_etcd, path) as second:  # another process of the host: no password check
        assert second.range(b"k")[0][0].value == b"v"
    assert Counting.checks == 1
    save_token(str(path), PASSWORD, "forgotten.7")  # etcd restarted, or the token expired
    with client(auth_etcd, path) as third:
        assert third.range(b"k")[0][0].value == b"v"
    assert Counting.checks == 2 and load_token(str(path), PASSWORD) not in (None, "forgotten.7")


def test_a_token_file_that_is_not_private_or_not_of_this_password_is_ignored(tmp_path: Path) -> None:
    path = str(tmp_path / "etcd-token")
    save_token(path, PASSWORD, "tok-1")
    assert load_token(path, PASSWORD) == "tok-1"
    assert load_token(path, "a rotated password") is None
    os.chmod(path, 0o640)
    assert load_token(path, PASSWORD) is None
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, 4321, -1)
        assert load_token(path, PASSWORD) is None
        os.chown(path, 0, -1)
    link = str(tmp_path / "link")
    os.symlink(path, link)
    assert load_token(link, PASSWORD) is None
    Path(path).write_text("{not json")
    assert load_token(path, PASSWORD) is None


def test_stores_of_one_cluster_and_user_share_one_file(tmp_path: Path) -> None:
    one = token_file(str(tmp_path), ("http://a:2379", "http://b:2379"), "cnipam")
    assert one == token_file(str(tmp_path), ("http://a:2379", "http://b:2379"), "cnipam")
    assert one != token_file(str(tmp_path), ("http://a:2379", "http://b:2379"), "other")
    assert one != token_file(str(tmp_path), ("http://c:2379",), "cnipam")
    assert os.path.dirname(one) == str(tmp_path)


@pytest.mark.parametrize("unwritable", [True, False])
def test_saving_is_best_effort(tmp_path: Path, unwritable: bool) -> None:
    folder = tmp_path / ("missing" if unwritable else "here")
    if not unwritable:
        folder.mkdir()
    save_token(str(folder / "etcd-token"), PASSWORD, "tok")
    assert (load_token(str(folder / "etcd-token"), PASSWORD) == "tok") != unwritable
    assert not [name for name in os.listdir(tmp_path) if "etcd-token." in name]
