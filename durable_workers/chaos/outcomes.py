"""How each workflow ended: none left RUNNING, none FAILED by infrastructure, foreign exceptions recorded.

Two sections of the verdict (:func:`~durable_workers.chaos.analyse`):
:func:`end_state_section` (every attempt ended with one recorded outcome) and
:func:`foreign_section` (hazard steps that raised a foreign ``BaseException``
were recorded as step failures, and each workflow took the branch its
recorded outcome decides).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from ..records import Status, StepStatus, TERMINAL
from .executions import Evidence, value_of
from .options import INFRA_MARKERS

#: Name of the check step that may raise a foreign BaseException once (see checkflows).
HAZARD_STEP = "hazard"


def has_infra_error(text: str | None) -> bool:
    """True when a stored error mentions infrastructure trouble (:data:`INFRA_MARKERS`)."""
    return text is not None and any(marker in text for marker in INFRA_MARKERS)


def _stuck_running(
    evidence: Evidence, holders: Mapping[str, str], live: Collection[str], drained: bool
) -> list[dict[str, Any]]:
    """Workflows RUNNING at the end once the fleet drained, or RUNNING with no live lease holder."""
    stuck = []
    for w in evidence.workflows:
        if w.status != Status.RUNNING.value:
            continue
        holder = holders.get(w.id)
        if drained or holder not in live:
            stuck.append({"id": w.id, "name": w.name, "lease_holder": holder, "holder_live": holder in live})
    return stuck


def end_state_section(
    evidence: Evidence, holders: Mapping[str, str], live: Collection[str], drained: bool
) -> dict[str, Any]:
    """Every attempt ended with one recorded outcome: none left RUNNING, none FAILED by infrastructure.

    Also the ended workflows whose lease is still held (an ended attempt releases its lease).
    """
    stuck = _stuck_running(evidence, holders, live, drained)
    ended_held = [w.id for w in evidence.workflows if w.status in TERMINAL and w.id in holders]
    failed = [w for w in evidence.workflows if w.status == Status.FAILED.value and has_infra_error(w.error)]
    steps = [s for s in evidence.step_rows.values() if s.status == StepStatus.FAILED.value and has_infra_error(s.error)]
    return {
        "stuck_running": len(stuck),
        "stuck_running_detail": stuck[:10],
        "ended_with_lease_held": len(ended_held),
        "ended_with_lease_held_detail": ended_held[:10],
        "failed_by_infrastructure": len(failed),
        "failed_by_infrastructure_detail": [
            {"id": w.id, "error": (w.error or "").splitlines()[:1]} for w in failed[:10]
        ],
        "steps_failed_by_infrastructure": len(steps),
        "steps_failed_by_infrastructure_detail": [f"{s.workflow_id}/{s.step_key}" for s in steps[:10]],
    }


def _raised(evidence: Evidence) -> dict[str, str]:
    """Workflow id -> the foreign BaseException its hazard step raised (from the ledger)."""
    raised: dict[str, str] = {}
    for (wf, key), rows in evidence.executions.items():
        if not key.startswith(f"{HAZARD_STEP}#"):
            continue
        for row in rows:
            value = value_of(row.value)
            if isinstance(value, dict) and value.get("raised"):
                raised[wf] = str(value["raised"])
    return raised


def _branch_mismatches(evidence: Evidence) -> tuple[int, list[dict[str, Any]]]:
    """(fallbacks taken, workflows whose branch disagrees with their hazard step's recorded outcome)."""
    fallbacks, wrong = 0, []
    for w in evidence.checks.values():
        if w.status != Status.COMPLETED.value or not isinstance(w.result, dict) or "fallback" not in w.result:
            continue
        step = evidence.step_rows.get((w.id, f"{HAZARD_STEP}#1"))
        failed = step is not None and step.status == StepStatus.FAILED.value
        fallbacks += bool(w.result["fallback"])
        if bool(w.result["fallback"]) != failed:
            wrong.append({"id": w.id, "fallback": w.result["fallback"], "hazard_failed": failed})
    return fallbacks, wrong


def foreign_section(evidence: Evidence) -> dict[str, Any]:
    """Hazard steps that raised a foreign BaseException: recorded FAILED with it, and the branch followed.

    A hazard step that raised and is COMPLETED was executed again after a kill
    cut its failure short (that re-execution is judged like any other).
    """
    raised = _raised(evidence)
    recorded, rerun, unrecorded = 0, 0, []
    for wf, name in raised.items():
        step = evidence.step_rows.get((wf, f"{HAZARD_STEP}#1"))
        status = None if step is None else step.status
        if status == StepStatus.FAILED.value and name in (step.error or ""):
            recorded += 1
        elif status == StepStatus.COMPLETED.value:
            rerun += 1
        else:
            unrecorded.append({"id": wf, "raised": name, "step_status": status})
    fallbacks, wrong = _branch_mismatches(evidence)
    return {
        "raised": len(raised),
        "recorded_as_step_failure": recorded,
        "run_again_after_a_fault": rerun,
        "not_recorded": len(unrecorded),
        "not_recorded_detail": unrecorded[:10],
        "fallback_taken": fallbacks,
        "branch_mismatches": len(wrong),
        "branch_mismatch_detail": wrong[:10],
    }
