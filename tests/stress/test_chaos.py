"""The chaos experiment as a test: ``durable chaos`` under kill -9, SIGSTOP, supervisor kills and lock stalls.

Runs the real CLI (real supervisor, real worker processes, real faults) and
asserts the invariants of its JSON verdict — counts, never timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_workers.chaos import BAD_INPUT, FAULT_KINDS
from tests.stress.support import run_chaos

pytestmark = [pytest.mark.stress]


@pytest.mark.timeout(240)
def test_chaos_300_workflows_4_workers_a_fault_every_third_of_a_second(tmp_path: Path) -> None:
    proc, verdict = run_chaos(
        tmp_path,
        "--workers", "4", "--workflows", "300", "--fault-interval", "0.3",
        "--faults", "kill,stop,supervisor,lock", "--ttl", "2", "--bad-inputs", "1",
        "--seed", "20261121", "--timeout", "180",
        timeout=230,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    workflows, steps, faults = verdict["workflows"], verdict["steps"], verdict["faults"]

    # every check workflow ended COMPLETED: none failed, none stuck
    assert workflows["submitted"] == 300, report
    assert workflows["completed"] == 300, report
    assert workflows["failed"] == 0 and workflows["stuck"] == 0, report

    # the faults were really sent, each kind at least once
    for kind in FAULT_KINDS:
        assert faults[kind] >= 1, (kind, report)
    assert not faults["lock_failures"], report

    # exactly-once results, at-least-once execution explained by the faults
    assert steps["distinct"] == 300 * 10, report  # 2 sequential + 3 fan-out + 3 loop + 1 conditional + 1 final
    assert steps["completed_rows"] == steps["distinct"], report
    assert steps["executions"] == steps["distinct"] + steps["reexecutions"], report
    assert steps["completed_step_reexecuted"] == 0, report
    assert steps["unexplained"] == 0, report
    assert steps["explained_by_kill"] + steps["explained_by_stop"] == steps["reexecutions"], report
    assert steps["output_mismatches"] == 0 and steps["result_mismatches"] == 0, report
    assert steps["fenced_writes_accepted"] == 0, report

    # no lock error reached workflow code
    assert verdict["locks"]["errors_in_workflows"] == 0, report

    # bad input ended in its documented state without disturbing the rest
    expected = verdict["expected"]
    assert expected["failures"]["count"] == 3 and expected["failures"]["in_documented_state"] == 3, report
    assert expected["pending"]["count"] == 1 and expected["pending"]["in_documented_state"] == 1, report
    assert {b["name"] for b in expected["detail"]} == set(BAD_INPUT), report

    # no worker outlived the experiment; the verdict and the exit code agree
    assert verdict["orphans"] == [], report
    assert all(verdict["checks"].values()), report
    assert verdict["ok"] is True and proc.returncode == 0, report
    assert "VERDICT: PASS" in report
