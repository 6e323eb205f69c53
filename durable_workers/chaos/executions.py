"""Judging every execution of a check step: kept, explained by a fault, or a violation.

:func:`index` arranges what a run left (:class:`Evidence`); :func:`judge_steps`
and :func:`judge_results` match each ledger row (an execution of a step
function) against the step row that recorded its result, the workflow result,
the attempts' fencing tokens and the kills and stops of the worker that ran it
(:class:`StepFindings`). :mod:`.verdict` turns the findings into the verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TypeGuard

from ..records import LedgerRecord, Status, StepRecord, StepStatus, WorkflowRecord
from .options import BAD_INPUT, CHECK_NAMES, Fault

#: Seconds after SIGCONT within which a stopped worker's in-flight step may still write.
RESUME_GRACE = 1.0
#: Clock slack between a ledger row and a fault (same host, same clock).
SLACK = 0.05
#: Faults that take a worker down or freeze it: they explain executions of that worker only.
WORKER_FAULTS = ("kill", "stop", "host")
#: Faults that make the store unavailable to every worker: they explain any worker's
#: execution that was under way when they began (its attempt was abandoned).
STORE_FAULTS = ("outage", "diskfull")
#: Seconds within which the engine records the failure of a step that raised (one short
#: write; more only while a lock or outage fault holds the store): a fault that came later
#: cannot explain why that step ran again, since the raise should have been recorded by then.
RAISE_RECORD_S = 0.25


StepKey = tuple[str, str]  # (workflow_id, step_key)


def value_of(text: str | None) -> Any:
    """A ledger value or step output decoded from JSON (the text itself if it is not JSON; None stays None)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _completed(step: StepRecord | None) -> TypeGuard[StepRecord]:
    return step is not None and step.status == StepStatus.COMPLETED.value


# --------------------------------------------------------------------------- evidence


@dataclass
class Evidence:
    """What a run left, indexed: workflows, step rows and ledger rows of the check workflows."""

    workflows: list[WorkflowRecord]  # every workflow submitted
    checks: dict[str, WorkflowRecord]  # id -> check workflow
    bad: list[WorkflowRecord]  # the bad-input workflows
    step_rows: dict[StepKey, StepRecord]
    executions: dict[StepKey, list[LedgerRecord]]  # ledger rows of each step, as written
    begins: dict[str, list[LedgerRecord]]  # workflow id -> its "@..." attempt markers


def index(workflows: Iterable[WorkflowRecord], steps: Iterable[StepRecord], ledger: Iterable[LedgerRecord]) -> Evidence:
    """Arrange a run's rows for judging: only check workflows' steps and ledger rows are kept."""
    workflows = list(workflows)
    checks = {w.id: w for w in workflows if w.name in CHECK_NAMES}
    evidence = Evidence(
        workflows=workflows,
        checks=checks,
        bad=[w for w in workflows if w.name in BAD_INPUT],
        step_rows={(s.workflow_id, s.step_key): s for s in steps if s.workflow_id in checks},
        executions={},
        begins={},
    )
    for row in ledger:
        if row.workflow_id not in checks:
            continue
        if row.step_key.startswith("@"):
            evidence.begins.setdefault(row.workflow_id, []).append(row)
        else:
            evidence.executions.setdefault((row.workflow_id, row.step_key), []).append(row)
    return evidence


# --------------------------------------------------------------------------- judging executions


@dataclass
class Suspects:
    """The faults that may explain an execution cut short, arranged for :func:`_judge_step`."""

    kills: dict[int, list[Fault]]  # pid -> its kills and stops
    outages: list[Fault]  # store faults: any worker's execution
    stalls: list[Fault]  # faults holding the write lock or the store (lock, outage, diskfull)
    window: float  # how long after an execution began a fault may come and explain it

    def of(self, row: LedgerRecord) -> list[Fault]:
        """The faults that may explain ``row``'s execution."""
        return self.kills.get(row.pid, []) + self.outages

    def window_of(self, row: LedgerRecord) -> float:
        """``window``; for an execution that raised, only until its failure could be recorded."""
        value = value_of(row.value)
        if not (isinstance(value, dict) and value.get("raised")):
            return self.window
        reach = RAISE_RECORD_S  # plus any stall that kept the failure from being written
        for f in self.stalls:
            end = f.end if f.end is not None else f.start + self.window
            if f.start <= row.at + reach and end >= row.at:
                reach = max(reach, end - row.at + RAISE_RECORD_S)
        return reach


