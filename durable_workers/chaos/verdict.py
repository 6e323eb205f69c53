"""The verdict of a run, computed from the database, the faults sent and the fleet's log.

:func:`analyse` has :mod:`.executions` judge every execution of every check
step, then builds each section of the verdict with one function: workflows,
expected (bad input), faults, steps, locks, end state, foreign exceptions,
recovery, throughput, and from those the checks. See docs/reliability.md for
what each entry means.
"""

from __future__ import annotations

import re

import statistics
from dataclasses import asdict
from typing import Any, Collection, Iterable, Mapping, Sequence

from ..records import LedgerRecord, Status, StepRecord, StepStatus, TERMINAL, WorkflowRecord
from .executions import STORE_FAULTS, Evidence, StepFindings, index, judge_results, judge_steps
from .outcomes import end_state_section, foreign_section
from .options import BAD_INPUT, INJECTED_KINDS, POISON_TEXT, UNKNOWN_NAME, ChaosOptions, Fault

#: Markers of a lock error in stored errors and in worker logs.
LOCK_MARKERS = ("database is locked", "StoreBusyError", "database table is locked")
#: Fault kinds whose recovery is timed.
RECOVERED_KINDS = ("kill", "stop", "supervisor", "host")
#: Faults during which the write lock was held, or the store unavailable (for "no lock overlap").
STALL_KINDS = ("lock",) + STORE_FAULTS


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median_s": None, "max_s": None}
    return {
        "count": len(values),
        "median_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
    }


def _has_lock_error(text: str | None) -> bool:
    return text is not None and any(marker in text for marker in LOCK_MARKERS)


# --------------------------------------------------------------------------- sections


def _workflows_section(evidence: Evidence, finished: bool) -> dict[str, Any]:
    checks = evidence.checks.values()
    status_of = {s.value: 0 for s in Status}
    for w in checks:
        status_of[w.status] = status_of.get(w.status, 0) + 1
    stuck = [w for w in checks if w.status not in TERMINAL]
    failed = [w for w in checks if w.status != Status.COMPLETED.value and w.status in TERMINAL]
    return {
        "submitted": len(evidence.checks),
        "completed": status_of.get(Status.COMPLETED.value, 0),
        "failed": len(failed),
        "stuck": len(stuck),
        "by_status": status_of,
        "finished_before_timeout": finished,
        "failed_detail": [{"id": w.id, "status": w.status, "error": (w.error or "").splitlines()[:1]} for w in failed[:10]],
        "stuck_detail": [{"id": w.id, "status": w.status, "attempts": w.attempts} for w in stuck[:10]],
    }


def _bad_input_report(w: WorkflowRecord, unserved: Sequence[str]) -> dict[str, Any]:
    want_status, want_text = BAD_INPUT[w.name]
    error = w.error or ""
    ok = w.status == want_status and (want_text in error or (want_status == "FAILED" and POISON_TEXT in error))
    if w.name == UNKNOWN_NAME:  # never claimed, and `durable status` says why
        ok = ok and w.attempts == 0 and w.name in unserved
        error = f"waiting: no live worker registers {w.name!r}" if w.name in unserved else error
    return {
        "id": w.id,
        "name": w.name,
        "status": w.status,
        "expected": want_status,
        "error": error.splitlines()[0] if error else None,
        "ok": ok,
    }


def _expected_section(evidence: Evidence, unserved: Sequence[str]) -> dict[str, Any]:
    report = [_bad_input_report(w, unserved) for w in evidence.bad]

    def tally(status: Status) -> dict[str, int]:
        mine = [b for b in report if b["expected"] == status.value]
        return {"count": len(mine), "in_documented_state": sum(1 for b in mine if b["ok"])}

    return {"failures": tally(Status.FAILED), "pending": tally(Status.PENDING), "detail": report}


def _held_s(faults: Sequence[Fault], kind: str) -> dict[str, Any]:
    """How long the faults of ``kind`` lasted (those whose helper failed left out)."""
    failed = kind != "diskfull"  # a lock holder's detail is its failure; a full disk's is informative
    ended = [f for f in faults if f.kind == kind and f.end is not None and not (failed and f.detail)]
    return _summary([f.end - f.start for f in ended if f.end is not None])


