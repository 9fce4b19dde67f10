"""The README's operator sections, run: every `cnipamctl` command and flag its tables list
and every `cnipamctl` line of its examples, against real stores.

The README is read, not copied: its command table, its store-option table and its shell
examples are extracted, and each entry must have a concrete run below (`RUNS`,
`EXAMPLES`): an entry added to the README without one, or a run whose entry left the
README, fails the test, and so does a run whose status is not the one the README implies.
Each run is a fresh world (stores the plugin and the Docker driver filled, the files the
commands read), so runs never depend on each other. The daemons' flag tables are checked
against their `--help`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.store.etcd import EtcdStore
from cnipam.store.opening import open_etcd
from cnipam.store.settings import EtcdSettings
from tests.support.ctl_calls import BASE_ENV, CTL, PLUGIN, SCRIPTS
from tests.support.fixture_files import FIXTURES

README = Path(__file__).resolve().parents[2] / "README.md"
NOW, OLD = "boot-now", "boot-old"
NET1: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "net1",
    "ipam": {"type": "cnipam", "ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "fd00::/64"},
}


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_commands(text: str, header: str) -> list[str]:
    """The code spans of the first column of the table under `header`."""
    lines = text[text.index(header) :].splitlines()[2:]
    found = []
    for line in lines:
        if not line.startswith("|"):
            break
        first = re.split(r"(?<!\\)\|", line)[1]
        found += [span.replace("\\|", "|") for span in re.findall(r"`([^`]+)`", first)]
    return found


def example_lines(text: str) -> list[str]:
    """The `cnipamctl` lines of the shell examples, comments dropped."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("cnipamctl"):
                found.append(command)
    return found


def flags(usage: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]*", usage))


# -- the world each run gets -------------------------------------------------------------------------


