"""The chaos verdict catches what it claims to catch: synthetic runs with planted violations."""

from __future__ import annotations

import json
from typing import Any

from durable_workers.chaos import ChaosOptions, Fault, analyse, render
from durable_workers.store import LedgerRecord, StepRecord, WorkflowRecord

WF = "chk-00000"


def value(pid: int, token: int, nonce: str, began: float | None = None) -> str:
    data: dict[str, Any] = {"key": "a#1", "pid": pid, "token": token, "nonce": nonce}
    if began is not None:
        data["began"] = began
    return json.dumps(data, sort_keys=True)


def row(n: int, pid: int, token: int, at: float, *, nonce: str | None = None, key: str = "a#1",
        step_status: str | None = "RUNNING", lease_token: int | None = None, began: float | None = None) -> LedgerRecord:  # fmt: skip
    return LedgerRecord(
        id=n, workflow_id=WF, step_key=key, pid=pid, worker_id=f"w{pid}", token=token, attempt=token,
        value=None if key.startswith("@") else value(pid, token, nonce or f"n{n}", began),
        at=at, lease_token=token if lease_token is None else lease_token, step_status=step_status,
    )  # fmt: skip


def workflow(*, status: str = "COMPLETED", nonce: str = "n2", token: int = 2, error: str | None = None,
             updated_at: float = 10.0, name: str = "chaos_check") -> WorkflowRecord:  # fmt: skip
    return WorkflowRecord(
        id=WF, name=name, input={}, status=status,
        result={"token": token, "nonces": {"a#1": nonce}} if status == "COMPLETED" else None,
        error=error, attempts=token, run_at=0.0, created_at=0.0, updated_at=updated_at, crash_at=None,
    )  # fmt: skip


def step(output: str, *, finished_at: float = 2.1, status: str = "COMPLETED") -> StepRecord:
    return StepRecord(
        workflow_id=WF, step_key="a#1", name="a", scope="", position=0, status=status, output=output,
        error=None, attempts=2, deadline=None, started_at=0.5, finished_at=finished_at, worker_id="w2",
    )  # fmt: skip


def verdict(workflows: list[WorkflowRecord], steps: list[StepRecord], ledger: list[LedgerRecord],
            faults: list[Fault] | None = None) -> dict[str, Any]:  # fmt: skip
    return analyse(
        ChaosOptions(workflows=1, bad_inputs=0),
        seed=1, db="x.db", workflows=workflows, steps=steps, ledger=ledger, faults=faults or [],
        started=0.0, ended=10.0, finished=True, log_text="", orphans=[],
        supervisor_starts=1, unexpected_supervisor_deaths=0, supervisor_stopped_in_time=True,
    )  # fmt: skip


def reexecuted() -> tuple[list[WorkflowRecord], list[StepRecord], list[LedgerRecord]]:
    """Worker pid 1 (token 1) ran a#1 and lost it; pid 2 (token 2) ran it again and recorded it."""
    ledger = [row(1, 1, 1, 1.0), row(2, 2, 2, 2.0, nonce="n2")]
    return [workflow()], [step(value(2, 2, "n2"))], ledger


def test_a_clean_run_passes_and_renders() -> None:
    result = verdict([workflow(nonce="n1", token=1)], [step(value(1, 1, "n1"))], [row(1, 1, 1, 1.0, nonce="n1")])
    assert result["ok"] is True
    assert result["steps"]["executions"] == result["steps"]["distinct"] == 1
    assert "VERDICT: PASS" in render(result)


def test_a_reexecution_explained_by_a_kill_of_its_worker_during_the_step() -> None:
    workflows, steps, ledger = reexecuted()
    result = verdict(workflows, steps, ledger, [Fault("kill", 1, 1.5, held=[WF])])
    assert result["ok"] is True
    assert result["steps"]["reexecutions"] == 1 and result["steps"]["explained_by_kill"] == 1
    assert result["faults"]["hit_running_step"] == 1
    assert result["recovery"]["kill"]["count"] == 1  # 1.5 -> 2.0


