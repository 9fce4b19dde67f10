"""Hostile configs, environments and stdin for the plugin: every outcome is a result or
one documented CNI error object, never a traceback or code 999, and a refused request
leaves the store as it was.

Two levels. In process, the request and config parsers (`parse_request`, `parse_ipam`,
`StoreSettings.from_env`) take thousands of hostile inputs a second and may raise only
CnipamError. Against the installed executable, fewer examples (a process each) check
the whole path: exit status, stdout, the store snapshot. Hostile values: wrong types,
huge and deeply nested JSON, bytes that are not UTF-8, NUL, path-like names, enormous
and negative prefixes and numbers, huge environment values, a hostile `ipam.store`.
Paths the config may name are relative (the plugin runs in a folder deep inside
tmp_path), so a value the plugin accepts as a path stays inside the test's folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnipam.core.cni_request import parse_request
from cnipam.core.errors import CnipamError
from cnipam.core.ipam_dialect import parse_ipam
from cnipam.plugin import CNI_CODES
from cnipam.store.settings import StoreSettings
from cnipam.testing.etcd_server import free_port
from tests.support.plugin_calls import CALL_TIMEOUT, parse_output, plugin_env
from tests.support.store_files import snapshot

DOCUMENTED = set(CNI_CODES.values())  # 999 is "a bug": never acceptable here
CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens: etcd unreachable, code 11
HOSTILE_TEXT = [
    "",
    "10.0.0.0/24",
    "10.0.0.0/99999999999999999999",
    "10.0.0.0/-1",
    "10.0.0.0/²",
    "::/0",
    "0.0.0.0/0",
    "2001:db8::/129",
    "10.0.0.1",
    "-1",
    "../../etc",
    "../../../../../../etc/passwd",
    "a/b",
    "a\x00b",
    "\udcff",
    "x" * 5000,
    "ﬀ",
    "1.1.0",
    "0.4.0",
    "etcd",
    "sqlite",
    CLOSED,
    "http://user:s3cret@127.0.0.1:1",
    "http://127.0.0.1:99999999",
    "http://a b\r\nX: y",
]
NUMBERS = st.one_of(
    st.integers(min_value=-(1 << 80), max_value=1 << 80), st.floats(allow_nan=False, allow_infinity=False)
)
leaf = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20), NUMBERS, st.booleans(), st.none())
json_value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

IPAM_KEYS = [
    "type", "id", "ipv4-subnet", "ipv6-subnet", "ipv4-address", "ipv4-gateway", "ipv4-routes", "ipv6-routes", "subnet",
    "rangeStart", "rangeEnd", "gateway", "ranges", "routes", "resolvConf", "dataDir", "store",
]  # fmt: skip
TOP_KEYS = ["cniVersion", "name", "prevResult", "args", "runtimeConfig", "cni.dev/valid-attachments"]
STORE_KEYS = ["type", "endpoints", "prefix", "host", "username", "password", "passwordFile", "tls", "lockDir", "path"]
BASES: list[dict[str, Any]] = [
    {"cniVersion": "1.0.0", "name": "net1", "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.0.0.0/24", "id": "fz"}},
    {"cniVersion": "1.1.0", "name": "net1",
     "ipam": {"type": "cnipam", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd01::/64"}]]}},
    {"cniVersion": "0.4.0", "name": "net1",
     "ipam": {"type": "cnipam", "subnet": "10.2.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
    {"cniVersion": "1.0.0", "name": "net1",
     "ipam": {"type": "cnipam", "ipv4-subnet": "10.3.0.0/24",
              "store": {"type": "etcd", "endpoints": [CLOSED], "lockDir": "lock"}}},
]  # fmt: skip


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one to three keys replaced by hostile values."""
    config: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "ipam", "ipam", "store"]))
        if where == "top":
            config[draw(st.sampled_from(TOP_KEYS))] = draw(json_value)
        elif where == "ipam":
            config["ipam"][draw(st.sampled_from(IPAM_KEYS))] = draw(json_value)
        else:
            store = config["ipam"].setdefault("store", {"type": "etcd", "endpoints": [CLOSED], "lockDir": "lock"})
            if isinstance(store, dict):
                store[draw(st.sampled_from(STORE_KEYS))] = draw(json_value)
    return config


@st.composite
def stdins(draw: st.DrawFn) -> bytes:
    body = json.dumps(draw(configs())).encode()
    kind = draw(st.sampled_from(["json", "json", "cut", "splice", "deep", "huge", "raw"]))
    if kind == "cut":
        return body[: draw(st.integers(min_value=0, max_value=len(body)))]
    if kind == "splice":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        return body[:at] + draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"1e999", b"NaN", b"\\ud800"])) + body[at:]
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=300000))
        return b'{"cniVersion":"1.0.0","name":"n","ipam":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "huge":
        return body[:-1] + b',"pad":"' + b"x" * draw(st.sampled_from([(1 << 20) - len(body), 1 << 20])) + b'"}'
    if kind == "raw":
        return draw(st.binary(max_size=100))
    return body


