"""Who may use `cnipamd`, and whom the plugin trusts, as real processes of real users
(docs/security.md, fixes 10 and 11).

The agent learns the caller from the kernel (SO_PEERCRED): by default it answers only
root and tells anyone else's plugin to run the call itself; with `--allow-group` a
member's call runs in a child holding that member's own uid and groups, so nothing is
read, created or released that the member's own plugin could not. The plugin forwards
only to a socket root (or its own user) put in a folder nobody else may write, with root
(or itself) listening. Other users are played by uid 65534 with a made-up group; files
they must reach live in a folder under the system's temporary folder, not in pytest's
private one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.agent_protocol import (
    MAX_ANSWER,
    Declined,
    FrameReader,
    decode_answer,
    encode_answer,
    encode_decline,
    encode_request,
)
from cnipam.testing.agent_process import AgentProcess
from tests.support.agent_calls import V4, call, ecs, start_agent
from tests.support.plugin_calls import CALL_TIMEOUT, as_stdin, installed, plugin_env
from tests.support.store_files import held

NOBODY = 65534
GROUP = 46718  # a group nobody else uses; members are made with extra_groups

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play other users")]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder other users can reach (pytest's own is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="cnipam-agent-security-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def mine(folder: Path) -> Path:
    """A folder the other user owns, as its own plugin would use."""
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    return folder


def private(folder: Path) -> Path:
    """A folder only root may enter."""
    folder.mkdir(mode=0o700)
    return folder


class Forwarded:
    """What the agent sent back to a caller: an answer (`out`, `status`) or a decline (`declined`)."""

    def __init__(self, payload: bytes) -> None:
        self.declined: str | None = None
        self.out: Any = None
        self.status = -1
        try:
            text, self.status = decode_answer(payload)
            self.out = json.loads(text) if text.strip() else None
        except Declined as declined:
            self.declined = declined.reason

    def __repr__(self) -> str:
        return f"Forwarded(declined={self.declined!r}, status={self.status}, out={self.out!r})"


def forwarded_as(
    sock: Path,
    command: str,
    config: dict[str, Any],
    db: Path,
    cwd: Path,
    groups: tuple[int, ...] = (GROUP,),
    **env: str,
) -> Forwarded:
    """One request sent to the agent by a process of uid 65534, as its plugin would send it.

    A forked child of this process, not the installed plugin: the interpreter may live in
    a folder other users cannot enter, and the agent's behaviour is what is tested here
    (the plugin's side of a decline: test_a_decline_makes_the_plugin_run_the_call_itself)."""
    environ = {
        key.encode(): value.encode() for key, value in plugin_env(command, db, {"CNI_CONTAINERID": "c1", **env}).items()
    }
    request = encode_request(str(cwd).encode(), as_stdin(config), environ)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups(list(groups))
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(CALL_TIMEOUT)
                conn.connect(str(sock))
                try:
                    conn.sendall(request)
                except OSError:
                    pass  # declined before the request was read: the reason is waiting
                reader = FrameReader(MAX_ANSWER)
                while not reader.payload:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reader.feed(chunk)
            os.write(write, b"+" + (reader.payload or b""))
        except BaseException as exc:
            os.write(write, b"!" + repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    assert data[:1] == b"+", data
    return Forwarded(data[1:])


@pytest.fixture
def open_to_all(shared: Path) -> Iterator[AgentProcess]:
    """An agent without --allow-group whose socket an operator made reachable by everyone
    anyway: the socket's mode must not be what keeps other users out."""
    agent = start_agent(shared, sock=shared / "run" / "cnipamd.sock")
    (shared / "run").chmod(0o755)
    agent.socket.chmod(0o666)
    yield agent
    assert agent.stop() == 0


@pytest.fixture
def for_group(shared: Path) -> Iterator[AgentProcess]:
    agent = start_agent(shared, "--allow-group", str(GROUP), sock=shared / "run" / "cnipamd.sock")
    yield agent
    assert agent.stop() == 0


# -- the agent answers only root by default ----------------------------------------------------------


def test_by_default_another_user_is_told_to_run_its_call_itself(open_to_all: AgentProcess, shared: Path) -> None:
    """Through a root agent, uid 65534 could create a store where only root may write;
    declined, its plugin runs the call itself, as itself."""
    root_only = private(shared / "root-only")
    answer = forwarded_as(open_to_all.socket, "ADD", ecs(V4), root_only / "sub" / "x.db", shared)
    assert answer.declined is not None and "only root" in answer.declined, answer
    assert not (root_only / "sub").exists()
    assert open_to_all.events("call") == []
    assert [event["caller"].split()[:2] for event in open_to_all.events("declined")] == [["uid", str(NOBODY)]]
    # root's calls are answered as ever
    assert call("ADD", ecs(V4), root_only / "x.db", shared, open_to_all.socket).code == 0
    assert len(open_to_all.events("call")) == 1


# -- a group member's call runs with its own credentials ---------------------------------------------


def test_a_member_is_answered_by_the_agent_as_itself(for_group: AgentProcess, shared: Path) -> None:
    own = mine(shared / "own")
    answer = forwarded_as(for_group.socket, "ADD", ecs(V4), own / "x.db", own)
    assert answer.status == 0, answer
    assert answer.out["ips"][0]["address"] == "10.9.0.2/24"
    [event] = for_group.events("call")
    assert (event["uid"], event["status"]) == (NOBODY, 0)
    assert (own / "x.db").stat().st_uid == NOBODY  # created by the member, as its own plugin would
    assert held(own / "x.db") == [("10.9.0.2", "cni:agentnet/c1/eth0")]


def test_a_member_cannot_create_files_where_it_may_not(for_group: AgentProcess, shared: Path) -> None:
    root_only = private(shared / "root-only")
    answer = forwarded_as(for_group.socket, "ADD", ecs(V4), root_only / "etc" / "nologin", mine(shared / "cwd"))
    assert (answer.status, answer.out["code"]) == (1, 5), answer
    assert list(root_only.iterdir()) == []
    assert for_group.events("call")[0]["uid"] == NOBODY


def test_a_member_cannot_release_leases_of_a_store_it_cannot_read(for_group: AgentProcess, shared: Path) -> None:
    root_only = private(shared / "root-only")
    db = root_only / "x.db"
    assert call("ADD", ecs(V4), db, shared, None).code == 0
    gc = ecs(V4, "1.1.0") | {"cni.dev/valid-attachments": []}
    answer = forwarded_as(for_group.socket, "GC", gc, db, mine(shared / "cwd"))
    assert (answer.status, answer.out["code"]) == (1, 5), answer
    assert held(db) == [("10.9.0.2", "cni:agentnet/c1/eth0")]


def test_a_member_cannot_read_a_root_only_file_through_the_config(for_group: AgentProcess, shared: Path) -> None:
    """passwordFile and resolvConf naming root's secrets: the child reading them is the
    member, so the read fails and nothing reaches the endpoint the member listens on."""
    secret = shared / "shadow"
    secret.write_text("root:$6$hash:19000::::::\n")
    secret.chmod(0o600)
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(CALL_TIMEOUT)

    def record() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(2)
                received.append(conn.recv(65536))
        except OSError:
            pass

    thread = threading.Thread(target=record)
    thread.start()
    own = mine(shared / "own")
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    store = {
        "type": "etcd",
        "endpoints": [endpoint],
        "username": "u",
        "passwordFile": str(secret),
        "allowInsecure": True,
        "lockDir": str(own),
    }
    answer = forwarded_as(
        for_group.socket, "ADD", ecs(V4) | {"ipam": {**ecs(V4)["ipam"], "store": store}}, own / "x.db", own
    )
    assert (answer.status, answer.out["code"]) == (1, 5), answer
    assert str(secret) in answer.out["msg"] and "root:" not in answer.out["msg"]
    config = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ipam": {"type": "cnipam", "subnet": "10.9.1.0/24", "resolvConf": str(secret)},
    }
    answer = forwarded_as(for_group.socket, "ADD", config, own / "x.db", own)
    assert (answer.status, answer.out["code"]) == (1, 5), answer
    socket.create_connection(listener.getsockname()).close()  # ends the recording: the only connection it saw
    thread.join()
    listener.close()
    assert received == [b""], received


def test_someone_outside_the_group_is_declined(for_group: AgentProcess, shared: Path) -> None:
    own = mine(shared / "own")
    (shared / "run").chmod(0o755)  # even if the operator widened it
    for_group.socket.chmod(0o666)
    answer = forwarded_as(for_group.socket, "ADD", ecs(V4), own / "x.db", own, groups=())
    assert answer.declined is not None and f"group {GROUP}" in answer.declined, answer
    assert for_group.events("call") == [] and not (own / "x.db").exists()


# -- the plugin forwards only to an agent it can trust -------------------------------------------


class Impostor:
    """A listener that answers every request with `answer` (by default a result with an
    address and a DNS server of its choosing), run by `uid`; a forked child of this
    process, so it needs no interpreter another user may not be able to start."""

    RESULT = b'{"cniVersion":"1.0.0","ips":[{"address":"6.6.6.6/32"}],"dns":{"nameservers":["6.6.6.6"]}}\n'

    def __init__(self, path: Path, uid: int | None = None, answer: bytes = encode_answer(RESULT, 0)) -> None:
        ready_read, ready_write = os.pipe()
        self.log_read, log_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                if uid is not None:
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                listener = socket.socket(socket.AF_UNIX)
                listener.bind(str(path))
                listener.listen(8)
                os.write(ready_write, b"r")
                while True:
                    conn, _ = listener.accept()
                    conn.settimeout(2)
                    data = b""
                    try:
                        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                            chunk = conn.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                    except OSError:
                        pass
                    os.write(log_write, f"got {len(data)}\n".encode())
                    conn.sendall(answer)
                    conn.close()
            finally:
                os._exit(0)
        os.close(ready_write)
        os.close(log_write)
        assert os.read(ready_read, 1) == b"r"
        os.close(ready_read)

    def stop(self) -> str:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        with os.fdopen(self.log_read, "rb") as log:
            return log.read().decode()


def direct_answer_expected(code: int, out: Any) -> None:
    assert code == 0 and out["ips"][0]["address"] == "10.9.0.2/24", out


def run_plugin_at(sock: Path, db: Path, cwd: Path) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [installed("cnipam")],
        input=as_stdin(ecs(V4)),
        env=plugin_env("ADD", db, {"CNI_CONTAINERID": "c1", "CNIPAM_AGENT_SOCKET": str(sock)}),
        capture_output=True,
        cwd=cwd,
        timeout=CALL_TIMEOUT,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr.decode()


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775], ids=["1777-like-tmp", "0777", "0775-group"])
def test_no_forwarding_to_a_socket_in_a_folder_others_may_write(shared: Path, mode: int) -> None:
    """/tmp (1777) is where the README once put it: anyone could bind the name first."""
    folder = shared / "sockets"
    folder.mkdir()
    folder.chmod(mode)
    impostor = Impostor(folder / "agent.sock")
    try:
        code, out, err = run_plugin_at(folder / "agent.sock", shared / "x.db", shared)
    finally:
        log = impostor.stop()
    direct_answer_expected(code, out)
    assert "not forwarding to cnipamd" in err and "writable by" in err, err
    assert "got" not in log  # not even connected to