def test_an_unexplained_reexecution_fails_the_verdict() -> None:
    workflows, steps, ledger = reexecuted()
    for faults in ([], [Fault("kill", 7, 1.5)], [Fault("kill", 1, 3.0)]):  # none; another pid; after completion
        result = verdict(workflows, steps, ledger, faults)
        assert result["steps"]["unexplained"] == 1
        assert result["checks"]["reexecutions_explained"] is False and result["ok"] is False
        assert "VERDICT: FAIL" in render(result)


def test_a_completed_step_executed_again_is_caught() -> None:
    ledger = [row(1, 2, 2, 1.0, nonce="n2"), row(2, 3, 2, 5.0, step_status="COMPLETED")]
    result = verdict([workflow()], [step(value(2, 2, "n2"))], ledger, [Fault("kill", 3, 5.5)])
    assert result["steps"]["completed_step_reexecuted"] == 1
    assert result["checks"]["no_completed_step_reexecuted"] is False


def test_a_stopped_workers_step_that_ran_on_after_sigcont_is_explained() -> None:
    ledger = [
        row(1, 2, 2, 3.5, nonce="n2"),
        # pid 1 began the step before SIGSTOP; its ledger write landed after SIGCONT, behind a lock
        row(2, 1, 1, 4.5, began=1.1, step_status="COMPLETED", lease_token=2),
    ]
    result = verdict([workflow()], [step(value(2, 2, "n2"), finished_at=3.6)], ledger, [Fault("stop", 1, 1.2, end=4.0)])
    assert result["ok"] is True
    assert result["steps"]["explained_by_stop"] == 1
    assert result["steps"]["completed_step_reexecuted"] == 0
    assert result["steps"]["side_effects_by_fenced_workers"] == 1


def test_an_output_that_no_execution_returned_is_caught() -> None:
    result = verdict([workflow(nonce="zz", token=1)], [step(value(1, 1, "zz"))], [row(1, 1, 1, 1.0, nonce="n1")])
    assert result["steps"]["output_mismatches"] == 1
    assert result["steps"]["result_mismatches"] == 0  # the result agrees with the (wrong) step row
    assert result["checks"]["outputs_match"] is False


def test_a_write_accepted_from_a_fenced_worker_is_caught() -> None:
    # token 1 recorded a#1 at 2.0, although token 2 had begun the workflow at 1.5
    ledger = [row(1, 1, 1, 1.0, nonce="n1"), row(2, 2, 2, 1.5, key="@begin", step_status=None)]
    result = verdict([workflow(nonce="n1", token=2)], [step(value(1, 1, "n1"), finished_at=2.0)], ledger)
    assert result["steps"]["fenced_writes_accepted"] == 1
    assert result["checks"]["no_fenced_write_accepted"] is False


def test_lock_errors_failed_or_stuck_workflows_and_bad_inputs_fail_the_verdict() -> None:
    locked = workflow(status="FAILED", error="StoreBusyError: database x.db stayed locked")
    result = verdict([locked], [], [])
    assert result["locks"]["errors_in_workflows"] == 1
    assert result["workflows"]["failed"] == 1 and result["ok"] is False

    stuck = verdict([workflow(status="RUNNING")], [], [])
    assert stuck["workflows"]["stuck"] == 1 and stuck["checks"]["all_completed"] is False

    bad = WorkflowRecord(
        id="bad-raises-1", name="chaos_raises", input={}, status="COMPLETED", result=None, error=None,
        attempts=1, run_at=0.0, created_at=0.0, updated_at=1.0, crash_at=None,
    )  # fmt: skip
    result = analyse(
        ChaosOptions(workflows=0, bad_inputs=1), seed=1, db="x.db", workflows=[bad], steps=[], ledger=[],
        faults=[], started=0.0, ended=1.0, finished=True, log_text="", orphans=[], supervisor_starts=1,
        unexpected_supervisor_deaths=0, supervisor_stopped_in_time=True,
    )  # fmt: skip
    assert result["checks"]["bad_inputs_documented"] is False
    assert result["expected"]["failures"] == {"count": 1, "in_documented_state": 0}
