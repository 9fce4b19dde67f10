"""The etcd fault campaign in short form for CI: a three-member cluster loses its leader,
a member, its quorum, and is restarted whole while two simulated hosts allocate and
release (3 s per spell). The full run is `python campaigns/etcd_faults.py` (same code;
docs/campaigns.md)."""

from __future__ import annotations

from pathlib import Path

from etcd_faults import SHORT, TIMEOUT, Campaign  # the campaign lives in campaigns/, on pytest's pythonpath

from tests.support.etcd import need_etcd


def test_one_round_of_every_cluster_fault(tmp_path: Path) -> None:
    need_etcd()
    report = Campaign(rounds=1, hosts=2, workers=4, timing=SHORT, seed=5, folder=tmp_path).run()
    print(report)
    assert report["violations"] == 0
    phases = report["by phase"]
    for phase in ("after leader killed", "after member hung", "after quorum lost", "after cluster restarted"):
        assert phases[phase].get("ADD ok", 0) > 0, (phase, phases[phase])  # allocations came back
    assert set(phases["quorum lost"]) <= {"ADD 11", "DEL 11", "CHECK 11", "ADD ok", "DEL ok", "CHECK ok"}
    assert report["code 11"] > 0 and report["slowest code 11 (s)"] < TIMEOUT + 1.0
    assert all(recovery["first allocation after"] is not None for recovery in report["recoveries"])