def test_no_forwarding_to_another_users_socket(shared: Path) -> None:
    folder = mine(shared / "sockets")
    impostor = Impostor(folder / "agent.sock", uid=NOBODY)
    try:
        code, out, err = run_plugin_at(folder / "agent.sock", shared / "x.db", shared)
    finally:
        log = impostor.stop()
    direct_answer_expected(code, out)
    assert f"uid {NOBODY}" in err, err
    assert "got" not in log


def test_no_forwarding_when_the_listener_is_another_user(shared: Path) -> None:
    """A socket that looks like root's (root owns it and its folder) but whose listener is
    another user: the kernel's peer credentials give it away before anything is sent."""
    folder = mine(shared / "staging")
    impostor = Impostor(folder / "agent.sock", uid=NOBODY)
    trusted = shared / "run"
    trusted.mkdir(mode=0o755)
    os.rename(folder / "agent.sock", trusted / "agent.sock")
    os.chown(trusted / "agent.sock", 0, 0)
    try:
        code, out, err = run_plugin_at(trusted / "agent.sock", shared / "x.db", shared)
    finally:
        log = impostor.stop()
    direct_answer_expected(code, out)
    assert f"runs as uid {NOBODY}" in err, err
    assert log.splitlines() == ["got 0"]  # connected (that is how the kernel names the listener), sent nothing


def test_no_forwarding_through_a_symbolic_link(shared: Path, tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    try:
        (shared / "run").mkdir(mode=0o755)
        (shared / "run" / "agent.sock").symlink_to(agent.socket)
        code, out, err = run_plugin_at(shared / "run" / "agent.sock", shared / "x.db", shared)
        direct_answer_expected(code, out)
        assert "is not a socket" in err, err
        assert agent.events("call") == []
    finally:
        assert agent.stop() == 0


def test_a_decline_makes_the_plugin_run_the_call_itself(shared: Path) -> None:
    """A trusted agent that declines (a caller it does not serve, its limits reached) ran
    nothing: the plugin runs the call and says why on stderr."""
    (shared / "run").mkdir(mode=0o755)
    impostor = Impostor(shared / "run" / "agent.sock", answer=encode_decline("at its limit, for the test"))
    try:
        code, out, err = run_plugin_at(shared / "run" / "agent.sock", shared / "x.db", shared)
    finally:
        log = impostor.stop()
    direct_answer_expected(code, out)
    assert "cnipamd did not take the call (at its limit, for the test); running it directly" in err, err
    assert "got" in log