env_text = st.one_of(
    st.sampled_from([h for h in HOSTILE_TEXT if "\x00" not in h and "\udcff" not in h]),
    st.text(max_size=20).filter(lambda t: "\x00" not in t and t.isprintable()),
)
ENV_KEYS = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_NETNS",
    "IPAM_DB_CONNECTION_TIMEOUT",
    "CNIPAM_STORE",
    "CNIPAM_HOST",
]
environments = st.dictionaries(st.sampled_from(ENV_KEYS), st.one_of(env_text, st.just("y" * 100000)), max_size=3)
commands = st.sampled_from(["ADD", "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])


# -- in process: the parsers raise only CnipamError -------------------------------------


@settings(max_examples=1000, deadline=None)
@given(command=commands, body=stdins(), env=environments)
def test_the_parsers_raise_only_cnipam_errors(command: str, body: bytes, env: dict[str, str]) -> None:
    full = {"CNI_IFNAME": "eth0", "CNI_CONTAINERID": "c1", "IPAM_DB_PATH": "store/ipam.db", **env}
    try:
        request = parse_request(command, full, body)
        if command == "GC" and "ipam" not in request.config:
            StoreSettings.from_env(full)
            return
        config = parse_ipam(request.config, request.args)
        ipam = request.config["ipam"]
        StoreSettings.from_env(full, config.data_dir, ipam.get("store") if isinstance(ipam, dict) else None)
    except CnipamError as error:
        assert error.message
        assert type(error) in CNI_CODES or any(kind in CNI_CODES for kind in type(error).__mro__)


# -- the installed executable ------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Deep enough that '../../etc' and friends stay inside tmp_path."""
    folder = tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "work"
    folder.mkdir(parents=True)
    return folder


def run(plugin_exe: str, db: Path, workdir: Path, command: str, stdin: bytes, env: dict[str, str]) -> tuple[int, Any]:
    full = {"CNI_CONTAINERID": "c1", "IPAM_DB_CONNECTION_TIMEOUT": "200ms", **env}
    proc = subprocess.run(
        [plugin_exe],
        input=stdin,
        env=plugin_env(full.pop("CNI_COMMAND", command), db, full),
        capture_output=True,
        cwd=workdir,
        timeout=CALL_TIMEOUT,
    )
    out, _ = parse_output(proc.stdout, proc.stderr)  # no traceback, stdout empty or one JSON document
    return proc.returncode, out


def seed(plugin_exe: str, db: Path, workdir: Path) -> None:
    """One lease in the store, so that "unchanged" means something."""
    code, out = run(
        plugin_exe, db, workdir, "ADD", json.dumps(BASES[0] | {"ipam": {**BASES[0]["ipam"], "id": "seed"}}).encode(), {}
    )
    assert code == 0, out


def assert_documented(code: int, out: Any) -> None:
    if code == 0:
        assert out is None or isinstance(out, dict)
        return
    assert code == 1, out
    assert isinstance(out, dict) and set(out) <= {"cniVersion", "code", "msg", "details"}, out
    assert out["code"] in DOCUMENTED, out
    assert isinstance(out["msg"], str) and out["msg"], out


FAST = settings(
    max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@FAST
@given(command=commands, stdin=stdins())
def test_hostile_stdin(plugin_exe: str, db_path: Path, workdir: Path, command: str, stdin: bytes) -> None:
    if not db_path.exists():
        seed(plugin_exe, db_path, workdir)
    before = snapshot(db_path)
    code, out = run(plugin_exe, db_path, workdir, command, stdin, {})
    assert_documented(code, out)
    if code != 0:
        assert snapshot(db_path) == before, f"refused with {out} but the store changed"


@FAST
@given(command=commands, config=configs(), env=environments)
def test_hostile_environment_and_config(
    plugin_exe: str, db_path: Path, workdir: Path, command: str, config: dict[str, Any], env: dict[str, str]
) -> None:
    if not db_path.exists():
        seed(plugin_exe, db_path, workdir)
    before = snapshot(db_path)
    code, out = run(plugin_exe, db_path, workdir, command, json.dumps(config).encode(), env)
    assert_documented(code, out)
    if code != 0:
        assert snapshot(db_path) == before, f"refused with {out} but the store changed"


@pytest.mark.parametrize(
    ("ipam", "code", "names"),
    [
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"dst": "0.0.0.0/0", "mtu": 10**30}]}, 7, ("mtu",)),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"dst": "0.0.0.0/0", "priority": "high"}]}, 7, ("priority",)),
        ({"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [{"dst": "0.0.0.0/0", "table": True}]}, 7, ("table",)),
    ],
)
def test_route_numbers_that_a_runtime_cannot_read_are_refused_before_the_store(
    plugin_exe: str, db_path: Path, workdir: Path, ipam: dict[str, Any], code: int, names: tuple[str, ...]
) -> None:
    outcome, out = run(
        plugin_exe, db_path, workdir, "ADD", json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}).encode(), {}
    )
    assert (outcome, out["code"]) == (1, code) and all(name in out["msg"] for name in names), out
    assert snapshot(db_path) is None


def test_an_infinite_number_is_refused_as_bad_json_before_the_store(
    plugin_exe: str, db_path: Path, workdir: Path
) -> None:
    body = (
        b'{"cniVersion":"1.0.0","name":"n",'
        b'"ipam":{"ipv4-subnet":"10.0.0.0/24","ipv4-routes":[{"dst":"0.0.0.0/0","mtu":1e999}]}}'
    )
    code, out = run(plugin_exe, db_path, workdir, "ADD", body, {})
    assert (code, out["code"]) == (1, 6) and "1e999" in out["msg"], out
    assert snapshot(db_path) is None