@dataclass
class World:
    folder: Path
    db: Path
    env: dict[str, str]
    files: dict[str, str]

    def run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        words = [self.files.get(word, word) for word in args]
        done = subprocess.run(
            [CTL, *words], input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, text=True, env=self.env, cwd=self.folder, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done


def plugin_add(config: dict[str, Any], container: str, db: Path, boot: str) -> None:
    env = {**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
           "IPAM_DB_PATH": str(db), "CNIPAM_BOOT_ID": boot}  # fmt: skip
    done = subprocess.run([PLUGIN], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stdout


def earlier_boot_lease(db: Path, container: str) -> None:
    """A lease of the boot before, in a store no plugin wrote since the reboot (a plugin's
    write would repair it away): written by a store that repairs nothing (boot "")."""
    from cnipam.store.sqlite import SQLiteStore

    store = SQLiteStore(str(db))
    owner = Owner.for_request(None, "net1", container, "eth0", "/var/run/netns/gone", OLD)
    store.allocate(owner, parse_ecs(NET1["ipam"]).pools)
    store.close()


def docker_pools(db: Path) -> None:
    """What dockerd's calls leave: a network with --ip-range, --gateway and an aux address,
    a container `web-1`, as in the Docker section's example."""
    from cnipam.docker.driver import Driver
    from cnipam.docker.settings import load
    from cnipam.store.sqlite import SQLiteStore

    store = SQLiteStore(str(db))
    driver = Driver(store, load([], {}))
    pool = driver.handle("/IpamDriver.RequestPool", b'{"Pool":"10.9.0.0/24","SubPool":"10.9.0.128/25"}')["PoolID"]
    for body in (
        {"Address": "10.9.0.254", "Options": {"RequestAddressType": "com.docker.network.gateway"}},
        {"Address": "10.9.0.9", "Options": None},
        {"Address": "10.9.0.77", "Options": {"com.docker.network.endpoint.macaddress": "02:42:0a:09:00:4d",
                                             "com.docker.network.endpoint.name": "web-1"}},
    ):  # fmt: skip
        driver.handle("/IpamDriver.RequestAddress", json.dumps({"PoolID": pool, **body}).encode())
    store.close()


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    db = tmp_path / "store.db"
    for container in ("ctr-a", "ctr-b"):
        plugin_add(NET1, container, db, NOW)
    plugin_add({**NET1, "name": "ecs-bridge"} | {"ipam": {"type": "ecs-ipam", "id": "task-1",
                                                          "ipv4-subnet": "10.0.0.0/24"}}, "ctr-d", db, NOW)  # fmt: skip
    earlier_boot_lease(db, "0b6f1a2c")
    docker_pools(db)
    env = {**BASE_ENV, "IPAM_DB_PATH": str(db), "CNIPAM_BOOT_ID": NOW}
    files: dict[str, str] = {"DB": str(db)}
    (tmp_path / "net1.conf").write_text(json.dumps({**NET1, "ipam": {**NET1["ipam"], "dataDir": str(tmp_path)}}))
    shutil.copyfile(db, tmp_path / "cnipam.db")  # the dataDir's store, for --config
    files["CONF"] = str(tmp_path / "net1.conf")
    (tmp_path / "running.json").write_text(json.dumps([{"containerID": "ctr-a", "ifname": "eth0"}]))
    files["VALID"] = str(tmp_path / "running.json")
    exported = subprocess.run([CTL, "--db", str(db), "export"], capture_output=True, text=True, env=BASE_ENV)
    (tmp_path / "backup.json").write_text(exported.stdout)
    files["BACKUP"] = str(tmp_path / "backup.json")
    files["NEW_DB"], files["OTHER_DB"] = str(tmp_path / "new" / "ipam.db"), str(tmp_path / "other.db")
    files["REPORT"] = str(tmp_path / "report.json")
    files["BIN"] = str(tmp_path / "bin")
    files["FOLDER"] = str(tmp_path)
    files["RECOVERED"] = str(tmp_path / "recovered.db")
    from tests.ctl.test_cnipamctl import host_local_fixture

    _, data_dir, conf = host_local_fixture(tmp_path, "v4")
    files["HL_DIR"], files["HL_CONF"] = str(data_dir), str(conf)
    manifest = json.loads((FIXTURES / "ecs-ipam-boltdb" / "ipv4-basic.json").read_text())
    shutil.copyfile(FIXTURES / "ecs-ipam-boltdb" / manifest["db_file"], tmp_path / "eni-ipam.db")
    (tmp_path / "ecs.json").write_text(json.dumps(manifest["config_base"]))
    files["ECS_DB"], files["ECS_CONF"] = str(tmp_path / "eni-ipam.db"), str(tmp_path / "ecs.json")
    from tests.migration.test_migrate_gipam import LEASE_FILE

    (tmp_path / "lease.json").write_text(json.dumps(LEASE_FILE))
    files["GIPAM"] = str(tmp_path / "lease.json")
    files["STORE_JSON"] = json.dumps({"type": "sqlite", "path": str(db)})
    if request.node.get_closest_marker("etcd"):
        endpoint = request.getfixturevalue("etcd_endpoint")
        prefix = request.getfixturevalue("etcd_prefix").decode()
        node = open_etcd(EtcdSettings((endpoint,), prefix, "node-3", lock_dir=str(tmp_path / "node-3")), 5.0)
        assert isinstance(node, EtcdStore)
        node.allocate(Owner.for_request(None, "n", "c1", "eth0"), parse_ecs({"ipv4-subnet": "10.60.0.0/16"}).pools)
        node.client.put(node.keys.host_seen("node-3"), b"1.0")  # it last wrote long ago: it is dead
        node.close()
        etcd = json.dumps({"type": "etcd", "endpoints": [endpoint], "prefix": prefix, "host": "ops",
                           "lockDir": str(tmp_path / "ops")})  # fmt: skip
        env["CNIPAM_STORE"] = files["STORE_JSON"] = etcd
        files["DB"] = ""
    yield World(tmp_path, db, env, files)


# -- the command table ----------------------------------------------------------------------------

# For each usage of the README's table: concrete runs (their words, from `World.files` where
# upper case) with the status the README implies; together they use every flag of the usage.
# A run's list may start with set-up runs (status None: whatever they answer).
Run = tuple[list[str], int | None]
RUNS: dict[str, list[Run]] = {
    "leases [--network N] [--subnet CIDR] [--owner ID|HANDLE] [--container ID] [--limit N] [--after ADDRESS]"
    " [--json]": [
        (["leases"], 0),
        (["leases", "--network", "net1", "--subnet", "10.0.0.0/24", "--container", "ctr-a", "--json"], 0),
        (["leases", "--owner", "task-1", "--limit", "1", "--after", "10.0.0.1", "--json"], 0),
    ],
    "show ADDRESS|OWNER [--json]": [(["show", "10.0.0.2"], 0), (["show", "10.0.0.2/24", "--json"], 0),
                                    (["show", "web-1"], 0)],
    "history ADDRESS|CONTAINER|OWNER [--at T] [--since T] [--until T] [--json]": [
        (["history", "10.0.0.2"], 0), (["history", "10.0.0.2", "--at", "now", "--json"], 0),
        (["history", "ctr-a", "--since", "1h ago", "--until", "now"], 0),
        (["history", "10.0.0.2", "--at", "yesterday"], 1),  # not a moment it reads
    ],
    "history-retention [--max-age SPAN] [--max-records N] [--json]": [
        (["history-retention"], 0), (["history-retention", "--max-age", "7d", "--max-records", "20000", "--json"], 0),
    ],
    "usage [--json]": [(["usage"], 0), (["usage", "--json", "--config", "CONF"], 0)],
    "metrics [--textfile DIR]": [(["metrics"], 0), (["metrics", "--textfile", "FOLDER", "--config", "CONF"], 0)],
    "pools [--json]": [(["pools"], 0), (["pools", "--json"], 0)],
    "release ADDRESS|OWNER [--yes] [--force] [--gateway] [--json]": [
        (["release", "0b6f1a2c", "--yes"], 0),  # of the boot before: provably gone
        (["release", "ctr-a", "--yes"], 1),  # this boot's: may still run
        (["release", "ctr-a", "--yes", "--force", "--json"], 0),
        (["release", "10.9.0.254", "--gateway", "--yes", "--force"], 0),  # the Docker network's gateway
    ],
    "release --from-report FILE [--yes] [--force] [--json]": [
        (["check", "--report", "REPORT"], None),
        (["release", "--from-report", "REPORT", "--yes", "--force", "--json"], 0),
    ],
    "gc --valid FILE --network N [--grace D] [--apply] [--json]": [
        (["gc", "--valid", "VALID", "--network", "net1"], 0),
        (["gc", "--valid", "VALID", "--network", "net1", "--grace", "0", "--apply", "--json"], 0),
    ],
    "gc --previous-boots [--apply] [--json]": [(["gc", "--previous-boots"], 0),
                                               (["gc", "--previous-boots", "--apply", "--json"], 0)],
    "export [FILE]": [(["export"], 0), (["export", "BACKUP"], 0)],
    "import FILE|- [--json]": [
        (["--db", "NEW_DB", "import", "BACKUP"], 0),
        (["--db", "OTHER_DB", "import", "-", "--json"], 0),  # the export on stdin
        (["import", "BACKUP", "--json"], 1),  # into the store it came from: every row conflicts
    ],
    "check [--json]": [(["check"], 0), (["check", "--json"], 0)],
    "check --report FILE [--subnet CIDR]... [--json]": [
        (["check", "--report", "REPORT", "--config", "CONF", "--subnet", "10.9.0.0/24", "--json"], 1),  # findings
    ],
    "repair [--apply] [--json]": [(["repair"], 0), (["repair", "--apply", "--json"], 0)],
    "recover SRC --to NEW [--json]": [(["recover", "DB", "--to", "RECOVERED", "--json"], 0)],
    "migrate host-local DIR --config CONF [--network N] [--dry-run] [--skip-refused] [--json]": [
        (["migrate", "host-local", "HL_DIR", "--config", "HL_CONF", "--network", "net1", "--dry-run",
          "--skip-refused", "--json"], 0),
        (["migrate", "host-local", "HL_DIR", "--config", "HL_CONF"], 0),
    ],
    "migrate ecs-boltdb FILE --config CONF [--network N] [--dry-run] [--skip-refused] [--json]": [
        (["--db", "NEW_DB", "migrate", "ecs-boltdb", "ECS_DB", "--config", "ECS_CONF", "--network", "ecs",
          "--dry-run", "--skip-refused", "--json"], 0),
        (["--db", "NEW_DB", "migrate", "ecs-boltdb", "ECS_DB", "--config", "ECS_CONF"], 0),
    ],
    "migrate gipam FILE [--dry-run] [--skip-refused] [--json]": [
        (["migrate", "gipam", "GIPAM", "--dry-run", "--skip-refused", "--json"], 0),
        (["--db", "NEW_DB", "migrate", "gipam", "GIPAM"], 0),
    ],
    "hosts list [--json]": [(["hosts", "list"], 0), (["hosts", "list", "--json"], 0)],
    "hosts blocks [--host HOST] [--json]": [(["hosts", "blocks", "--host", "node-3", "--json"], 0)],
    "hosts release HOST [--grace D] [--yes] [--json]": [
        (["hosts", "release", "node-3", "--grace", "1h", "--yes", "--json"], 0),
    ],
    "install-plugin [cnipam|ecs-ipam]… [--bin-dir DIR] [--force]": [
        (["install-plugin", "cnipam", "ecs-ipam", "--bin-dir", "BIN"], 0),
        (["install-plugin", "--bin-dir", "BIN", "--force"], 0),
    ],
    # the store options
    "--db PATH": [(["--db", "DB", "leases"], 0), (["leases", "--db", "DB"], 0)],
    "--store JSON": [(["--store", "STORE_JSON", "leases"], 0), (["leases", "--store", "STORE_JSON"], 0)],
    "--config FILE": [(["--config", "CONF", "leases"], 0), (["leases", "--config", "CONF"], 0)],
}  # fmt: skip
ETCD = {"hosts list [--json]", "hosts blocks [--host HOST] [--json]", "hosts release HOST [--grace D] [--yes] [--json]"}


def readme_usages() -> list[str]:
    text = section("cnipamctl: the operator's command line")
    return table_commands(text, "| command | what it does |") + table_commands(text, "| option | the store |")


def test_every_command_of_the_readme_has_its_runs() -> None:
    assert sorted(readme_usages()) == sorted(RUNS)


@pytest.mark.parametrize(
    "usage", [pytest.param(usage, marks=[pytest.mark.etcd] if usage in ETCD else []) for usage in RUNS]
)
def test_the_readme_command_runs_with_every_flag(world: World, usage: str) -> None:
    runs = RUNS[usage]
    used = set().union(*(flags(" ".join(args)) for args, _ in runs))
    assert flags(usage) <= used, f"no run uses {sorted(flags(usage) - used)}"
    for args, status in runs:
        done = world.run(args, Path(world.files["BACKUP"]).read_text() if "-" in args else None)
        if status is not None:
            assert done.returncode == status, (args, done.stdout[-2000:], done.stderr)
            if status:
                assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("cnipamctl: "), done.stderr


@pytest.mark.parametrize("usage", [usage for usage in RUNS if not usage.startswith("--")])
def test_the_readme_flags_are_in_the_commands_help(usage: str) -> None:
    path = [word for word in usage.split() if re.fullmatch(r"[a-z][a-z-]*", word)][:2]
    if path[0] not in ("migrate", "hosts"):
        path = path[:1]
    text = subprocess.run([CTL, *path, "--help"], capture_output=True, text=True, env=BASE_ENV).stdout
    for flag in flags(usage):
        assert re.search(rf"{flag}\b", text), f"`cnipamctl {' '.join(path)} --help` lacks {flag}"


# -- the examples -------------------------------------------------------------------------------------

# Each `cnipamctl` line of the README's shell examples (operator sections), as it would run
# here: its paths mapped to the world's files. Status 0 unless said.
EXAMPLES: dict[str, list[Run]] = {
    "cnipamctl leases --network ecs-bridge": [(["leases", "--network", "ecs-bridge"], 0)],
    "cnipamctl leases --limit 1000 --json": [(["leases", "--limit", "1000", "--json"], 0)],
    "cnipamctl show 10.0.0.7": [(["show", "10.0.0.3"], 0)],
    "cnipamctl usage --config /etc/cni/net.d/10-bridge.conflist": [(["usage", "--config", "CONF"], 0)],
    "cnipamctl release 0b6f1a2c --yes --force": [(["release", "0b6f1a2c", "--yes", "--force"], 0)],
    "cnipamctl gc --valid running.json --network net1": [(["gc", "--valid", "VALID", "--network", "net1"], 0)],
    "cnipamctl repair && cnipamctl repair --apply": [(["repair"], 0), (["repair", "--apply"], 0)],
    "cnipamctl export backup.json && cnipamctl --db /new/ipam.db import backup.json": [
        (["export", "BACKUP"], 0), (["--db", "NEW_DB", "import", "BACKUP"], 0),
    ],
    "cnipamctl migrate host-local /var/lib/cni/networks --config /etc/cni/net.d/10-net1.conf --dry-run": [
        (["migrate", "host-local", "HL_DIR", "--config", "HL_CONF", "--dry-run"], 0),
    ],
    "cnipamctl --db /data/cnipam.db migrate ecs-boltdb /data/eni-ipam.db --config ecs.json": [
        (["--db", "NEW_DB", "migrate", "ecs-boltdb", "ECS_DB", "--config", "ECS_CONF"], 0),
    ],
    'cnipamctl --store "$CNIPAM_STORE" hosts list': [(["--store", "STORE_JSON", "hosts", "list"], 0)],
    'cnipamctl --store "$CNIPAM_STORE" hosts blocks --host node-3': [
        (["--store", "STORE_JSON", "hosts", "blocks", "--host", "node-3"], 0),
    ],
    'cnipamctl --store "$CNIPAM_STORE" hosts release node-3 --grace 1h --yes': [
        (["--store", "STORE_JSON", "hosts", "release", "node-3", "--grace", "1h", "--yes"], 0),
    ],
    "cnipamctl check": [(["check"], 0)],
    "cnipamctl recover /data/eni-ipam.db --to /data/eni-ipam.recovered.db": [
        (["recover", "DB", "--to", "RECOVERED"], 0),
    ],
    "cnipamctl --db /data/eni-ipam.recovered.db check": [
        (["recover", "DB", "--to", "RECOVERED"], None), (["--db", "RECOVERED", "check"], 0),
    ],
    "cnipamctl leases --network cnipam-recovered": [(["leases", "--network", "cnipam-recovered"], 0)],
    "cnipamctl install-plugin": [(["install-plugin", "--bin-dir", "BIN"], 0)],
    "cnipamctl install-plugin cnipam --bin-dir DIR": [(["install-plugin", "cnipam", "--bin-dir", "BIN"], 0)],
    "cnipamctl install-plugin ecs-ipam --bin-dir FOLDER --force": [
        (["install-plugin", "ecs-ipam", "--bin-dir", "BIN", "--force"], 0),
    ],
    "cnipamctl --db NEW migrate ecs-boltdb /data/eni-ipam.db --config ecs.json": [
        (["--db", "NEW_DB", "migrate", "ecs-boltdb", "ECS_DB", "--config", "ECS_CONF"], 0),
    ],
    "cnipamctl --db STORE migrate gipam lease.json": [(["--db", "NEW_DB", "migrate", "gipam", "GIPAM"], 0)],
    "cnipamctl --db x.db leases": [(["--db", "DB", "leases"], 0)],
    "cnipamctl leases --db x.db": [(["leases", "--db", "DB"], 0)],
}  # fmt: skip
OPERATOR_SECTIONS = (
    "Using it as a CNI plugin", "The life of an address after day one", "Running under real runtimes",
    "cnipamctl: the operator's command line", "The store", "Cluster mode: one address space on etcd",
    "cnipam-docker: a Docker remote IPAM driver",
)  # fmt: skip


def readme_examples() -> list[str]:
    lines = [line for title in OPERATOR_SECTIONS for line in example_lines(section(title))]
    inline = re.findall(r"`(cnipamctl [^`]*)`", README.read_text())  # in the prose: those naming a store or folder
    lines += [span for span in inline if "--db" in span.split() or "--bin-dir" in span.split()]
    return sorted(set(lines))


def test_every_example_of_the_readme_has_its_run() -> None:
    assert sorted(set(readme_examples()) - set(EXAMPLES)) == []
    assert sorted(set(EXAMPLES) - set(readme_examples())) == []


@pytest.mark.parametrize(
    "line", [pytest.param(line, marks=[pytest.mark.etcd] if "CNIPAM_STORE" in line else []) for line in EXAMPLES]
)
def test_the_readme_example_runs(world: World, line: str) -> None:
    for args, status in EXAMPLES[line]:
        done = world.run(args)
        if status is not None:
            assert done.returncode == status, (line, args, done.stdout[-2000:], done.stderr)


def test_the_install_recipe_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """The README's install: a venv of its own (Debian's system pip refuses), then
    install-plugin from it (into a folder of the test's, not /opt/cni/bin)."""
    block = re.search(r"```sh\n(python3 -m venv .*?)```", section("Using it as a CNI plugin"), re.S)
    assert block is not None
    first = block.group(1).splitlines()[0].split("#")[0].strip()
    assert first == "python3 -m venv /opt/cnipam && /opt/cnipam/bin/pip install ."
    venv = tmp_path / "venv"
    root = README.parent
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(root)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    linked = subprocess.run([str(venv / "bin" / "cnipamctl"), "install-plugin", "--bin-dir", str(tmp_path / "bin")],
                            capture_output=True, text=True)  # fmt: skip
    assert linked.returncode == 0, linked.stderr
    assert (tmp_path / "bin" / "cnipam").resolve() == (venv / "bin" / "cnipam").resolve()


# -- the daemons' flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "header", "program"),
    [("cnipam-docker: a Docker remote IPAM driver", "| flag (gipam's spelling also works) |", "cnipam-docker")],
)
def test_the_daemons_flag_tables_match_their_help(title: str, header: str, program: str) -> None:
    text = subprocess.run([f"{SCRIPTS}/{program}", "--help"], capture_output=True, text=True).stdout
    listed = {flag for usage in table_commands(section(title), header) for flag in re.findall(r"-{1,2}[a-z][a-z0-9-]*",
                                                                                               usage)}  # fmt: skip
    assert listed and all(re.search(rf"(^|[\s,]){re.escape(flag)}\b", text, re.M) for flag in listed), listed
    agent = subprocess.run([f"{SCRIPTS}/cnipamd", "--help"], capture_output=True, text=True).stdout
    block = re.search(r"```sh\n(cnipamd .*?)```", section("cnipamd: the optional node agent"), re.S)
    assert block is not None
    for flag in re.findall(r"--[a-z][a-z-]*", block.group(1)):
        assert flag in agent, f"cnipamd --help lacks {flag}"
