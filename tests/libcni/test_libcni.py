"""cnipam.libcni driving real plugins: the installed `cnipam`, Debian's Go `host-local`, and
small script plugins written into tmp_path that log every call (for chaining, order,
environment, errors, VERSION and ETXTBSY). Reference: shared/reference/cni-spec.md §1-4.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.cni_version import SUPPORTED, at_least
from cnipam.libcni import (
    CNI,
    CacheError,
    CNIError,
    ConfigNotFound,
    InvalidArguments,
    InvalidNetworkConfig,
    MultipleErrors,
    NetworkConfigList,
    PluginNotFound,
    PluginTimeout,
    RuntimeConf,
    UnsupportedVersion,
    load_network_list,
    network_list_from_bytes,
    network_list_from_file,
)
from cnipam.libcni.results import as_go_types
from tests.support.plugin_calls import installed

HOST_LOCAL = "/usr/lib/cni/host-local"
needs_host_local = pytest.mark.skipif(
    not os.access(HOST_LOCAL, os.X_OK), reason="Debian's containernetworking-plugins is not installed"
)

# A plugin that logs each call (command, stdin, CNI_* environment) as one JSON line, then
# behaves as its config's "behave" object says: "fail": {VERB: error object} exits 1 with
# that object; "stdout"/"stderr": {VERB: text} prints raw text; "sleep": seconds; on ADD
# it prints "result" if given, else prevResult with one interface named after itself.
RECORDER = r"""#!{python}
import json, os, sys, time
NAME = {name!r}
cmd = os.environ.get("CNI_COMMAND", "")
raw = sys.stdin.read()
conf = json.loads(raw) if raw.strip() else {{}}
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "LIBCNI_TEST_MARK"}}
with open({log!r}, "a") as log:
    log.write(json.dumps({{"plugin": NAME, "cmd": cmd, "conf": conf, "env": env}}) + "\n")
if cmd == "VERSION":
    {version}
    sys.exit(0)
behave = conf.get("behave", {{}})
time.sleep(behave.get("sleep", 0))
if cmd in behave.get("stderr", {{}}):
    sys.stderr.write(behave["stderr"][cmd])
if cmd in behave.get("stdout", {{}}):
    sys.stdout.write(behave["stdout"][cmd])
if cmd in behave.get("fail", {{}}):
    print(json.dumps(behave["fail"][cmd]))
    sys.exit(1)
if cmd in behave.get("exit", {{}}):
    sys.exit(behave["exit"][cmd])
if cmd == "ADD" and cmd not in behave.get("stdout", {{}}):
    if "result" in behave:
        print(json.dumps(behave["result"]))
    else:
        result = dict(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}})
        result["interfaces"] = list(result.get("interfaces", [])) + [{{"name": NAME}}]
        print(json.dumps(result))
"""
VERSION_ALL = (
    'print(json.dumps({"cniVersion": "1.1.0", '
    '"supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}))'
)


class Env:
    """A plugin folder, a cache folder and the call log of the script plugins in it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "calls.log"
        self.cni = CNI([str(tmp_path / "empty-dir"), str(self.bin)], cache_dir=str(self.cache), timeout=20)

    def script(self, name: str, version: str = VERSION_ALL) -> Path:
        path = self.bin / name
        path.write_text(RECORDER.format(python=sys.executable, name=name, log=str(self.log), version=version))
        path.chmod(0o755)
        return path

    def link(self, name: str, target: str) -> None:
        (self.bin / name).symlink_to(target)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def cache_file(self, net: str, container: str, ifname: str = "eth0") -> Path:
        return self.cache / "results" / f"{net}-{container}-{ifname}"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def conflist(name: str, version: str, plugins: list[dict[str, Any]], **top: Any) -> NetworkConfigList:
    return network_list_from_bytes(
        json.dumps({"cniVersion": version, "name": name, **top, "plugins": plugins}).encode()
    )


def ipam(kind: str, data_dir: Path, subnet: str = "10.77.0.0/24", **keys: Any) -> dict[str, Any]:
    """A plugin object for an IPAM plugin run directly in a list (host-local's dialect)."""
    return {"type": kind, "ipam": {"type": kind, "subnet": subnet, "dataDir": str(data_dir), **keys}}


def rt(container: str = "c1", **kw: Any) -> RuntimeConf:
    return RuntimeConf(container_id=container, netns=f"/run/netns/{container}", **kw)


# --------------------------------------------------------------------------------------
# loading