#: The supervisor's line when it kills a worker whose heartbeat went stale.
FROZEN_KILL = re.compile(r"killing worker pid=(\d+): its heartbeat is")


def healthy_workers_killed_as_frozen(faults: Sequence[Fault], log_text: str) -> list[int]:
    """PIDs the supervisor killed for a stale heartbeat that no ``stop`` fault had frozen.

    During a store outage every heartbeat is late; a worker killed for that
    was healthy, and its step re-ran as a crash.
    """
    stopped = {f.pid for f in faults if f.kind == "stop"}
    return [pid for pid in map(int, FROZEN_KILL.findall(log_text)) if pid not in stopped]


def _faults_section(
    faults: Sequence[Fault],
    findings: StepFindings,
    *,
    skipped: int,
    starts: int,
    unexpected_exits: int,
    not_sent: Mapping[str, str],
    log_text: str = "",
) -> dict[str, Any]:
    return {
        **{kind: sum(1 for f in faults if f.kind == kind) for kind in INJECTED_KINDS},
        "hit_running_step": len(findings.hits),
        "hit_a_workflow": sum(1 for f in faults if f.kind in ("kill", "stop", "host") and f.held),
        "skipped_no_target": skipped,
        "lock_held_s": _held_s(faults, "lock"),
        "outage_held_s": _held_s(faults, "outage"),
        "diskfull_held_s": _held_s(faults, "diskfull"),
        "lock_failures": [f.detail for f in faults if f.kind in ("lock", "outage") and f.detail],
        "not_sent": dict(not_sent),
        "supervisor_starts": starts,
        "supervisor_unexpected_exits": unexpected_exits,
        "healthy_killed_as_frozen": healthy_workers_killed_as_frozen(faults, log_text),
    }


def _steps_section(evidence: Evidence, findings: StepFindings) -> dict[str, Any]:
    rows = evidence.step_rows.values()
    counts = [len(executions) for executions in evidence.executions.values()]
    return {
        "executions": sum(counts),
        "distinct": len(counts),
        "completed_rows": sum(1 for s in rows if s.status == StepStatus.COMPLETED.value),
        "max_starts_of_a_step": max((s.attempts for s in rows), default=0),
        "steps_started_3_times_or_more": sum(1 for s in rows if s.attempts >= 3),
        "executed_more_than_once": sum(1 for n in counts if n > 1),
        "reexecutions": sum(n - 1 for n in counts),
        "explained_by_kill": findings.explained["kill"],
        "explained_by_stop": findings.explained["stop"],
        "explained_by_host": findings.explained["host"],
        "explained_by_outage": findings.explained["outage"] + findings.explained["diskfull"],
        "unexplained": len(findings.unexplained),
        "unexplained_detail": findings.unexplained[:10],
        "completed_step_reexecuted": len(findings.completed_reexecuted),
        "completed_step_reexecuted_detail": findings.completed_reexecuted[:10],
        "output_mismatches": len(findings.output_mismatches),
        "output_mismatch_detail": findings.output_mismatches[:10],
        "result_mismatches": len(findings.result_mismatches),
        "fenced_writes_accepted": len(findings.fenced_accepted),
        "fenced_writes_detail": findings.fenced_accepted[:10],
        "side_effects_by_fenced_workers": findings.fenced_effects,
    }


def _traceback_line(line: str) -> bool:
    """A traceback's first line in a text log, or a JSON log line carrying one (its ``exc`` field)."""
    return line.startswith("Traceback") or (line.startswith("{") and '"exc": "Traceback' in line)