@dataclass
class StepFindings:
    """What the executions of the check steps show, gathered by :func:`judge_steps`."""

    output_mismatches: list[dict[str, Any]] = field(default_factory=list)
    result_mismatches: list[dict[str, Any]] = field(default_factory=list)
    explained: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WORKER_FAULTS + STORE_FAULTS, 0))
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    completed_reexecuted: list[dict[str, Any]] = field(default_factory=list)
    fenced_accepted: list[dict[str, Any]] = field(default_factory=list)
    fenced_effects: int = 0
    hits: set[int] = field(default_factory=set)  # ids of the faults that hit a running step


def _began(row: LedgerRecord) -> float:
    """When the step function of a ledger row began (its write may have waited for the lock)."""
    value = value_of(row.value)
    began = value.get("began") if isinstance(value, dict) else None
    return float(began) if isinstance(began, (int, float)) else row.at


def _explain(row: LedgerRecord, faults: Sequence[Fault], done_at: float, window: float) -> Fault | None:
    """The kill or stop of the row's worker, or the store outage, that cut that execution short, if any.

    A kill explains an execution it came after (within ``window`` s); a stop
    one it came after or that ran on right after SIGCONT; an outage (or a
    full disk) one that began before it ended. Each must come before the step
    completed elsewhere.
    """
    for fault in faults:
        if fault.start > done_at + SLACK or row.at < fault.start - window:
            continue
        if fault.kind in ("kill", "host") and fault.start >= row.at - SLACK:
            return fault
        if fault.kind == "stop" and _began(row) <= (fault.end or float("inf")) + RESUME_GRACE:
            return fault
        if fault.kind in STORE_FAULTS and _began(row) <= (fault.end or float("inf")) + SLACK:
            return fault
    return None


def _newer_begin(begins: Sequence[LedgerRecord], token: int, before: float) -> LedgerRecord | None:
    """An attempt with a newer token than ``token`` that began before ``before``, if any."""
    for begin in begins:
        if begin.token is not None and begin.token > token and begin.at < before - SLACK:
            return begin
    return None


def _newest(rows: Sequence[LedgerRecord]) -> int:
    """The index of the execution of the newest attempt (highest token; the last written of it).

    Not simply the last row: a stopped worker resumed after a newer attempt
    recorded the step's failure may write its stale execution's row later.
    """
    return max(range(len(rows)), key=lambda i: (-1 if rows[i].token is None else rows[i].token, i))


def _winner(key: StepKey, rows: list[LedgerRecord], step: StepRecord, findings: StepFindings) -> LedgerRecord | None:
    """The execution whose value the COMPLETED ``step`` row holds (a mismatch is noted)."""
    output = value_of(step.output)
    for row in rows:
        if value_of(row.value) == output:
            return row
    findings.output_mismatches.append(
        {"workflow_id": key[0], "step_key": key[1], "why": "output matches no execution", "output": step.output}
    )
    return None