def write(folder: Path, name: str, doc: dict[str, Any] | str) -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_load_takes_conflists_in_file_name_order_then_confs(tmp_path: Path) -> None:
    one = [{"type": "x"}]
    write(tmp_path, "20-b.conflist", {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "second"}]})
    write(tmp_path, "10-a.conflist", {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "first"}]})
    write(tmp_path, "05-other.conflist", {"cniVersion": "1.0.0", "name": "other", "plugins": one})
    write(tmp_path, "00-net.conf", {"cniVersion": "1.0.0", "name": "net", "type": "from-conf"})
    (tmp_path / "01-dir.conflist").mkdir()  # a folder is never a config
    assert load_network_list(str(tmp_path), "net").plugins == [{"type": "first"}]
    assert load_network_list(str(tmp_path), "other").plugins == one

    write(tmp_path, "b.json", {"cniVersion": "0.4.0", "name": "single", "type": "from-json"})
    write(tmp_path, "c.conf", {"cniVersion": "0.4.0", "name": "single", "type": "from-c-conf"})
    write(tmp_path, "a.conf", {"cniVersion": "0.4.0", "name": "single", "type": "from-a-conf"})
    write(tmp_path, "a.txt", {"cniVersion": "0.4.0", "name": "txt", "type": "ignored"})
    single = load_network_list(str(tmp_path), "single")
    assert [p["type"] for p in single.plugins] == ["from-a-conf"]
    assert single.cni_version == "0.4.0" and single.name == "single"
    with pytest.raises(ConfigNotFound) as missing:
        load_network_list(str(tmp_path), "txt")
    assert missing.value.code == 7 and '"txt"' in str(missing.value)


def test_load_skips_unrelated_broken_files_but_not_a_broken_match(tmp_path: Path) -> None:
    write(tmp_path, "00-broken.conflist", "{not json")
    write(tmp_path, "01-noplugins.conflist", {"name": "other", "cniVersion": "1.0.0"})
    write(tmp_path, "02-good.conflist", {"cniVersion": "1.0.0", "name": "good", "plugins": [{"type": "x"}]})
    write(tmp_path, "03-bad.conflist", {"cniVersion": "1.0.0", "name": "bad", "plugins": [{"no": "type"}]})
    assert load_network_list(str(tmp_path), "good").plugins == [{"type": "x"}]
    with pytest.raises(InvalidNetworkConfig, match="missing 'type'") as bad:
        load_network_list(str(tmp_path), "bad")
    assert not isinstance(bad.value, ConfigNotFound) and "03-bad.conflist" in str(bad.value)
    with pytest.raises(ConfigNotFound) as missing:
        load_network_list(str(tmp_path), "nowhere")
    assert "00-broken.conflist" in missing.value.details
    with pytest.raises(ConfigNotFound):
        load_network_list(str(tmp_path / "no-such-dir"), "good")


