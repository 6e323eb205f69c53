"""The chaos verdict catches what it claims to catch: synthetic runs with planted violations."""

from __future__ import annotations

import json
from typing import Any

from durable_workers.chaos import ChaosOptions, Fault, analyse, render
from durable_workers.records import LedgerRecord, StepRecord, WorkflowRecord

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


def test_a_reexecution_explained_by_a_kill_of_its_whole_host() -> None:
    workflows, steps, ledger = reexecuted()
    host = Fault("host", 99, 1.5, held=[WF], fleet=[1, 5])  # supervisor pid 99, its workers 1 and 5
    result = verdict(workflows, steps, ledger, [host])
    assert result["ok"] is True
    assert result["steps"]["reexecutions"] == 1 and result["steps"]["explained_by_host"] == 1
    assert result["faults"]["host"] == 1 and result["faults"]["hit_running_step"] == 1
    assert result["recovery"]["host"]["count"] == 1  # 1.5 -> 2.0, on pid 2 (not of the killed host)
    assert "after whole-host kill" in render(result)
    unrelated = verdict(workflows, steps, ledger, [Fault("host", 1, 1.5, held=[WF], fleet=[5])])
    assert unrelated["steps"]["unexplained"] == 1  # the host's supervisor pid is no worker of it


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


# --------------------------------------------------------------------------- end state, foreign exceptions, outages


