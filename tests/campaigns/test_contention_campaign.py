"""The contention campaign in short form for CI: 64 plugin processes in flight for a few
seconds on one SQLite store (also with cnipamd beside them, SIGKILLed now and then), and
on etcd shared by four simulated hosts. The full run is
`python campaigns/contention.py --seconds 60` (same code; docs/campaigns.md)."""

from __future__ import annotations

from pathlib import Path

from contention import Campaign, Outcome, Target, markdown  # the campaign lives in campaigns/, on pytest's pythonpath

from tests.support.etcd import need_etcd

WORKERS = 64
SECONDS = 5.0


def assert_clean(outcome: Outcome) -> None:
    assert outcome.violations == []
    assert outcome.unexpected == []
    assert outcome.check_ok
    verbs = {call.verb for call in outcome.calls if call.code is None}
    assert verbs == {"ADD", "DEL", "CHECK"}, "every verb succeeded at least once"
    assert outcome.leases > 0


def test_64_processes_on_one_sqlite_store(tmp_path: Path) -> None:
    target = Target("sqlite", tmp_path / "store" / "ipam.db", folder=tmp_path)
    outcome = Campaign(target, SECONDS, WORKERS, seed=7, timeout="5s").run()
    print(markdown(target, outcome, WORKERS, SECONDS))
    assert_clean(outcome)


def test_64_processes_and_a_killed_agent_on_one_sqlite_store(tmp_path: Path) -> None:
    """Half the calls through cnipamd, SIGKILLed every few seconds, under every spelling
    of the store; a cnipamctl reader all along (issue 19)."""
    target = Target("sqlite", tmp_path / "store" / "cnipam.db", folder=tmp_path)
    outcome = Campaign(target, SECONDS, WORKERS, seed=7, timeout="5s", agent=True).run()
    print(markdown(target, outcome, WORKERS, SECONDS))
    assert_clean(outcome)
    assert outcome.agent is not None
    assert outcome.agent["kills"] > 0 and outcome.agent["forwarded"] > 0 and outcome.agent["direct"] > 0, outcome.agent
    assert outcome.agent["cnipamctl readers"] > 0, outcome.agent


def test_64_processes_on_etcd_from_four_hosts(etcd_endpoint: str, etcd_prefix: bytes, tmp_path: Path) -> None:
    need_etcd()
    target = Target("etcd", tmp_path / "unused.db", etcd_endpoint, etcd_prefix.decode(), 4, tmp_path)
    outcome = Campaign(target, SECONDS, WORKERS, seed=7, timeout="5s").run()
    print(markdown(target, outcome, WORKERS, SECONDS))
    assert_clean(outcome)
    assert not (tmp_path / "unused.db").exists()  # every call went to etcd