def _locks_section(evidence: Evidence, log_text: str) -> dict[str, Any]:
    in_workflows = [w.id for w in evidence.workflows if _has_lock_error(w.error)]
    in_workflows += [f"{s.workflow_id}/{s.step_key}" for s in evidence.step_rows.values() if _has_lock_error(s.error)]
    log_lines = log_text.splitlines()
    in_log = [line for line in log_lines if _has_lock_error(line)]
    return {
        "errors_in_workflows": len(in_workflows),
        "errors_in_workflows_detail": in_workflows[:10],
        "errors_in_engine_logs": len(in_log),
        "engine_log_samples": in_log[:5],
        "tracebacks_in_logs": sum(1 for line in log_lines if _traceback_line(line)),
    }


def _next_progress(fault: Fault, workflow: WorkflowRecord, rows: Sequence[LedgerRecord]) -> float | None:
    """When ``workflow`` next moved after ``fault``, on a process the fault did not take down."""
    gone = set(fault.fleet) if fault.kind in ("supervisor", "host") else {fault.pid}
    nxt = next((r.at for r in rows if r.at > fault.start and r.pid not in gone), None)
    if nxt is None and workflow.status == Status.COMPLETED.value and workflow.updated_at > fault.start:
        nxt = workflow.updated_at
    return nxt


def _recovery_section(evidence: Evidence, faults: Sequence[Fault]) -> dict[str, Any]:
    """From a fault to the next step of each workflow its target held (also with no lock fault overlapping)."""
    by_workflow: dict[str, list[LedgerRecord]] = {}
    for rows in evidence.executions.values():
        for r in rows:
            by_workflow.setdefault(r.workflow_id, []).append(r)
    for rows in by_workflow.values():
        rows.sort(key=lambda r: r.at)
    recovery: dict[str, list[float]] = {kind: [] for kind in RECOVERED_KINDS}
    unlocked: dict[str, list[float]] = {kind: [] for kind in RECOVERED_KINDS}
    locks = [(f.start, f.end or f.start) for f in faults if f.kind in STALL_KINDS]
    for fault in faults:
        if fault.kind not in recovery:
            continue
        for wf in fault.held:
            if wf not in evidence.checks:
                continue
            nxt = _next_progress(fault, evidence.checks[wf], by_workflow.get(wf, []))
            if nxt is None:
                continue
            recovery[fault.kind].append(nxt - fault.start)
            if not any(start < nxt and end > fault.start for start, end in locks):
                unlocked[fault.kind].append(nxt - fault.start)
    fleet_exit = [f.end - f.start for f in faults if f.kind == "supervisor" and f.end is not None]
    return {
        **{kind: _summary(recovery[kind]) for kind in RECOVERED_KINDS},
        **{f"{kind}_no_lock_overlap": _summary(unlocked[kind]) for kind in RECOVERED_KINDS},
        "old_fleet_exit_after_supervisor_kill": _summary(fleet_exit),
    }


def _throughput_section(evidence: Evidence, started: float, ended: float) -> dict[str, Any]:
    done_times = [w.updated_at for w in evidence.checks.values() if w.status == Status.COMPLETED.value]
    last = max(done_times) if done_times else ended
    duration = max(last - started, 1e-9)
    step_count = sum(len(rows) for rows in evidence.executions.values())
    return {
        "duration_s": round(duration, 2),
        "workflows_per_s": round(len(done_times) / duration, 2),
        "steps_per_s": round(step_count / duration, 1),
    }


def _fault_log(faults: Sequence[Fault]) -> list[dict[str, Any]]:
    return [
        {**asdict(f), "start": round(f.start, 3), "end": None if f.end is None else round(f.end, 3)}
        for f in faults
    ]