def test_a_single_plugin_conf_is_wrapped_as_go_wraps_it(tmp_path: Path) -> None:
    """ConfListFromConf re-marshals the conf in Go: sorted keys, no spaces, HTML escaped."""
    conf = (
        b'{"type": "bridge", "name": "n1", "cniVersion": "0.4.0", '
        b'"ipam": {"type": "cnipam", "subnet": "10.1.0.0/16"}, "x": "<&>"}'
    )
    net = network_list_from_file(str(write(tmp_path, "n.conf", conf.decode())))
    assert net.raw == (
        b'{"cniVersion":"0.4.0","name":"n1","plugins":[{"cniVersion":"0.4.0","ipam":{"subnet":"10.1.0.0/16","type":"cnipam"},'
        b'"name":"n1","type":"bridge","x":"\\u003c\\u0026\\u003e"}]}'
    )
    assert (net.name, net.cni_version, net.disable_check, net.disable_gc) == ("n1", "0.4.0", False, False)
    assert net.plugins == [json.loads(conf)]
    listed = b'{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"a"}]}'
    assert network_list_from_bytes(listed).raw == listed  # a list keeps its bytes


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"cniVersion": "0.4.0"}, "0.4.0"),
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0", "0.3.1"]}, "1.1.0"),
        ({"cniVersions": ["0.3.1", "1.0.0"]}, "1.0.0"),
        ({"cniVersion": "1.2.0", "cniVersions": ["1.0.0"]}, "1.0.0"),  # newer than we implement: ignored
        ({"cniVersion": "1.1.0", "cniVersions": []}, "1.1.0"),
        ({}, "0.1.0"),  # no version means 0.1.0, and plugins are told so
    ],
)
def test_version_negotiation(top: dict[str, Any], expected: str) -> None:
    doc = {"name": "n", **top, "plugins": [{"type": "x"}]}
    assert network_list_from_bytes(json.dumps(doc).encode()).cni_version == expected


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"name": "n", "cniVersion": "1.0.0", "cniVersions": ["one"], "plugins": [{"type": "x"}]}, "cniVersions"),
        ({"name": "n", "cniVersion": "1.0.0", "cniVersions": "1.0.0", "plugins": [{"type": "x"}]}, "cniVersions"),
        ({"name": "n", "cniVersion": "1.0.0", "disableCheck": "yes", "plugins": [{"type": "x"}]}, "disableCheck"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": []}, "no plugins"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}, "no name"),
        ({"name": "n", "plugins": [{"type": "x", "capabilities": {"ips": "yes"}}]}, "capabilities"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_lists_are_refused_with_code_7(doc: Any, match: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=match) as err:
        network_list_from_bytes(json.dumps(doc).encode())
    assert err.value.code == 7


def test_booleans_may_be_strings() -> None:
    net = conflist("n", "1.1.0", [{"type": "x"}], disableCheck="True", disableGC="false")
    assert (net.disable_check, net.disable_gc) == (True, False)


# --------------------------------------------------------------------------------------
# ADD / CHECK / DEL against real IPAM plugins


def add_del_round_trip(env: Env, net: NetworkConfigList, data_dir: Path) -> None:
    """One address only (rangeStart = rangeEnd), so whether a lease is held shows in
    whether another container's ADD finds a free address."""
    runtime = rt("c1", args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")))
    result = env.cni.add_network_list(net, runtime)
    assert result["cniVersion"] == net.cni_version
    address = result["ips"][0]["address"] if "ips" in result else result["ip4"]["ip"]
    assert address == "10.77.0.9/24"
    assert env.cni.get_cached_result(net, runtime) == as_go_types(result)  # as Go's typed result keeps it

    path = env.cache_file(net.name, "c1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entry = json.loads(path.read_bytes())
    assert list(entry) == ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs", "result"]
    assert entry["kind"] == "cniCacheV1"
    assert entry["containerId"] == "c1"
    assert base64.b64decode(entry["config"], validate=True) == net.raw
    assert entry["ifName"] == "eth0"
    assert entry["networkName"] == net.name
    assert entry["netns"] == "/run/netns/c1"
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]
    assert entry["result"] == as_go_types(result)
    assert ("dns" in entry["result"]) == (
        not at_least(net.cni_version, "1.0.0")
    )  # cnipam prints "dns":{}; Go 1.2+ drops it in 1.x
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left

    with pytest.raises(CNIError):
        env.cni.add_network_list(net, rt("c2"))  # the only address is taken
    if at_least(net.cni_version, "0.4.0"):
        env.cni.check_network_list(net, runtime)
    env.cni.del_network_list(net, runtime)
    assert not path.exists()
    env.cni.del_network_list(net, runtime)  # DEL is idempotent
    assert env.cni.get_cached_result(net, runtime) is None
    assert env.cni.add_network_list(net, rt("c2")) is not None  # the address was released


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del_with_cnipam(env: Env, tmp_path: Path, version: str) -> None:
    env.link("cnipam", installed("cnipam"))
    data = tmp_path / "store"
    net = conflist("net", version, [ipam("cnipam", data, rangeStart="10.77.0.9", rangeEnd="10.77.0.9")])
    add_del_round_trip(env, net, data)


@needs_host_local
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_add_check_del_with_go_host_local(env: Env, tmp_path: Path, version: str) -> None:
    env.link("host-local", HOST_LOCAL)
    data = tmp_path / "store"
    net = conflist("net", version, [ipam("host-local", data, rangeStart="10.77.0.9", rangeEnd="10.77.0.9")])
    add_del_round_trip(env, net, data)


def test_check_finds_a_lease_that_vanished(env: Env, tmp_path: Path) -> None:
    """CHECK really hands the cached result over: cnipam compares prevResult with its store."""
    env.link("cnipam", installed("cnipam"))
    first = conflist("net", "1.0.0", [ipam("cnipam", tmp_path / "a")])
    env.cni.add_network_list(first, rt())
    other_store = conflist("net", "1.0.0", [ipam("cnipam", tmp_path / "b")])
    with pytest.raises(CNIError) as err:
        env.cni.check_network_list(other_store, rt())
    assert err.value.plugin_type == "cnipam" and err.value.command == "check"
    assert str(err.value).startswith('plugin type="cnipam" name="net" failed (check): ')


def test_capability_args_reach_only_plugins_that_declare_them(env: Env, tmp_path: Path) -> None:
    env.link("cnipam", installed("cnipam"))
    env.script("rec")
    declared = {**ipam("cnipam", tmp_path / "s"), "capabilities": {"ips": True, "portMappings": False}}
    plain = {"type": "rec", "capabilities": {"portMappings": False}}
    net = conflist("net", "1.0.0", [declared, plain])
    caps = {"ips": ["10.77.0.42/24"], "portMappings": [{"hostPort": 80}], "bandwidth": {"rate": 1}}
    runtime = rt(capability_args=caps)
    result = env.cni.add_network_list(net, runtime)
    assert [ip["address"] for ip in result["ips"]] == ["10.77.0.42/24"]  # cnipam honoured runtimeConfig.ips
    (call,) = env.calls()
    assert "runtimeConfig" not in call["conf"] and call["conf"]["capabilities"] == {"portMappings": False}
    assert json.loads(env.cache_file("net", "c1").read_bytes())["capabilityArgs"] == caps
    assert env.cni.validate_network_list(net) == ["ips"]

    env.clear()
    only_rec = conflist(
        "n2", "1.0.0", [{"type": "rec", "capabilities": {"ips": True, "portMappings": True, "x": True}}]
    )
    env.cni.add_network_list(only_rec, runtime)
    assert env.calls()[0]["conf"]["runtimeConfig"] == {"ips": caps["ips"], "portMappings": caps["portMappings"]}
    assert env.cni.validate_network_list(only_rec) == ["ips", "portMappings", "x"]


# --------------------------------------------------------------------------------------
# chaining, order, environment


def test_prev_result_chains_in_order_and_del_runs_in_reverse(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        env.script(name)
    monkeypatch.setenv("LIBCNI_TEST_MARK", "passed-through")
    monkeypatch.setenv("CNI_ARGS", "stale=1")  # the caller's own CNI_* never leak through
    net = conflist("net", "1.0.0", [{"type": "a", "k": 1}, {"type": "b"}, {"type": "c"}])
    runtime = rt("c1", ifname="net0", args=(("A", "1"), ("B", "two")))
    result = env.cni.add_network_list(net, runtime)
    assert result == {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}

    adds = env.calls()
    assert [(c["plugin"], c["cmd"]) for c in adds] == [("a", "ADD"), ("b", "ADD"), ("c", "ADD")]
    assert "prevResult" not in adds[0]["conf"]
    assert adds[0]["conf"] == {"type": "a", "k": 1, "name": "net", "cniVersion": "1.0.0"}
    assert adds[1]["conf"]["prevResult"] == {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}]}
    assert adds[2]["conf"]["prevResult"]["interfaces"] == [{"name": "a"}, {"name": "b"}]
    assert adds[0]["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/c1",
        "CNI_IFNAME": "net0",
        "CNI_ARGS": "A=1;B=two",
        "CNI_PATH": f"{env.tmp / 'empty-dir'}:{env.bin}",
        "LIBCNI_TEST_MARK": "passed-through",
    }

    env.clear()
    env.cni.check_network_list(net, runtime)
    checks = env.calls()
    assert [(c["plugin"], c["cmd"]) for c in checks] == [("a", "CHECK"), ("b", "CHECK"), ("c", "CHECK")]
    assert all(c["conf"]["prevResult"] == result for c in checks)

    env.clear()
    env.cni.del_network_list(net, runtime)
    dels = env.calls()
    assert [(c["plugin"], c["cmd"]) for c in dels] == [("c", "DEL"), ("b", "DEL"), ("a", "DEL")]
    assert all(c["conf"]["prevResult"] == result for c in dels)
    assert dels[0]["env"]["CNI_ARGS"] == "A=1;B=two"

    env.clear()
    env.cni.del_network_list(net, runtime)  # nothing cached any more: DEL without prevResult
    assert [("prevResult" in c["conf"]) for c in env.calls()] == [False, False, False]


def test_results_are_returned_in_the_list_version(env: Env) -> None:
    """A plugin result without cniVersion is the config's version; one in another version is converted."""
    result = {
        "ips": [{"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    env.script("old")
    net = conflist("net", "0.2.0", [{"type": "old", "behave": {"result": {"cniVersion": "0.4.0", **result}}}])
    assert env.cni.add_network_list(net, rt()) == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
    }
    unversioned = conflist("net2", "0.4.0", [{"type": "old", "behave": {"result": result}}])
    assert env.cni.add_network_list(unversioned, rt()) == {"cniVersion": "0.4.0", **result}


def test_check_needs_0_4_0_and_honours_disable_check(env: Env) -> None:
    env.script("rec")
    for version in ("0.1.0", "0.2.0", "0.3.0", "0.3.1"):
        with pytest.raises(UnsupportedVersion, match="does not support the CHECK command") as err:
            env.cni.check_network_list(conflist("net", version, [{"type": "rec"}]), rt())
        assert err.value.code == 1
    env.cni.check_network_list(conflist("net", "1.0.0", [{"type": "rec"}], disableCheck=True), rt())
    assert env.calls() == []
    env.cni.check_network_list(conflist("net", "0.4.0", [{"type": "rec"}]), rt())
    (call,) = env.calls()
    assert call["cmd"] == "CHECK" and "prevResult" not in call["conf"]  # nothing cached: no prevResult


def test_names_are_validated_before_any_plugin_runs(env: Env) -> None:
    env.script("rec")
    net = conflist("net", "1.0.0", [{"type": "rec"}])
    for bad in (rt("-bad"), rt("c1", ifname="a/b"), rt("c1", ifname="x" * 16), rt("")):
        with pytest.raises(InvalidArguments) as err:
            env.cni.add_network_list(net, bad)
        assert err.value.code == 4
    with pytest.raises(InvalidArguments):
        env.cni.del_network_list(conflist("bad/name", "1.0.0", [{"type": "rec"}]), rt())
    assert env.calls() == []


# --------------------------------------------------------------------------------------
# errors


def test_a_plugin_error_keeps_code_msg_and_details(env: Env, tmp_path: Path) -> None:
    env.link("cnipam", installed("cnipam"))
    net = conflist("net", "1.0.0", [ipam("cnipam", tmp_path / "s", subnet="10.77.0.0/33")])
    with pytest.raises(CNIError) as err:
        env.cni.add_network_list(net, rt())
    assert err.value.code == 7
    assert "prefix length" in err.value.msg
    assert (err.value.plugin_type, err.value.command) == ("cnipam", "add")
    assert str(err.value) == f'plugin type="cnipam" name="net" failed (add): {err.value.msg}'
    assert not env.cache_file("net", "c1").exists()

    env.script("rec")
    failing = {"type": "rec", "behave": {"fail": {"DEL": {"code": 101, "msg": "boom", "details": "more"}}}}
    with pytest.raises(CNIError) as err:
        env.cni.del_network_list(conflist("net", "1.0.0", [failing]), rt())
    assert (err.value.code, err.value.msg, err.value.details) == (101, "boom", "more")
    assert str(err.value) == 'plugin type="rec" name="net" failed (delete): boom; more'


@pytest.mark.parametrize(
    ("behave", "message"),
    [
        ({"stderr": {"ADD": "it broke"}, "exit": {"ADD": 3}}, 'netplugin failed: "it broke": exit status 3'),
        ({"exit": {"ADD": 2}}, "netplugin failed with no error message: exit status 2"),
        (
            {"stdout": {"ADD": "not json"}, "exit": {"ADD": 1}},
            'netplugin failed but error parsing its diagnostic message "not json"',
        ),
        ({"stdout": {"ADD": "[1]"}}, "failed to unmarshal raw result: not a JSON object"),
        ({"result": {"cniVersion": "9.9.9"}}, 'unsupported CNI result version "9.9.9"'),
    ],
)
def test_failures_without_an_error_object(env: Env, behave: dict[str, Any], message: str) -> None:
    env.script("rec")
    with pytest.raises(CNIError) as err:
        env.cni.add_network_list(conflist("net", "1.0.0", [{"type": "rec", "behave": behave}]), rt())
    assert err.value.msg == message
    assert err.value.plugin_type == "rec"


def test_plugin_lookup(env: Env) -> None:
    (env.bin / "subdir").mkdir()
    env.script("rec")
    second = env.tmp / "bin2"
    second.mkdir()
    (second / "rec").write_text("#!/bin/sh\nexit 1\n")
    for missing, message in (
        ("nothere", 'failed to find plugin "nothere"'),
        ("subdir", "failed to find"),
        ("../bin/rec", "invalid plugin name"),
    ):
        with pytest.raises(PluginNotFound, match=message) as err:
            env.cni.add_network_list(conflist("net", "1.0.0", [{"type": missing}]), rt())
        assert str(err.value).startswith(f'plugin type="{missing}" name="net" failed (add): ')
    first_wins = CNI([str(env.bin), str(second)], cache_dir=str(env.cache))
    first_wins.add_network_list(conflist("net", "1.0.0", [{"type": "rec"}]), rt())
    assert [c["plugin"] for c in env.calls()] == ["rec"]


def test_a_hung_plugin_times_out(env: Env) -> None:
    env.script("rec")
    cni = CNI([str(env.bin)], cache_dir=str(env.cache), timeout=0.5)
    start = time.monotonic()
    with pytest.raises(PluginTimeout, match="timed out"):
        cni.add_network_list(conflist("net", "1.0.0", [{"type": "rec", "behave": {"sleep": 30}}]), rt())
    assert time.monotonic() - start < 5


def test_text_file_busy_is_retried(env: Env) -> None:
    """A plugin being written (ETXTBSY) is retried after 1 s, like libcni's RawExec."""
    path = env.script("rec")
    writer = open(path, "ab")  # noqa: SIM115 - held open on purpose, closed by the timer
    timer = threading.Timer(1.3, writer.close)
    timer.start()
    start = time.monotonic()
    try:
        env.cni.add_network_list(conflist("net", "1.0.0", [{"type": "rec"}]), rt())
    finally:
        timer.cancel()
        writer.close()
    assert time.monotonic() - start >= 1.3
    assert [c["cmd"] for c in env.calls()] == ["ADD"]


# --------------------------------------------------------------------------------------
# GC and STATUS


def test_gc_deletes_stale_cached_attachments_then_sends_gc(env: Env, tmp_path: Path) -> None:
    env.link("cnipam", installed("cnipam"))
    env.script("rec")
    data = tmp_path / "store"
    plugins = [ipam("cnipam", data, rangeStart="10.77.0.2", rangeEnd="10.77.0.5"), {"type": "rec"}]
    net = conflist("net", "1.1.0", plugins)
    for container in ("c1", "c2", "c3"):
        env.cni.add_network_list(net, rt(container))
    env.cni.add_network_list(conflist("other", "1.1.0", [{"type": "rec"}]), rt("c2"))
    # a lease the cache does not know about (another runtime's): only GC can free it
    CNI([str(env.bin)], cache_dir=str(tmp_path / "elsewhere")).add_network_list(net, rt("c4"))
    with pytest.raises(CNIError):
        env.cni.add_network_list(net, rt("full"))  # 4 addresses, 4 leases
    env.clear()

    env.cni.gc_network_list(net, [{"containerID": "c1", "ifname": "eth0"}])
    calls = [(c["plugin"], c["cmd"], c["env"]["CNI_CONTAINERID"]) for c in env.calls()]
    assert calls == [("rec", "DEL", "c2"), ("rec", "DEL", "c3"), ("rec", "GC", "")]
    gc = env.calls()[-1]["conf"]
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    assert gc["cni.dev/valid-attachments"] == valid and gc["cni.dev/attachments"] == valid
    assert (gc["name"], gc["cniVersion"]) == ("net", "1.1.0")
    assert env.calls()[0]["conf"]["prevResult"]["ips"]  # the stale DEL had the cached result
    assert [(a["networkName"], a["containerId"]) for a in env.cni.get_cached_attachments("")] == [
        ("net", "c1"),
        ("other", "c2"),
    ]
    assert [a["networkName"] for a in env.cni.get_cached_attachments("c2")] == ["other"]
    # c2, c3 (DEL) and c4 (GC) released: three new containers fit, a fourth does not
    for container in ("d1", "d2", "d3"):
        env.cni.add_network_list(net, rt(container))
    with pytest.raises(CNIError):
        env.cni.add_network_list(net, rt("d4"))

    env.clear()
    env.cni.gc_network_list(net, None)  # nothing valid: every cached attachment of net is DELed
    assert sorted(c["env"]["CNI_CONTAINERID"] for c in env.calls() if c["cmd"] == "DEL") == ["c1", "d1", "d2", "d3"]
    gc = env.calls()[-1]
    assert (
        gc["cmd"] == "GC" and "cni.dev/valid-attachments" not in gc["conf"] and "cni.dev/attachments" not in gc["conf"]
    )
    assert [a["networkName"] for a in env.cni.get_cached_attachments("")] == ["other"]


@pytest.mark.parametrize(("version", "top"), [("1.0.0", {}), ("1.1.0", {"disableGC": True})])
def test_gc_verb_only_for_1_1_0_and_not_when_disabled(env: Env, version: str, top: dict[str, Any]) -> None:
    env.script("rec")
    net = conflist("net", version, [{"type": "rec"}], **top)
    env.cni.add_network_list(net, rt("c1"))
    env.clear()
    env.cni.gc_network_list(net, [])
    assert [(c["cmd"], c["env"]["CNI_CONTAINERID"]) for c in env.calls()] == [("DEL", "c1")]


def test_gc_keeps_going_and_reports_every_failure(env: Env) -> None:
    env.script("rec")
    fail = {"code": 11, "msg": "later"}
    net = conflist("net", "1.1.0", [{"type": "rec", "behave": {"fail": {"DEL": fail, "GC": fail}}}])
    CNI([str(env.bin)], cache_dir=str(env.cache)).add_network_list(
        conflist("net", "1.1.0", [{"type": "rec"}]), rt("c1")
    )
    with pytest.raises(MultipleErrors) as err:
        env.cni.gc_network_list(net, [])
    assert len(err.value.errors) == 2 and err.value.code == 11
    assert "failed to delete stale attachment c1 eth0" in str(err.value.errors[0])
    assert err.value.errors[1].command == "gc"


def test_status(env: Env, tmp_path: Path) -> None:
    env.link("cnipam", installed("cnipam"))
    env.script("a")
    env.script("b")
    env.script("c")
    data = tmp_path / "store"
    net = conflist(
        "net",
        "1.1.0",
        [{"type": "a"}, ipam("cnipam", data, rangeStart="10.77.0.2", rangeEnd="10.77.0.2"), {"type": "c"}],
    )
    env.cni.get_status_network_list(net)
    assert [(c["plugin"], c["cmd"], c["conf"]["name"]) for c in env.calls()] == [
        ("a", "STATUS", "net"),
        ("c", "STATUS", "net"),
    ]
    env.cni.add_network_list(net, rt())
    env.clear()
    with pytest.raises(CNIError) as err:
        env.cni.get_status_network_list(net)  # the only address is leased: cannot service ADD
    assert err.value.code == 50 and err.value.command == "status" and err.value.plugin_type == "cnipam"
    assert [c["plugin"] for c in env.calls()] == ["a"]  # stopped at the first failure
    env.clear()
    env.cni.get_status_network_list(conflist("net", "1.0.0", [{"type": "a"}]))
    assert env.calls() == []  # no STATUS before 1.1.0


# --------------------------------------------------------------------------------------
# VERSION and validation


def test_version_info(env: Env) -> None:
    env.link("cnipam", installed("cnipam"))
    assert env.cni.get_version_info("cnipam") == list(SUPPORTED)
    env.script("ancient", version='print(json.dumps({"code": 4, "msg": "unknown CNI_COMMAND: VERSION"})); sys.exit(1)')
    assert env.cni.get_version_info("ancient") == ["0.1.0"]
    env.script("v020", version='print(json.dumps({"cniVersion": "0.2.0"}))')
    assert env.cni.get_version_info("v020") == ["0.1.0", "0.2.0"]
    env.script("broken", version='print(json.dumps({"cniVersion": "0.3.0"}))')
    with pytest.raises(CNIError, match="missing field supportedVersions"):
        env.cni.get_version_info("broken")
    call = env.calls()[0]
    assert (call["cmd"], call["conf"]) == ("VERSION", {"cniVersion": "1.1.0"})
    assert (call["env"]["CNI_NETNS"], call["env"]["CNI_IFNAME"], call["env"]["CNI_PATH"]) == ("dummy", "dummy", "dummy")


@needs_host_local
def test_validate_network_list_with_go_host_local(env: Env, tmp_path: Path) -> None:
    env.link("cnipam", installed("cnipam"))
    env.link("host-local", HOST_LOCAL)
    assert env.cni.get_version_info("host-local")[-1] in ("1.0.0", "1.1.0")
    plugins = [
        {**ipam("cnipam", tmp_path), "capabilities": {"ips": True}},
        {**ipam("host-local", tmp_path), "capabilities": {"b": True}},
    ]
    assert env.cni.validate_network_list(conflist("net", "1.0.0", plugins)) == ["b", "ips"]
    if "1.1.0" not in env.cni.get_version_info("host-local"):
        with pytest.raises(UnsupportedVersion, match='plugin host-local does not support config version "1.1.0"'):
            env.cni.validate_network_list(conflist("net", "1.1.0", plugins))
    with pytest.raises(PluginNotFound):
        env.cni.validate_network_list(conflist("net", "1.0.0", [{"type": "nothere"}]))


# --------------------------------------------------------------------------------------
# the cache, checked against Go's format
#
# The expected bytes are what Go libcni 1.2 and later writes, read off its source
# (libcni/api.go cacheAdd and cachedInfo, pkg/types/{020,040,100}/types.go, pkg/types/types.go
# at v1.2.0..v1.3.0): the cachedInfo struct's field order with omitempty, []byte config as
# padded standard base64, and the result read into the typed result of its own version,
# marshalled, read back into a map and marshalled again (so every key sorted, unknown keys
# gone, numbers as float64, and an empty `dns` dropped from a 1.x result by types100's
# MarshalJSON while 0.x results keep `"dns":{}`).

GO_CONFIG = b'{"cniVersion":"1.0.0","name":"gonet","plugins":[{"type":"rec"}]}'
GO_ENTRY = (  # after an ADD whose last plugin answered at 0.4.0
    '{"kind":"cniCacheV1","containerId":"gocontainer","config":"'
    + base64.b64encode(GO_CONFIG).decode()
    + '","ifName":"eth0","networkName":"gonet","netns":"/var/run/netns/go","cniArgs":[["IgnoreUnknown","1"]],'
    '"capabilityArgs":{"ips":["10.1.2.3/24"]},'
    '"result":{"cniVersion":"0.4.0","dns":{},"interfaces":[{"mac":"aa:bb:cc:dd:ee:ff","name":"eth0","sandbox":"/var/run/netns/go"}],'
    '"ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1","interface":0,"version":"4"}],"routes":[{"dst":"0.0.0.0/0"}]}}'
)
# What libcni 1.1 (podman 4.3's) wrote for a 1.0.0 result: no `netns`, and `"dns":{}`.
GO_11_ENTRY = (
    '{"kind":"cniCacheV1","containerId":"gocontainer","config":"'
    + base64.b64encode(GO_CONFIG).decode()
    + '","ifName":"eth0","networkName":"gonet",'
    '"result":{"cniVersion":"1.0.0","dns":{},"interfaces":[{"name":"eth0","sandbox":"/var/run/netns/go"}],'
    '"ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1","interface":0}]}}'
)


def go_cache_entry(env: Env, text: str) -> Path:
    """A cache entry Go libcni wrote for the gonet network, and the script plugin it names."""
    env.script("rec")
    path = env.cache_file("gonet", "gocontainer")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_a_go_written_cache_entry_feeds_our_del(env: Env) -> None:
    path = go_cache_entry(env, GO_ENTRY)
    net = network_list_from_bytes(GO_CONFIG)
    runtime = RuntimeConf("gocontainer", "/var/run/netns/go")
    expected = {
        "cniVersion": "1.0.0",
        "dns": {},
        "interfaces": [{"mac": "aa:bb:cc:dd:ee:ff", "name": "eth0", "sandbox": "/var/run/netns/go"}],
        "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert env.cni.get_cached_result(net, runtime) == expected  # converted 0.4.0 -> 1.0.0
    (attachment,) = env.cni.get_cached_attachments("gocontainer")
    assert attachment["capabilityArgs"] == {"ips": ["10.1.2.3/24"]} and attachment["cniArgs"] == [
        ["IgnoreUnknown", "1"]
    ]
    config, cached_rt = env.cni.get_cached_config(net, runtime) or (b"", runtime)
    assert config == GO_CONFIG and cached_rt.args == (("IgnoreUnknown", "1"),)
    env.cni.del_network_list(net, runtime)
    (call,) = env.calls()
    assert call["conf"]["prevResult"] == expected
    assert not path.exists()


def test_a_libcni_1_1_cache_entry_is_still_read(env: Env) -> None:
    path = go_cache_entry(env, GO_11_ENTRY)
    net = network_list_from_bytes(GO_CONFIG)
    runtime = RuntimeConf("gocontainer", "/var/run/netns/go")
    expected = json.loads(GO_11_ENTRY)["result"]
    assert env.cni.get_cached_result(net, runtime) == expected
    (attachment,) = env.cni.get_cached_attachments("gocontainer")
    assert "netns" not in attachment
    env.cni.del_network_list(net, runtime)
    (call,) = env.calls()
    assert call["conf"]["prevResult"] == expected and call["env"]["CNI_NETNS"] == "/var/run/netns/go"
    assert not path.exists()


def test_our_cache_entry_is_byte_identical_to_gos(env: Env) -> None:
    env.script("rec")
    go_result = json.loads(GO_ENTRY)["result"]
    plugin = {"type": "rec", "behave": {"result": {**go_result, "unknown": [1]}}}  # Go's struct has no `unknown`
    net = network_list_from_bytes(json.dumps({"cniVersion": "0.4.0", "name": "gonet", "plugins": [plugin]}).encode())
    runtime = RuntimeConf(
        "gocontainer", "/var/run/netns/go", args=(("IgnoreUnknown", "1"),), capability_args={"ips": ["10.1.2.3/24"]}
    )
    env.cni.add_network_list(net, runtime)
    expected = GO_ENTRY.replace(base64.b64encode(GO_CONFIG).decode(), base64.b64encode(net.raw).decode())
    assert env.cache_file("gonet", "gocontainer").read_text() == expected

    # no netns or args: Go's omitempty drops the keys; capability args are a map of anything,
    # so Go's escaping and number formats show there
    odd = {"x": ["<&>", 1.0, 1e21, 2.5e-7, "é\u2028"]}
    bare = RuntimeConf("c2", "", capability_args=odd)
    result = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.1/8"}]}
    net2 = conflist("n2", "0.4.0", [{"type": "rec", "behave": {"result": result}}])
    env.cni.add_network_list(net2, bare)
    assert (
        env.cache_file("n2", "c2").read_bytes()
        == (
            '{"kind":"cniCacheV1","containerId":"c2","config":"'
            + base64.b64encode(net2.raw).decode()
            + '","ifName":"eth0",'
            '"networkName":"n2","capabilityArgs":{"x":["\\u003c\\u0026\\u003e",1,1e+21,2.5e-7,"é\\u2028"]},'
            '"result":{"cniVersion":"0.4.0","dns":{},"ips":[{"address":"10.0.0.1/8","version":"4"}]}}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("answer", "cached"),
    [
        # an empty dns, given or not, is left out of a 1.x result (libcni 1.2+); a set one is kept
        ({"ips": [{"address": "10.0.0.2/24"}], "dns": {}}, '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}'),
        (
            {"ips": [{"address": "10.0.0.2/24"}], "dns": {"nameservers": []}},
            '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}',
        ),
        (
            {"dns": {"nameservers": ["10.0.0.1"], "search": []}, "ips": [{"address": "10.0.0.2/24"}]},
            '{"cniVersion":"1.0.0","dns":{"nameservers":["10.0.0.1"]},"ips":[{"address":"10.0.0.2/24"}]}',
        ),
        # addresses as net.IP prints them; empty lists, "" and a 0 mtu omitted, a 0 table and interface kept
        (
            {
                "interfaces": [{"name": "eth0", "mac": "", "mtu": 0, "socketPath": "/s", "other": 1}, {"mac": "m"}],
                "ips": [{"address": "2001:DB8:0:0::0:5/64", "gateway": "2001:db8::0001", "interface": 0}],
                "routes": [
                    {"dst": "::/0", "gw": "2001:db8::1", "mtu": 0, "table": 0, "advmss": 1400},
                    {"dst": "::ffff:10.0.0.0/104"},
                ],
            },
            '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","socketPath":"/s"},{"mac":"m","name":""}],'
            '"ips":[{"address":"2001:db8::5/64","gateway":"2001:db8::1","interface":0}],'
            '"routes":[{"advmss":1400,"dst":"::/0","gw":"2001:db8::1","table":0},{"dst":"10.0.0.0/8"}]}',
        ),
        ({"ips": [], "routes": [], "interfaces": []}, '{"cniVersion":"1.0.0"}'),
    ],
)
def test_a_1x_result_is_cached_as_gos_typed_result_writes_it(env: Env, answer: dict[str, Any], cached: str) -> None:
    env.script("rec")
    net = conflist("n", "1.0.0", [{"type": "rec", "behave": {"result": {"cniVersion": "1.0.0", **answer}}}])
    assert env.cni.add_network_list(net, rt()) == {
        "cniVersion": "1.0.0",
        **answer,
    }  # the caller gets what the plugin said
    entry = env.cache_file("n", "c1").read_text()
    assert entry.endswith(f',"result":{cached}}}')


def test_the_cache_keeps_the_last_plugins_own_version(env: Env) -> None:
    """libcni caches the result as the plugin gave it; both sides convert when reading."""
    env.script("rec")
    answer = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}
    net = conflist("n", "1.0.0", [{"type": "rec", "behave": {"result": answer}}])
    assert env.cni.add_network_list(net, rt()) == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    assert json.loads(env.cache_file("n", "c1").read_text())["result"] == {**answer, "dns": {}}
    assert env.cni.get_cached_result(net, rt()) == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.2/24"}],
        "dns": {},
    }


def test_a_legacy_bare_result_cache_is_read(env: Env) -> None:
    env.script("rec")
    net = conflist("net", "1.0.0", [{"type": "rec"}])
    path = env.cache_file("net", "c1")
    path.parent.mkdir(parents=True)
    path.write_text('{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}')
    assert env.cni.get_cached_result(net, rt()) == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    assert env.cni.get_cached_attachments("") == []  # not a cniCacheV1 entry: not an attachment


@pytest.mark.parametrize("content", ["{torn", '{"kind":"cniCacheV1","result":{"cniVersion":"7.0.0"}}', "[]"])
def test_an_unreadable_cache_is_dropped_on_del(env: Env, content: str) -> None:
    env.script("rec")
    net = conflist("net", "1.0.0", [{"type": "rec"}])
    path = env.cache_file("net", "c1")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CacheError):
        env.cni.get_cached_result(net, rt())
    with pytest.raises(CacheError):
        env.cni.check_network_list(net, rt())
    env.cni.del_network_list(net, rt())
    (call,) = env.calls()
    assert call["cmd"] == "DEL" and "prevResult" not in call["conf"]
    assert not path.exists()