def end_verdict(workflows: list[WorkflowRecord], steps: list[StepRecord] | None = None,
                ledger: list[LedgerRecord] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return analyse(
        ChaosOptions(workflows=len(workflows), bad_inputs=0, faults=("kill", "foreign")),
        seed=1, db="x.db", workflows=workflows, steps=steps or [], ledger=ledger or [],
        faults=extra.pop("faults", []), started=0.0, ended=10.0, finished=True, log_text="", orphans=[],
        supervisor_starts=1, unexpected_supervisor_deaths=0, supervisor_stopped_in_time=True, **extra,
    )  # fmt: skip


def test_a_clean_run_shows_both_end_state_lines_at_zero() -> None:
    result = verdict([workflow(nonce="n1", token=1)], [step(value(1, 1, "n1"))], [row(1, 1, 1, 1.0, nonce="n1")])
    text = render(result)
    assert "workflows stuck RUNNING at the end: 0" in text
    assert "workflows FAILED by infrastructure: 0" in text
    assert result["checks"]["no_workflow_stuck_running"] is True
    assert result["checks"]["no_workflow_failed_by_infrastructure"] is True


def test_a_workflow_running_after_the_fleet_drained_is_stuck_and_fails_the_verdict() -> None:
    result = end_verdict([workflow(status="RUNNING")], lease_holders={WF: "w1"}, live_workers={"w1"})
    assert result["end_state"]["stuck_running"] == 1
    assert result["end_state"]["stuck_running_detail"][0]["lease_holder"] == "w1"
    assert result["checks"]["no_workflow_stuck_running"] is False and result["ok"] is False
    text = render(result)
    assert "workflows stuck RUNNING at the end: 1" in text and "VERDICT: FAIL" in text
    assert "no_workflow_stuck_running" in text


def test_before_the_fleet_drained_only_a_running_workflow_without_a_live_holder_is_stuck() -> None:
    held = end_verdict([workflow(status="RUNNING")], lease_holders={WF: "w1"}, live_workers={"w1"}, fleet_drained=False)
    assert held["end_state"]["stuck_running"] == 0
    for holders, live in (({WF: "w1"}, set()), ({}, {"w1"})):  # holder dead; no lease at all
        orphaned = end_verdict([workflow(status="RUNNING")], lease_holders=holders, live_workers=live, fleet_drained=False)
        assert orphaned["end_state"]["stuck_running"] == 1
        assert orphaned["checks"]["no_workflow_stuck_running"] is False


def test_a_pending_or_ended_workflow_is_not_stuck_running() -> None:
    for status in ("PENDING", "COMPLETED", "FAILED"):
        result = end_verdict([workflow(status=status, error="ValueError: x" if status == "FAILED" else None)])
        assert result["end_state"]["stuck_running"] == 0


def test_an_ended_workflow_whose_lease_is_still_held_fails_the_verdict() -> None:
    held = end_verdict([workflow(nonce="n1", token=1)], [step(value(1, 1, "n1"))], [row(1, 1, 1, 1.0, nonce="n1")],
                       lease_holders={WF: "w1"})  # fmt: skip
    assert held["end_state"]["ended_with_lease_held"] == 1
    assert held["checks"]["ended_workflows_released_their_lease"] is False and held["ok"] is False
    assert "ended workflows still holding a lease: 1" in render(held)


def test_a_workflow_failed_by_infrastructure_fails_the_verdict() -> None:
    errors = (
        "StoreUnavailable: database x.db stayed locked for 2 s",
        '{"type": "durable_workers.errors.StoreUnavailable", "message": "unavailable"}',
        "DatabaseError: database x.db: database or disk is full",
        "DatabaseError: database x.db: disk I/O error",
        "OperationalError: database is locked",
    )
    for error in errors:
        result = end_verdict([workflow(status="FAILED", error=error)])
        assert result["end_state"]["failed_by_infrastructure"] == 1, error
        assert result["checks"]["no_workflow_failed_by_infrastructure"] is False, error
        assert "workflows FAILED by infrastructure: 1" in render(result)
    own = end_verdict([workflow(status="FAILED", error="ValueError: chaos: deliberate failure of a step")])
    assert own["end_state"]["failed_by_infrastructure"] == 0
    assert own["checks"]["no_workflow_failed_by_infrastructure"] is True


def test_a_step_failed_by_infrastructure_fails_the_verdict() -> None:
    failed = StepRecord(
        workflow_id=WF, step_key="a#1", name="a", scope="", position=0, status="FAILED", output=None,
        error="StoreUnavailable: database x.db stayed locked", attempts=1, deadline=None, started_at=0.5,
        finished_at=1.0, worker_id="w1",
    )  # fmt: skip
    result = end_verdict([workflow(status="RUNNING")], [failed], fleet_drained=False, lease_holders={WF: "w1"},
                         live_workers={"w1"})  # fmt: skip
    assert result["end_state"]["steps_failed_by_infrastructure"] == 1
    assert result["checks"]["no_step_failed_by_infrastructure"] is False


def hazard_rows(raised: str = "SystemExit") -> list[LedgerRecord]:
    """Pid 1 ran the hazard step, which raised ``raised`` (its ledger row says so)."""
    data = {"key": "hazard#1", "pid": 1, "token": 1, "raised": raised, "began": 1.0}
    return [
        LedgerRecord(id=1, workflow_id=WF, step_key="hazard#1", pid=1, worker_id="w1", token=1, attempt=1,
                     value=json.dumps(data), at=1.0, lease_token=1, step_status="RUNNING"),  # fmt: skip
        row(2, 1, 1, 2.0, key="fallback#1", nonce="f1"),
    ]


def hazard_step(status: str, error: str | None) -> StepRecord:
    return StepRecord(
        workflow_id=WF, step_key="hazard#1", name="hazard", scope="", position=9, status=status, output=None,
        error=error, attempts=1, deadline=None, started_at=0.9, finished_at=1.1, worker_id="w1",
    )  # fmt: skip


def fallback_workflow(fallback: bool) -> WorkflowRecord:
    return WorkflowRecord(
        id=WF, name="chaos_check", input={}, status="COMPLETED",
        result={"token": 1, "nonces": {"fallback#1": "f1"}, "fallback": fallback}, error=None, attempts=1,
        run_at=0.0, created_at=0.0, updated_at=3.0, crash_at=None,
    )  # fmt: skip


def fallback_step() -> StepRecord:
    return StepRecord(
        workflow_id=WF, step_key="fallback#1", name="fallback", scope="", position=10, status="COMPLETED",
        output=value(1, 1, "f1"), error=None, attempts=1, deadline=None, started_at=1.9,
        finished_at=2.1, worker_id="w1",
    )  # fmt: skip


def test_a_foreign_exception_recorded_as_the_steps_failure_with_the_fallback_taken_passes() -> None:
    error = '{"type": "builtins.SystemExit", "message": "chaos: foreign exception"}'
    steps = [hazard_step("FAILED", error), fallback_step()]
    result = end_verdict([fallback_workflow(True)], steps, hazard_rows())
    foreign = result["foreign"]
    assert foreign["raised"] == 1 and foreign["recorded_as_step_failure"] == 1
    assert foreign["not_recorded"] == 0 and foreign["branch_mismatches"] == 0 and foreign["fallback_taken"] == 1
    assert result["checks"]["foreign_exceptions_recorded"] is True
    assert result["ok"] is True, render(result)
    assert "FOREIGN BaseException IN A STEP" in render(result)


def test_a_foreign_exception_left_unrecorded_or_with_the_wrong_branch_fails_the_verdict() -> None:
    # the hazard step raised but its row stayed RUNNING (the exception escaped the engine)
    unrecorded = end_verdict([workflow(status="RUNNING")], [hazard_step("RUNNING", None)], hazard_rows()[:1],
                             fleet_drained=False, lease_holders={WF: "w1"}, live_workers={"w1"})  # fmt: skip
    assert unrecorded["foreign"]["not_recorded"] == 1
    assert unrecorded["checks"]["foreign_exceptions_recorded"] is False
    # recorded FAILED, but with another error than the exception raised
    other = end_verdict([fallback_workflow(True)], [hazard_step("FAILED", "ValueError: x"), fallback_step()], hazard_rows())
    assert other["foreign"]["not_recorded"] == 1
    # recorded FAILED, yet the workflow went on as if the step had returned
    wrong = end_verdict([fallback_workflow(False)], [hazard_step("FAILED", "SystemExit: x"), fallback_step()], hazard_rows())
    assert wrong["foreign"]["branch_mismatches"] == 1
    assert wrong["checks"]["foreign_exceptions_recorded"] is False and wrong["ok"] is False


def test_a_reexecution_during_a_store_outage_is_explained_by_it_on_any_worker() -> None:
    workflows, steps, ledger = reexecuted()
    outage = Fault("outage", 99, 1.5, end=1.9)  # the lock holder's pid: not the worker's
    result = verdict(workflows, steps, ledger, [outage])
    assert result["steps"]["explained_by_outage"] == 1 and result["steps"]["unexplained"] == 0
    assert result["checks"]["reexecutions_explained"] is True
    assert result["faults"]["outage"] == 1 and result["faults"]["outage_held_s"]["count"] == 1
    # an execution that began after the outage ended is not explained by it
    late = verdict(workflows, steps, [row(1, 1, 1, 1.98), ledger[1]], [Fault("outage", 99, 1.5, end=1.9)])
    assert late["steps"]["unexplained"] == 1 and late["ok"] is False


def test_a_skipped_disk_full_fault_is_noted_in_the_table() -> None:
    result = analyse(
        ChaosOptions(workflows=1, bad_inputs=0, faults=("diskfull",)),
        seed=1, db="x.db", workflows=[workflow(nonce="n1", token=1)], steps=[step(value(1, 1, "n1"))],
        ledger=[row(1, 1, 1, 1.0, nonce="n1")], faults=[], started=0.0, ended=10.0, finished=True, log_text="",
        orphans=[], supervisor_starts=1, unexpected_supervisor_deaths=0, supervisor_stopped_in_time=True,
        not_sent={"diskfull": "not root: cannot mount a small filesystem"},
    )  # fmt: skip
    assert result["faults"]["not_sent"] == {"diskfull": "not root: cannot mount a small filesystem"}
    assert "disk full" in render(result) and "skipped: not root" in render(result)


def test_a_step_that_raised_and_ran_again_is_explained_only_by_a_fault_before_its_failure_was_recorded() -> None:
    # pid 1's hazard step raised at 1.0 and was not recorded; pid 2 ran it again at 8.0 and recorded it
    raised = hazard_rows()[0]
    again = LedgerRecord(
        id=3, workflow_id=WF, step_key="hazard#1", pid=2, worker_id="w2", token=2, attempt=2,
        value=value(2, 2, "h2"), at=8.0, lease_token=2, step_status="RUNNING",
    )  # fmt: skip
    completed = StepRecord(
        workflow_id=WF, step_key="hazard#1", name="hazard", scope="", position=9, status="COMPLETED",
        output=value(2, 2, "h2"), error=None, attempts=2, deadline=None, started_at=0.9, finished_at=8.1,
        worker_id="w2",
    )  # fmt: skip
    late_kill = end_verdict([workflow(status="RUNNING")], [completed], [raised, again], faults=[Fault("kill", 1, 5.0)])
    assert late_kill["steps"]["unexplained"] == 1  # the worker sat on it until killed: not an explanation
    assert late_kill["checks"]["reexecutions_explained"] is False
    prompt_kill = end_verdict([workflow(status="RUNNING")], [completed], [raised, again], faults=[Fault("kill", 1, 1.2)])
    assert prompt_kill["steps"]["unexplained"] == 0 and prompt_kill["steps"]["explained_by_kill"] == 1
    assert prompt_kill["foreign"]["run_again_after_a_fault"] == 1


def test_a_healthy_worker_killed_as_frozen_fails_the_verdict() -> None:
    """Only a SIGSTOPped worker may be killed for a stale heartbeat (not one waiting out an outage)."""
    from durable_workers.chaos.verdict import healthy_workers_killed_as_frozen

    log = (
        "... WARNING killing worker pid=41: its heartbeat is 5.0s old (frozen? limit 4.0s)\n"
        "... WARNING killing worker pid=42: its heartbeat is 6.1s old (frozen? limit 4.0s)\n"
    )
    faults = [Fault("stop", 41, 1.0, end=5.0), Fault("outage", None, 2.0, end=8.0)]
    assert healthy_workers_killed_as_frozen(faults, log) == [42]
    result = analyse(
        ChaosOptions(workflows=0, bad_inputs=0), seed=1, db="x.db", workflows=[], steps=[], ledger=[],
        faults=faults, started=0.0, ended=1.0, finished=True, log_text=log, orphans=[], supervisor_starts=1,
        unexpected_supervisor_deaths=0, supervisor_stopped_in_time=True,
    )  # fmt: skip
    assert result["checks"]["no_healthy_worker_killed_as_frozen"] is False
    assert result["faults"]["healthy_killed_as_frozen"] == [42]


def test_a_stale_execution_written_after_the_newer_attempts_recorded_failure_is_the_one_explained() -> None:
    # pid 1 (token 1) was stopped inside the hazard step; pid 2 (token 2) took over, raised and
    # recorded the failure; pid 1 resumed and wrote its own raising execution last
    recorded, stale = hazard_rows()[0], hazard_rows()[0]
    recorded = LedgerRecord(**{**recorded.__dict__, "id": 3, "pid": 2, "worker_id": "w2", "token": 2, "at": 4.0})
    stale = LedgerRecord(**{**stale.__dict__, "id": 4, "at": 6.0, "lease_token": 2})
    failed = hazard_step("FAILED", '{"type": "builtins.SystemExit", "message": "chaos: foreign exception"}')
    stop = Fault("stop", 1, 1.5, end=5.8)
    result = end_verdict([fallback_workflow(True)], [failed, fallback_step()], [recorded, stale], faults=[stop])
    assert result["steps"]["unexplained"] == 0 and result["steps"]["explained_by_stop"] == 1, render(result)
    assert result["steps"]["side_effects_by_fenced_workers"] == 1
    # without the stop, pid 1's late execution is the unexplained one (not pid 2's recorded one)
    bare = end_verdict([fallback_workflow(True)], [failed, fallback_step()], [recorded, stale])
    assert [(u["pid"], u["token"]) for u in bare["steps"]["unexplained_detail"]] == [(1, 1)], render(bare)


def test_tracebacks_are_counted_in_text_and_in_json_logs() -> None:
    text_log = "worker 1 crashed\nTraceback (most recent call last):\n  File ...\n"
    json_log = '{"ts": "2026-12-03T09:00:00Z", "level": "ERROR", "msg": "boom", "exc": "Traceback (most recent call last):\\n..."}\n'
    workflows, steps, ledger = reexecuted()
    for log in (text_log, json_log):
        result = analyse(
            ChaosOptions(workflows=1, bad_inputs=0), seed=1, db="x.db", workflows=workflows, steps=steps,
            ledger=ledger, faults=[Fault("kill", 1, 1.5, held=[WF])], started=0.0, ended=10.0, finished=True,
            log_text=log, orphans=[], supervisor_starts=1, unexpected_supervisor_deaths=0,
            supervisor_stopped_in_time=True,
        )  # fmt: skip
        assert result["locks"]["tracebacks_in_logs"] == 1, log