def _checks(options: ChaosOptions, sections: dict[str, Any]) -> dict[str, bool]:
    """The invariants, each from the sections: the verdict passes only if all hold."""
    w, s, exp = sections["workflows"], sections["steps"], sections["expected"]
    end, foreign = sections["end_state"], sections["foreign"]
    return {
        "all_completed": w["stuck"] == 0 and w["failed"] == 0 and w["submitted"] == options.workflows,
        "no_completed_step_reexecuted": s["completed_step_reexecuted"] == 0,
        "reexecutions_explained": s["unexplained"] == 0,
        "no_fenced_write_accepted": s["fenced_writes_accepted"] == 0,
        "no_lock_error_in_workflows": sections["locks"]["errors_in_workflows"] == 0,
        "outputs_match": s["output_mismatches"] == 0 and s["result_mismatches"] == 0,
        "bad_inputs_documented": all(b["ok"] for b in exp["detail"])
        and len(exp["detail"]) == options.bad_inputs * len(BAD_INPUT),
        "no_orphans": not sections["orphans"],
        "supervisor_never_exited_by_itself": sections["faults"]["supervisor_unexpected_exits"] == 0,
        "no_healthy_worker_killed_as_frozen": not sections["faults"]["healthy_killed_as_frozen"],
        "no_workflow_stuck_running": end["stuck_running"] == 0,
        "ended_workflows_released_their_lease": end["ended_with_lease_held"] == 0,
        "no_workflow_failed_by_infrastructure": end["failed_by_infrastructure"] == 0,
        "no_step_failed_by_infrastructure": end["steps_failed_by_infrastructure"] == 0,
        "foreign_exceptions_recorded": foreign["not_recorded"] == 0 and foreign["branch_mismatches"] == 0,
    }


# --------------------------------------------------------------------------- the verdict


def analyse(
    options: ChaosOptions,
    *,
    seed: int,
    db: str,
    workflows: Iterable[WorkflowRecord],
    steps: Iterable[StepRecord],
    ledger: Iterable[LedgerRecord],
    faults: Sequence[Fault],
    started: float,
    ended: float,
    finished: bool,
    log_text: str,
    orphans: list[dict[str, Any]],
    supervisor_starts: int,
    unserved: Sequence[str] = (UNKNOWN_NAME,),
    unexpected_supervisor_deaths: int,
    supervisor_stopped_in_time: bool,
    skipped_faults: int = 0,
    not_sent: Mapping[str, str] | None = None,
    lease_holders: Mapping[str, str] | None = None,
    live_workers: Collection[str] = (),
    fleet_drained: bool = True,
) -> dict[str, Any]:
    """The verdict of a run, from the database, the faults sent and the fleet's log.

    Returns a JSON-ready dict: ``ok`` (every check held), ``checks`` (each
    invariant), then the sections ``config``, ``workflows``, ``expected``,
    ``faults``, ``steps``, ``locks``, ``end_state``, ``foreign``, ``recovery``,
    ``throughput``, ``orphans``, ``supervisor_stopped_in_time`` and
    ``fault_log``. ``not_sent`` maps a fault kind that could not be sent to
    why; ``lease_holders`` maps a workflow id to the worker holding its lease
    at the end and ``live_workers`` names the workers whose process still
    ran; ``fleet_drained`` says the fleet was stopped before (then every
    RUNNING workflow is stuck). Pure: reads nothing.
    """
    evidence = index(workflows, steps, ledger)
    findings = judge_steps(evidence, faults, window=max(5.0, options.longest_hold() + 2 * options.ttl))
    judge_results(evidence, findings)
    sections = {
        "config": {**asdict(options), "faults": list(options.faults), "seed": seed, "db": db},
        "workflows": _workflows_section(evidence, finished),
        "expected": _expected_section(evidence, unserved),
        "faults": _faults_section(
            faults,
            findings,
            skipped=skipped_faults,
            starts=supervisor_starts,
            unexpected_exits=unexpected_supervisor_deaths,
            not_sent=not_sent or {},
            log_text=log_text,
        ),
        "steps": _steps_section(evidence, findings),
        "locks": _locks_section(evidence, log_text),
        "end_state": end_state_section(evidence, lease_holders or {}, live_workers, fleet_drained),
        "foreign": foreign_section(evidence),
        "recovery": _recovery_section(evidence, faults),
        "throughput": _throughput_section(evidence, started, ended),
        "orphans": orphans,
        "supervisor_stopped_in_time": supervisor_stopped_in_time,
        "fault_log": _fault_log(faults),
    }
    checks = _checks(options, sections)
    return {"ok": all(checks.values()), "checks": checks, **sections}
