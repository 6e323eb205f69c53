"""The chaos experiment as a test: ``durable chaos`` under kill -9, SIGSTOP, supervisor kills, lock stalls,
store outages (the write lock held past the fleet's patience), a full disk (when the run may mount a tmpfs)
and a foreign BaseException raised once by a step.

Runs the real CLI (real supervisor, real worker processes, real faults) and
asserts the invariants of its JSON verdict — counts, never timings. Runs on a SQLite file and
on an empty PostgreSQL database (``any_db``; there the lock and outage faults lock the tables
against writers, and diskfull is not sent: the database is not on a local disk).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_workers.chaos import BAD_INPUT, INJECTED_KINDS
from tests.integration.fleet_support import DbTarget, any_db  # noqa: F401  (any_db: fixture)
from tests.stress.support import run_chaos

#: Every fault kind of one host (the whole-host kill has its own tests: test_chaos_hosts, test_fleet_hosts).
FAULTS = ("kill", "stop", "supervisor", "lock", "outage", "diskfull", "foreign")

pytestmark = [pytest.mark.stress]


#: Check steps of one chaos_check workflow with the foreign fault: 2 sequential + 3 fan-out
#: + 3 loop + 1 conditional + the hazard step + its branch (proceed or fallback) + 1 final.
STEPS_PER_WORKFLOW = 12


@pytest.mark.timeout(720)
def test_chaos_300_workflows_4_workers_a_fault_every_third_of_a_second(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    proc, verdict = run_chaos(
        tmp_path,
        "--workers", "4", "--workflows", "300", "--fault-interval", "0.3",
        "--faults", ",".join(FAULTS), "--ttl", "2", "--bad-inputs", "1",
        "--lock-patience", "4.5", "--outage-seconds", "6", "--lock-seconds", "3",
        "--seed", "20261121", "--timeout", "600",
        timeout=690, db=any_db,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    workflows, steps, faults = verdict["workflows"], verdict["steps"], verdict["faults"]
    foreign, end_state = verdict["foreign"], verdict["end_state"]

    # every check workflow ended COMPLETED: none failed, none stuck
    assert workflows["submitted"] == 300, report
    assert workflows["completed"] == 300, report
    assert workflows["failed"] == 0 and workflows["stuck"] == 0, report

    # the faults were really sent, each kind at least once (a full disk only where a tmpfs could be mounted)
    for kind in set(FAULTS) & set(INJECTED_KINDS):  # the kinds asked for that are sent (foreign is planted)
        if kind not in faults["not_sent"]:
            assert faults[kind] >= 1, (kind, report)
    assert set(faults["not_sent"]) <= {"diskfull"}, report
    assert not faults["lock_failures"], report

    # a foreign BaseException raised in a step was recorded as that step's failure, and the workflow
    # caught it (StepFailedError) and took its fallback branch: the branch always follows the record
    assert foreign["raised"] >= 1, report
    assert foreign["not_recorded"] == 0 and foreign["branch_mismatches"] == 0, report
    assert foreign["recorded_as_step_failure"] + foreign["run_again_after_a_fault"] == foreign["raised"], report
    assert foreign["fallback_taken"] == foreign["recorded_as_step_failure"], report

    # exactly-once results, at-least-once execution explained by the faults
    assert steps["distinct"] == 300 * STEPS_PER_WORKFLOW, report
    # every step row COMPLETED except the hazard steps recorded FAILED
    assert steps["completed_rows"] == steps["distinct"] - foreign["fallback_taken"], report
    assert steps["executions"] == steps["distinct"] + steps["reexecutions"], report
    assert steps["completed_step_reexecuted"] == 0, report
    assert steps["unexplained"] == 0, report
    explained = steps["explained_by_kill"] + steps["explained_by_stop"] + steps["explained_by_outage"]
    assert explained == steps["reexecutions"], report
    assert steps["output_mismatches"] == 0 and steps["result_mismatches"] == 0, report
    assert steps["fenced_writes_accepted"] == 0, report

    # no lock error reached workflow code; every attempt ended with one recorded outcome
    assert verdict["locks"]["errors_in_workflows"] == 0, report
    assert end_state["stuck_running"] == 0 and end_state["ended_with_lease_held"] == 0, report
    assert end_state["failed_by_infrastructure"] == 0 and end_state["steps_failed_by_infrastructure"] == 0, report
    assert "workflows stuck RUNNING at the end: 0" in report
    assert "workflows FAILED by infrastructure: 0" in report

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
