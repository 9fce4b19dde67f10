"""The security pass (docs/security.md): file and socket modes, what a config value may
name, request size limits, and etcd credentials kept out of every message. Each test
backs one finding of that document."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnipam.core.errors import InvalidConfig, StoreIOError
from cnipam.core.ipam_config import MAX_RANGES, MAX_REQUESTED
from cnipam.core.json_codec import MAX_INPUT
from cnipam.docker.settings import load
from cnipam.store.etcd_keys import escape, unescape
from cnipam.store.etcdv3 import EtcdClient
from cnipam.testing.etcd_server import free_port
from tests.support.etcd import PASSWORD, need_etcd
from tests.support.plugin_calls import CALL_TIMEOUT, RunPlugin, installed
from tests.support.store_files import snapshot

V4 = {"type": "cnipam", "ipv4-subnet": "10.0.0.0/24"}


def config(ipam: dict[str, Any], name: str = "net1") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "ipam": ipam}


# -- modes --------------------------------------------------------------------------------


def test_store_files_stay_private_even_under_umask_0(plugin_exe: str, tmp_path: Path) -> None:
    """umask 0 is what a careless service manager hands down; the store must not follow it."""
    db = tmp_path / "x" / "y" / "ipam.db"
    env = {
        "PATH": "/usr/bin:/bin",
        "CNI_COMMAND": "ADD",
        "CNI_IFNAME": "eth0",
        "CNI_CONTAINERID": "c1",
        "IPAM_DB_PATH": str(db),
    }
    proc = subprocess.run(
        [plugin_exe], input=json.dumps(config(V4)).encode(), env=env, capture_output=True, umask=0, timeout=30
    )
    assert proc.returncode == 0, proc.stdout
    for folder in (tmp_path / "x", tmp_path / "x" / "y"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    for path in db.parent.iterdir():  # the file, its lock, and SQLite's -wal/-shm when present
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_etcd_lock_folder_and_file_are_private(run_plugin: RunPlugin, tmp_path: Path) -> None:
    lock_dir = tmp_path / "run" / "cnipam"
    store = {"type": "etcd", "endpoints": [f"http://127.0.0.1:{free_port()}"], "lockDir": str(lock_dir)}
    run_plugin("ADD", config({**V4, "store": store}), {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "100ms"})
    assert stat.S_IMODE(lock_dir.stat().st_mode) & 0o027 == 0
    assert stat.S_IMODE((lock_dir / "etcd.lock").stat().st_mode) == 0o600


def test_docker_tcp_is_off_by_default_and_loopback_only_unless_public() -> None:
    assert load([], {}).address == ""  # the UNIX socket (0660: test_docker_server)
    for address in ("0.0.0.0:9000", "[::]:9000", "10.1.2.3:9000", "example.com:9000"):
        with pytest.raises(InvalidConfig, match="loopback"):
            load(["-address", address], {})
        with pytest.raises(InvalidConfig, match="loopback"):
            load([], {"GIPAM_ADDRESS": address})
        assert load(["-address", address, "--public"], {}).public
    assert load(["-address", "127.0.0.1:9000"], {}).address == "127.0.0.1:9000"


# -- config values as paths ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc", "..", "a/b", "/etc/passwd", "net\x00"])
def test_a_path_like_network_name_is_refused(run_plugin: RunPlugin, db_path: Path, name: str) -> None:
    answer = run_plugin("ADD", config(V4, name), {"CNI_CONTAINERID": "c1"})
    assert (answer.code, answer.out["code"]) == (1, 7), answer.out
    assert snapshot(db_path) is None


def test_the_network_name_never_becomes_a_path_in_data_dir(run_plugin: RunPlugin, tmp_path: Path) -> None:
    """host-local keeps `<dataDir>/<network name>/`; cnipam keeps one file for every network."""
    data_dir = tmp_path / "networks"
    for name in ("net1", "net.2", "x-3"):
        ipam = {"type": "cnipam", "subnet": f"10.{len(name)}.{name[-1]}.0/24", "dataDir": str(data_dir)}
        assert run_plugin("ADD", config(ipam, name), {"CNI_CONTAINERID": "c1"}).code == 0
    assert {path.name for path in data_dir.iterdir()} <= {
        "cnipam.db",
        "cnipam.db-shm",
        "cnipam.db-wal",
        "cnipam.db.lock",
        "cnipam.db.reserve",
    }


# -- the store's path: no link of another user is followed (store/trusted_path.py) ---------

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's links")


def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A /tmp-like folder (1777) where uid 65534 planted the store and its lock as links
    into a folder standing in for /etc, and that folder."""
    etc, shared = tmp_path / "etc", tmp_path / "shared"
    etc.mkdir()
    shared.mkdir()
    shared.chmod(0o1777)
    for name, target in (("cnipam.db", "nologin"), ("cnipam.db.lock", "lock")):
        (shared / name).symlink_to(etc / target)
        os.lchown(shared / name, NOBODY, NOBODY)
    return shared, etc


