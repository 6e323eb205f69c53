"""Load without faults: lock contention of 8 workers, and concurrent submitters.

Assert counts only (exactly-once ledger entries, zero lock errors, row
counts), never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from durable_workers.backends import open_store
from tests.conftest import cli_env
from tests.stress.support import run_chaos

pytestmark = [pytest.mark.stress]


@pytest.mark.timeout(180)
def test_8_workers_2000_short_workflows_no_lock_errors_and_exactly_once_ledger(tmp_path: Path) -> None:
    proc, verdict = run_chaos(
        tmp_path,
        "--workers", "8", "--workflows", "2000", "--workflow", "chaos_short",
        "--faults", "none", "--bad-inputs", "0", "--timeout", "150",
        timeout=175,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    assert verdict["workflows"]["completed"] == 2000, report
    assert verdict["workflows"]["failed"] == 0 and verdict["workflows"]["stuck"] == 0, report
    assert verdict["locks"]["errors_in_workflows"] == 0, report
    assert verdict["locks"]["errors_in_engine_logs"] == 0, report
    assert verdict["steps"]["executed_more_than_once"] == 0, report
    assert verdict["steps"]["executions"] == verdict["steps"]["distinct"] == 4000, report
    assert proc.returncode == 0, report

    # the ledger itself: every step of every workflow exactly once
    store = open_store(tmp_path / "chaos.db", create=False)
    try:
        counts = store.ledger_counts()
    finally:
        store.close()
    assert len(counts) == 4000
    assert set(counts.values()) == {1}
    assert {key for _, key in counts} == {"one#1", "two#1"}


@pytest.mark.timeout(120)
def test_4_concurrent_submitters_make_exactly_1000_rows_without_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "submit.db"
    submitters = [
        subprocess.Popen(
            [
                sys.executable, "-m", "durable_workers.chaos", "submit",
                "--db", str(db), "--total", "1000", "--stride", "4", "--offset", str(k),
                "--overlap", "400",  # each also resubmits 100 of the next submitter's ids, racing it
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=cli_env(),
        )
        for k in range(4)
    ]
    created: Counter[str] = Counter()
    existing: Counter[str] = Counter()
    for proc in submitters:
        out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
        data = json.loads(out)
        created.update(data["created"])
        existing.update(data["existing"])

    ids = {f"sub-{i}" for i in range(1000)}
    assert set(created) == ids  # every id created ...
    assert max(created.values()) == 1  # ... exactly once
    assert sum(existing.values()) == 400  # the resubmissions found the existing row
    assert set(existing) <= ids

    store = open_store(db, create=False)
    try:
        rows = store.workflow_ids()
        counts = store.count_by_status()
    finally:
        store.close()
    assert len(rows) == 1000
    assert len(set(rows)) == 1000
    assert set(rows) == ids
    assert counts["PENDING"] == 1000
