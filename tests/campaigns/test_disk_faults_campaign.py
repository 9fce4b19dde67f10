"""The disk fault campaign in short form for CI: one round (full disk, read-only remount
with a killed writer's WAL, four damaged copies recovered) on a real tmpfs. The full run
is `python campaigns/disk_faults.py` (same code; docs/campaigns.md). Root only: it mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from disk_faults import Campaign  # the campaign lives in campaigns/, on pytest's pythonpath

from cnipam.testing.small_disk import unavailable


def test_one_round_of_every_disk_fault(tmp_path: Path) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    campaign = Campaign(rounds=1, damages=4, owners=30, seed=3, workdir=tmp_path)
    campaign.read_only_with_wal = True
    report = campaign.run()
    print(report)
    assert report["full disk: DEL ok"] > 0 and report["full disk: ADD 5"] > 0
    assert report["read-only: ADD 5"] == report["read-only: DEL 5"] == 1
    assert report["damaged copies"] == 4
    assert report["recover: model leases kept with their owner"] > 0