@needs_root
@pytest.mark.parametrize("opt_in", [None, "1"], ids=["default", "shared-folders-accepted"])
def test_the_plugin_never_follows_a_link_planted_as_its_store(
    run_plugin: RunPlugin, tmp_path: Path, opt_in: str | None
) -> None:
    """The issue's probe: a dataDir in /tmp and two planted links made root create
    /etc/nologin and the lock in /etc. Now: code 5 naming the link, nothing in /etc."""
    shared, etc = planted(tmp_path)
    ipam = {"type": "cnipam", "subnet": "10.0.0.0/24", "dataDir": str(shared)}
    answer = run_plugin("ADD", config(ipam), {"CNI_CONTAINERID": "c1", "CNIPAM_ALLOW_SHARED_FOLDERS": opt_in})
    assert (answer.code, answer.out["code"]) == (1, 5), answer.out
    assert f"{shared / 'cnipam.db'} is a symbolic link owned by uid {NOBODY}: not followed" in answer.out["msg"]
    assert list(etc.iterdir()) == []


@needs_root
def test_a_shared_folder_holds_the_store_only_when_the_operator_says_so(run_plugin: RunPlugin, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    ipam = {"type": "cnipam", "subnet": "10.0.0.0/24", "dataDir": str(shared)}
    refused = run_plugin("ADD", config(ipam), {"CNI_CONTAINERID": "c1"})
    assert (refused.code, refused.out["code"]) == (1, 5), refused.out
    assert (
        f"{shared} is writable by others" in refused.out["msg"]
        and "CNIPAM_ALLOW_SHARED_FOLDERS=1" in refused.out["msg"]
    )
    assert list(shared.iterdir()) == []
    accepted = run_plugin("ADD", config(ipam), {"CNI_CONTAINERID": "c1", "CNIPAM_ALLOW_SHARED_FOLDERS": "1"})
    assert accepted.code == 0, accepted.out
    wrong = run_plugin("ADD", config(ipam), {"CNI_CONTAINERID": "c1", "CNIPAM_ALLOW_SHARED_FOLDERS": "yes"})
    assert (wrong.code, wrong.out["code"]) == (1, 4), wrong.out
    assert "CNIPAM_ALLOW_SHARED_FOLDERS='yes'" in wrong.out["msg"]


@needs_root
def test_cnipamctl_never_follows_a_link_planted_as_the_store(tmp_path: Path) -> None:
    shared, etc = planted(tmp_path)
    (tmp_path / "empty.json").write_text('{"format": "cnipam-export", "version": 1, "leases": [], "cursors": {}}')
    for argv in (["leases"], ["import", str(tmp_path / "empty.json")]):
        ctl = subprocess.run(
            [installed("cnipamctl"), "--db", str(shared / "cnipam.db"), *argv],
            capture_output=True,
            timeout=CALL_TIMEOUT,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        err = ctl.stderr.decode()
        assert ctl.returncode != 0 and "Traceback" not in err, err
        assert f"{shared / 'cnipam.db'} is a symbolic link owned by uid {NOBODY}: not followed" in err, err
    assert list(etc.iterdir()) == []


@needs_root
def test_the_docker_driver_never_follows_a_link_planted_as_its_store(tmp_path: Path) -> None:
    shared, etc = planted(tmp_path)
    driver = subprocess.run(
        [installed("cnipam-docker"), "--socket", str(tmp_path / "d.sock"), "--db", str(shared / "cnipam.db")],
        capture_output=True,
        timeout=CALL_TIMEOUT,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    err = driver.stderr.decode()
    assert driver.returncode != 0 and "Traceback" not in err, err
    assert f"{shared / 'cnipam.db'} is a symbolic link owned by uid {NOBODY}: not followed" in err, err
    assert list(etc.iterdir()) == [] and not (tmp_path / "d.sock").exists()


@pytest.mark.parametrize("key", ["resolvConf", "passwordFile", "tls.ca", "tls.cert"])
def test_a_fifo_or_a_folder_named_by_the_config_is_refused_not_waited_on(
    run_plugin: RunPlugin, tmp_path: Path, key: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    listener = socket.create_server(("127.0.0.1", 0))  # TLS files are read once a TCP connection stands
    port = listener.getsockname()[1]
    for target in (fifo, tmp_path):
        ipam: dict[str, Any] = {"type": "cnipam", "subnet": "10.0.0.0/24"}
        etcd: dict[str, Any] = {"type": "etcd", "endpoints": [f"https://127.0.0.1:{port}"], "lockDir": "l"}
        if key == "resolvConf":
            ipam["resolvConf"] = str(target)
        elif key == "passwordFile":
            ipam["store"] = {**etcd, "username": "u", key: str(target)}
        else:
            ipam["store"] = {
                **etcd,
                "tls": {"ca": str(target)} if key == "tls.ca" else {"cert": str(target), "key": str(target)},
            }
        started = time.monotonic()
        answer = run_plugin("ADD", config(ipam), {"CNI_CONTAINERID": "c1"})
        assert time.monotonic() - started < 10
        assert (answer.code, answer.out["code"]) == (1, 5), answer.out
        assert str(target) in answer.out["msg"]
    listener.close()


@given(st.text())
def test_etcd_key_escaping_is_reversible_and_never_adds_a_separator(text: str) -> None:
    escaped = escape(text)
    assert "/" not in escaped and unescape(escaped) == text


@given(st.text(), st.text())
def test_etcd_key_escaping_keeps_distinct_names_distinct(a: str, b: str) -> None:
    assert (escape(a) == escape(b)) == (a == b)


# -- size limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (64 << 10) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n",
    ],
    ids=["content-length", "header-line", "chunk-size"],
)
def test_an_oversized_etcd_answer_is_refused_without_reading_it(answer: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(answer)
                time.sleep(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            pytest.raises(StoreIOError, match="malformed"),
            EtcdClient([f"http://127.0.0.1:{listener.getsockname()[1]}"], 3.0) as etcd,
        ):
            etcd.range(b"k")
    finally:
        thread.join(5)
        listener.close()


# -- etcd credentials ------------------------------------------------------------------------


def no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"secret leaked: {text}"


def test_a_wrong_password_is_named_without_the_password(run_plugin: RunPlugin, auth_etcd: str, tmp_path: Path) -> None:
    need_etcd()
    wrong = PASSWORD + "-wrong"
    (tmp_path / "password").write_text(wrong + "\n")
    for credentials in ({"password": wrong}, {"passwordFile": str(tmp_path / "password")}):
        store = {
            "type": "etcd",
            "endpoints": [auth_etcd],
            "username": "root",
            "lockDir": str(tmp_path / "l"),
            "allowInsecure": True,
            **credentials,
        }
        answer = run_plugin("ADD", config({**V4, "store": store}), {"CNI_CONTAINERID": "c1"})
        assert (answer.code, answer.out["code"]) == (1, 5), answer.out
        assert "authentication" in answer.out["msg"] and "root" in answer.out["msg"]
        no_secret(json.dumps(answer.out) + answer.err, wrong, PASSWORD)
        ctl = subprocess.run(
            [installed("cnipamctl"), "--store", json.dumps(store), "leases"], capture_output=True, timeout=60
        )
        assert ctl.returncode == 1
        no_secret(ctl.stdout.decode() + ctl.stderr.decode(), wrong, PASSWORD)


@pytest.mark.parametrize(
    "endpoint",
    [f"http://127.0.0.1:{free_port()}", "http://root:Sup3rSecret@127.0.0.1:1", "https://127.0.0.1:1"],
    ids=["unreachable", "credentials-in-url", "tls-unreachable"],
)
def test_an_unreachable_etcd_with_credentials_configured_names_no_secret(
    run_plugin: RunPlugin, tmp_path: Path, endpoint: str
) -> None:
    store: dict[str, object] = {
        "type": "etcd",
        "endpoints": [endpoint],
        "username": "root",
        "password": "Sup3rSecret",
        "lockDir": str(tmp_path / "l"),
        "allowInsecure": True,  # else refused before any connection: test_plain_http_with_credentials_is_refused…
    }
    answer = run_plugin(
        "ADD", config({**V4, "store": store}), {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "300ms"}
    )
    assert answer.code == 1 and answer.out["code"] in (7, 11), answer.out
    no_secret(json.dumps(answer.out) + answer.err, "Sup3rSecret")
    env = {"CNIPAM_STORE": json.dumps(store), "IPAM_DB_CONNECTION_TIMEOUT": "300ms", "PATH": "/usr/bin:/bin"}
    ctl = subprocess.run([installed("cnipamctl"), "leases"], capture_output=True, env=env, timeout=60)
    assert ctl.returncode in (1, 2)
    no_secret(ctl.stdout.decode() + ctl.stderr.decode(), "Sup3rSecret")


@pytest.mark.parametrize("credentials", [{"password": "Sup3rSecret"}, {"passwordFile": "/nonexistent"}])
def test_plain_http_with_credentials_is_refused_unless_allowed(
    run_plugin: RunPlugin, tmp_path: Path, credentials: dict[str, str]
) -> None:
    """A password sent to an http:// endpoint crosses the network in clear, and so does the
    token etcd hands back for it: refused (code 7) before anything is read or dialled,
    saying why and what to do; `allowInsecure` is the operator's explicit choice."""
    port = free_port()
    store = {
        "type": "etcd",
        "endpoints": [f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}"],
        "username": "root",
        **credentials,
    }
    answer = run_plugin("ADD", config({**V4, "store": store}), {"CNI_CONTAINERID": "c1"})
    assert (answer.code, answer.out["code"]) == (1, 7), answer.out
    assert "clear text" in answer.out["msg"] and "allowInsecure" in answer.out["msg"], answer.out
    assert f"http://127.0.0.1:{port}" in answer.out["msg"]
    no_secret(json.dumps(answer.out), "Sup3rSecret")
    allowed = {**store, "allowInsecure": True, "lockDir": str(tmp_path / "l")}
    answer = run_plugin(
        "ADD", config({**V4, "store": allowed}), {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "300ms"}
    )
    assert answer.out["code"] != 7, answer.out  # past the settings: it now fails on the dead port or the missing file
    without = {
        "type": "etcd",
        "endpoints": [f"http://127.0.0.1:{port}"],
        "lockDir": str(tmp_path / "l"),
    }  # no secret to leak
    answer = run_plugin(
        "ADD", config({**V4, "store": without}), {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "300ms"}
    )
    assert answer.out["code"] == 11, answer.out
    assert (
        run_plugin("ADD", config({**V4, "store": {**allowed, "allowInsecure": "yes"}}), {"CNI_CONTAINERID": "c1"}).out[
            "code"
        ]
        == 7
    )


@pytest.mark.parametrize("endpoint", ["http://a b:2379", "http://h\r\nX-Injected: 1:2379", "http://h\t:1"])
def test_an_endpoint_that_would_inject_into_the_host_header_is_refused(endpoint: str) -> None:
    from cnipam.store.settings import StoreSettings

    with pytest.raises(InvalidConfig, match="spaces or control characters"):
        StoreSettings.from_env({}, None, {"type": "etcd", "endpoints": [endpoint]})


# -- bounded work: each limit, as the plugin answers it (docs/security.md) -----------------


def test_a_config_over_1_mib_is_refused_unread(run_plugin: RunPlugin, db_path: Path) -> None:
    padding = "x" * (MAX_INPUT + 1)
    answer = run_plugin("ADD", json.dumps({**config(V4), "padding": padding}).encode(), {"CNI_CONTAINERID": "c1"})
    assert (answer.code, answer.out["code"]) == (1, 6), answer.out
    assert "larger than" in answer.out["msg"]
    assert snapshot(db_path) is None


def test_too_many_ranges_or_requested_addresses_are_refused_by_count(run_plugin: RunPlugin, db_path: Path) -> None:
    ranges = [[{"subnet": f"10.{i // 256}.{i % 256}.0/24"}] for i in range(MAX_RANGES + 1)]
    answer = run_plugin("ADD", config({"type": "cnipam", "ranges": ranges}), {"CNI_CONTAINERID": "c1"})
    assert (answer.code, answer.out["code"]) == (1, 7), answer.out
    assert f"{MAX_RANGES + 1} ranges in all; a config may name at most {MAX_RANGES}" in answer.out["msg"]
    wanted = [f"10.1.{i // 256}.{i % 256}" for i in range(MAX_REQUESTED + 1)]
    requesting = {**config({"type": "cnipam", "subnet": "10.1.0.0/16"}), "args": {"cni": {"ips": wanted}}}
    answer = run_plugin("ADD", requesting, {"CNI_CONTAINERID": "c1"})
    assert (answer.code, answer.out["code"]) == (1, 7), answer.out
    assert f"{MAX_REQUESTED + 1} requested addresses" in answer.out["msg"]
    assert snapshot(db_path) is None