def _judge_loser(
    row: LedgerRecord, faults: Sequence[Fault], done_at: float, window: float, findings: StepFindings
) -> None:
    """An execution whose value was not kept: explained by a fault, or not; after completion, or not."""
    if row.token is not None and row.lease_token is not None and row.lease_token != row.token:
        findings.fenced_effects += 1
    cause = _explain(row, faults, done_at, window)
    if cause is not None:
        findings.explained[cause.kind] += 1
        findings.hits.add(id(cause))
    else:
        findings.unexplained.append(
            {
                "workflow_id": row.workflow_id,
                "step_key": row.step_key,
                "pid": row.pid,
                "at": row.at,
                "token": row.token,
                "lease_token": row.lease_token,
                "completed_at": None if done_at == float("inf") else done_at,
            }
        )
    after_completion = row.step_status == StepStatus.COMPLETED.value or row.at > done_at + SLACK
    if after_completion and (cause is None or cause.kind != "stop"):
        findings.completed_reexecuted.append({"workflow_id": row.workflow_id, "step_key": row.step_key, "pid": row.pid})


def _judge_step(
    key: StepKey,
    rows: list[LedgerRecord],
    evidence: Evidence,
    suspects: Suspects,
    findings: StepFindings,
) -> None:
    """The executions of one step: which one its row kept, and what cut each other one short."""
    step = evidence.step_rows.get(key)
    winner, finished_at = None, None
    if _completed(step):
        winner, finished_at = _winner(key, rows, step, findings), step.finished_at
    done_at = float("inf") if finished_at is None else finished_at
    losers = [r for r in rows if r is not winner]
    if winner is None and losers:  # never completed: the newest attempt's execution needs no explanation
        del losers[_newest(losers)]
    for row in losers:
        _judge_loser(row, suspects.of(row), done_at, suspects.window_of(row), findings)
    # a fenced write accepted: the step's recorded result was written by an older
    # token after a newer lease holder had already begun the workflow
    if winner is not None and winner.token is not None and finished_at is not None:
        newer = _newer_begin(evidence.begins.get(key[0], []), winner.token, finished_at)
        if newer is not None:
            findings.fenced_accepted.append(
                {"workflow_id": key[0], "step_key": key[1], "token": winner.token, "newer_token": newer.token}
            )


def judge_steps(evidence: Evidence, faults: Sequence[Fault], window: float) -> StepFindings:
    """Match every execution of a check step against its step row, the kills/stops of its worker and the outages.

    A kill or stop explains an execution of the worker it hit, and an outage
    an execution of any worker, if it came at most ``window`` s after the
    execution began (see :func:`_explain`); for an execution that raised, only
    if it came before its failure could be recorded (:meth:`Suspects.window_of`).
    """
    findings = StepFindings()
    suspects = Suspects(
        kills={},
        outages=[f for f in faults if f.kind in STORE_FAULTS],
        stalls=[f for f in faults if f.kind == "lock" or f.kind in STORE_FAULTS],
        window=window,
    )
    for fault in faults:
        if fault.kind in WORKER_FAULTS and fault.pid is not None:
            for pid in fault.fleet if fault.kind == "host" else [fault.pid]:  # a host kill hits all its workers
                suspects.kills.setdefault(pid, []).append(fault)
    for key, step in evidence.step_rows.items():
        if _completed(step) and key not in evidence.executions:
            findings.output_mismatches.append(
                {"workflow_id": key[0], "step_key": key[1], "why": "no execution in the ledger"}
            )
    for key, rows in evidence.executions.items():
        _judge_step(key, rows, evidence, suspects, findings)
    return findings


def judge_results(evidence: Evidence, findings: StepFindings) -> None:
    """Workflow results: each nonce matches its step row (replay), none written by a fenced attempt."""
    for w in evidence.checks.values():
        if w.status != Status.COMPLETED.value or not isinstance(w.result, dict):
            continue
        for step_key, nonce in (w.result.get("nonces") or {}).items():
            row = evidence.step_rows.get((w.id, step_key))
            if row is None or (value_of(row.output) or {}).get("nonce") != nonce:
                findings.result_mismatches.append({"workflow_id": w.id, "step_key": step_key})
        token = w.result.get("token")
        newer = None if token is None else _newer_begin(evidence.begins.get(w.id, []), token, w.updated_at)
        if newer is not None:
            findings.fenced_accepted.append(
                {"workflow_id": w.id, "step_key": "(result)", "token": token, "newer_token": newer.token}
            )
