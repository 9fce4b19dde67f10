"""`cnipamctl history` as an operator uses it after the fact: an address from a log line
and a moment, in any of the forms a log or a person writes it, resolved to the container
that held it then; every address a container had; the retention; an export without
history. The installed plugin makes the changes, with the real clock; on both engines,
thousands of changes made through the store with a clock of the test's. The moments
themselves: ctl/moments.py, tested first."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.ecs_config import parse_ecs
from cnipam.core.leases import Owner
from cnipam.ctl.failures import BadInput
from cnipam.ctl.moments import parse_moment, parse_span
from tests.support.ctl_calls import call, ok, plugin, refused
from tests.support.etcd import store_object
from tests.support.store_engines import ENGINES

NOW = 1_741_960_927.25  # 2025-03-14T14:02:07.25Z
NET: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "logs",
    "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.44.0.0/24"},
}


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2025-03-14T14:02:07Z", NOW - 0.25),
        ("2025-03-14T14:02:07.25Z", NOW),
        ("2025-03-14t15:02:07.250+01:00", NOW),
        ("2025-03-14 14:02:07,25 +0000", NOW),  # a space for the T, a comma before the fraction (Python's logging)
        ("2025-03-14T14:02Z", NOW - 7.25),
        ("2025-03-14Z", NOW - (14 * 3600 + 2 * 60 + 7.25)),
        ("now", NOW),
        ("2h ago", NOW - 7200),
        ("1d12h ago", NOW - 1.5 * 86400),
        ("90s ago", NOW - 90),
        ("1w ago", NOW - 7 * 86400),
        ("@1741960927.25", NOW),
    ],
)
def test_moments_as_logs_and_people_write_them(text: str, moment: float) -> None:
    assert parse_moment(text, NOW, "--at") == pytest.approx(moment)


def test_a_moment_without_an_offset_is_local_time() -> None:
    local = datetime(2025, 3, 14, 14, 2, 7).timestamp()
    assert parse_moment("2025-03-14T14:02:07", NOW, "--at") == local


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01T00:00:00Z", "2025-03-14T14:02:07+5", "2h", "-2h ago", "@x"])
def test_a_moment_that_cannot_be_read_is_refused_by_name(text: str) -> None:
    with pytest.raises(BadInput, match="--at"):
        parse_moment(text, NOW, "--at")


def test_spans_count_days_and_weeks() -> None:
    assert parse_span("30d", "--max-age") == 30 * 86400
    assert parse_span("2w3d", "--max-age") == 17 * 86400
    assert parse_span("1d12h30m", "--max-age") == 86400 + 12 * 3600 + 1800
    for bad in ("", "d", "3 days", "-1d"):
        with pytest.raises(BadInput, match="--max-age"):
            parse_span(bad, "--max-age")


# -- the command, on a store the plugin filled -----------------------------------------------


def at(address: str) -> dict[str, Any]:
    return {**NET, "ipam": {**NET["ipam"], "ipv4-address": f"{address}/24"}}


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_an_address_from_a_log_line_resolves_to_the_container_that_held_it(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    plugin("ADD", at("10.44.0.7"), "web-1", db=db)
    time.sleep(0.05)
    seen_web = time.time()  # a flow log line about 10.44.0.7, while web-1 held it
    time.sleep(0.05)
    plugin("DEL", at("10.44.0.7"), "web-1", db=db)
    time.sleep(0.05)
    between = time.time()
    time.sleep(0.05)
    plugin("ADD", at("10.44.0.7"), "db-1", db=db)  # the address, reused
    plugin("ADD", NET, "other", db=db)

    def held(*when: str) -> list[str]:
        return [row["container_id"] for row in ok("--db", str(db), "history", "10.44.0.7", *when, "--json").json()]

    assert held("--at", iso(seen_web)) == ["web-1"]
    assert held("--at", f"@{seen_web}") == ["web-1"]
    nobody_json = call("--db", str(db), "history", "10.44.0.7", "--at", iso(between), "--json")
    assert nobody_json.code == 1 and nobody_json.out == "" and "names no holder of 10.44.0.7 at" in nobody_json.err
    assert held("--at", "now") == ["db-1"]
    assert held() == ["web-1", "db-1"]
    assert held("--since", iso(between)) == ["db-1"]
    assert held("--until", iso(between)) == ["web-1"]
    story = ok("--db", str(db), "history", "10.44.0.7", "--json").json()
    assert [(row["started"], row["ended"], row["network"], row["ifname"]) for row in story] == [
        ("allocated", "released", "logs", "eth0"),
        ("allocated", "held", "logs", "eth0"),
    ]
    assert story[0]["held_from"] < seen_web < story[0]["held_to"] < between < story[1]["held_from"]
    table = ok("--db", str(db), "history", "10.44.0.7", "--at", iso(seen_web)).out
    assert "web-1" in table and "allocated -> released" in table and "db-1" not in table
    nobody = call("--db", str(db), "history", "10.44.0.7", "--at", iso(between))
    assert nobody.code == 1 and nobody.out == "" and "names no holder of 10.44.0.7 at" in nobody.err  # as `show`
    # Every address a container had, by its container id (or its handle).
    assert [row["ip"] for row in ok("--db", str(db), "history", "web-1", "--json").json()] == ["10.44.0.7"]
    assert [row["ip"] for row in ok("--db", str(db), "history", "cni:logs/db-1/eth0", "--json").json()] == ["10.44.0.7"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["10.44.0.7", "--at", "yesterday"], "--at 'yesterday'"),
        (["10.44.0.7", "--at", "now", "--since", "1h ago"], "--at is one moment"),
        (["10.44.0.7", "--since", "now", "--until", "1h ago"], "is after --until"),
        (["10.44.0.999"], "is not an IP address"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_1(tmp_path: Path, args: list[str], says: str) -> None:
    db = tmp_path / "ipam.db"
    plugin("ADD", NET, "a", db=db)
    refused(call("--db", str(db), "history", *args), says=says)


def test_the_retention_is_shown_set_and_refused_when_it_would_turn_the_history_off(tmp_path: Path) -> None:
    db = tmp_path / "ipam.db"
    for n in range(30):
        plugin("ADD", NET, f"c{n}", db=db)
    assert ok("--db", str(db), "history-retention", "--json").json() == {"max_age": 30 * 86400.0, "max_records": 100000}
    assert ok("--db", str(db), "history-retention", "--max-age", "7d", "--max-records", "10").out == (
        "max age 7 days, max records 10\n"
    )
    assert len(json.loads(ok("--db", str(db), "export").out)["history"]) == 10  # applied at once on SQLite
    refused(call("--db", str(db), "history-retention", "--max-records", "0"), says="cannot be turned off")
    refused(call("--db", str(db), "history-retention", "--max-age", "soon"), says="--max-age 'soon'")


def test_an_export_made_before_the_history_starts_it_at_the_import(tmp_path: Path) -> None:
    db, copy = tmp_path / "ipam.db", tmp_path / "copy.db"
    plugin("ADD", NET, "a", db=db)
    document = json.loads(ok("--db", str(db), "export").out)
    del document["history"]  # as a cnipamctl before the history wrote it
    (tmp_path / "old.json").write_text(json.dumps(document))
    before = time.time()
    ok("--db", str(copy), "import", str(tmp_path / "old.json"))
    (row,) = ok("--db", str(copy), "history", "a", "--json").json()
    assert (row["started"], row["ended"]) == ("imported", "held")
    assert row["since"] >= before > row["held_from"] == document["leases"][-1]["created"]
    assert "imported " in ok("--db", str(copy), "history", "a").out  # the table says when


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_after_thousands_of_changes_the_command_names_the_holder_at_any_moment(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """2,400 allocations and releases over a day that ended an hour ago (a /26, so each
    address changes hands many times), a model keeping who held what when; then the
    installed cnipamctl, asked about addresses at random moments and at the edges of
    tenancies in RFC 3339, names exactly the holder the model names (or nobody)."""
    store = ENGINES[engine](request, tmp_path)
    if engine == "etcd":
        where = [
            "--store",
            json.dumps(
                store_object(
                    request.getfixturevalue("etcd_endpoint"),
                    request.getfixturevalue("etcd_prefix"),
                    str(tmp_path),
                    "host-a",
                )
            ),
        ]
    else:
        where = ["--db", str(tmp_path / "ipam.db")]
    pools = parse_ecs({"ipv4-subnet": "10.45.0.0/26"}).pools
    rng = random.Random(1515)
    now = [time.time() - 86400 - 3600]
    store.clock = lambda: now[0]
    live: dict[str, str] = {}
    model: list[list[Any]] = []  # [ip, from, to (None: held), container]
    try:
        for step in range(2400):
            now[0] += rng.uniform(10.0, 40.0)
            if live and (len(live) > 40 or rng.random() < 0.45):
                container = rng.choice(sorted(live))
                store.release(Owner.for_request(None, "big", container, "eth0", "", "").handle)
                next(row for row in model if row[3] == container and row[2] is None)[2] = now[0]
                del live[container]
            else:
                container = f"c{step}"
                owner = Owner.for_request(None, "big", container, "eth0", f"/run/netns/{container}", "")
                live[container] = ip = store.allocate(owner, pools)[0].ip
                model.append([ip, now[0], None, container])
    finally:
        store.close()
    # Just inside a tenancy's start, just inside and just past its end (RFC 3339 keeps microseconds), at random.
    probes = [(row[0], row[1] + 0.001) for row in rng.sample(model, 8)]
    ended = [row for row in model if row[2] is not None]
    probes += [(row[0], row[2] + offset) for row in rng.sample(ended, 8) for offset in (-0.001, 0.001)]
    probes += [(rng.choice(model)[0], rng.uniform(model[0][1], now[0])) for _ in range(8)]
    for ip, moment in probes:
        expected = [c for i, start, end, c in model if i == ip and start <= moment and (end is None or moment < end)]
        answer = call(*where, "history", ip, "--at", iso(moment), "--json")
        assert answer.code == (0 if expected else 1), (ip, iso(moment), answer.err)
        got = answer.json() if expected else []
        assert [row["container_id"] for row in got] == expected, (ip, iso(moment))
    container = model[len(model) // 2][3]
    (row,) = ok(*where, "history", container, "--json").json()
    assert (row["ip"], row["started"], row["host"] != "") == (model[len(model) // 2][0], "allocated", True)
