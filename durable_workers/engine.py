"""Runs one claimed attempt of a workflow and records how it ended.

Every attempt ends with exactly one recorded outcome (docs/architecture.md,
"Attempt lifecycle"):

========================================  =====================================
how the attempt ends                      what is recorded
========================================  =====================================
the workflow returns                      COMPLETED + result, lease released
it raises (anything, BaseException too)   FAILED + error, lease released
NonDeterminismError, CorruptRecordError   FAILED + reason (not catchable)
drain (WorkerStopping)                    PENDING again, lease released
a step timed out with retries left        PENDING again (retry in a fresh worker)
StoreUnavailable                          nothing now; the worker hands the
                                          workflow back once the store answers
LeaseLost, WorkflowAborted                nothing more (someone else decided)
========================================  =====================================
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from typing import Any

from . import keys
from .backends import Store
from .codec import encode_json
from .context import AttemptControl, Context, Listener
from .errors import (
    AttemptAbandoned,
    CorruptRecordError,
    DurableInterrupt,
    LeaseLost,
    NonDeterminismError,
    StoreUnavailable,
    WorkerStopping,
    WorkflowAborted,
)
from .records import Claim, Status, WorkflowRecord
from .registry import Registry, WorkflowSpec


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended.

    ``status`` is COMPLETED or FAILED when this attempt recorded the end,
    ``LOST`` when the lease was lost (nothing more was written), ``RELEASED``
    when a stopping worker handed the workflow back, or ``ABANDONED`` when the
    attempt gave up (a timed-out step, the store unavailable). ``reason`` says
    why it was abandoned; ``release_pending`` is True when the store could not
    be told yet, so the worker must hand the workflow back later
    (:meth:`Store.release` with the same token).
    """

    workflow_id: str
    status: str
    result: Any = None
    error: str | None = None
    reason: str | None = None
    release_pending: bool = False


def describe_failure(exc: BaseException) -> str:
    """First line ``Type: message``, then the traceback, as stored in ``workflows.error``."""
    head = f"{type(exc).__name__}: {exc}"
    return head + "\n" + "".join(traceback.format_exception(exc)).rstrip()


def _ending(spec: WorkflowSpec, ctx: Context, record: WorkflowRecord) -> tuple[Status, dict[str, Any]]:
    """Run the workflow body; return the status and fields to record. Interrupts propagate."""
    try:
        if record.corrupt:
            raise CorruptRecordError(record.id, record.corrupt[0], detail="not a JSON object")
        result = spec.fn(ctx, **record.input)
        if ctx.diverged is not None:  # the workflow caught the NonDeterminismError: fail anyway
            raise ctx.diverged
        missing = ctx.unreplayed_steps()
        if missing:
            raise NonDeterminismError(
                f"workflow {record.id} changed under replay: recorded steps {', '.join(missing)} "
                "were not called this time"
            )
        return Status.COMPLETED, {"result_json": encode_json(result, f"workflow {record.id}")}
    except CorruptRecordError as exc:
        return Status.FAILED, {"error": describe_failure(exc)}
    except DurableInterrupt:
        raise
    except BaseException as exc:  # the workflow's own failure, foreign BaseExceptions included
        return Status.FAILED, {"error": describe_failure(ctx.diverged or exc)}


def _give_back(store: Store, claim: Claim, worker_id: str, status: str, **release: Any) -> Outcome:
    """Hand the workflow back to PENDING; when the store is down, leave that to the worker."""
    workflow_id = claim.workflow.id
    reason = release.get("reason")
    try:
        released = store.release(workflow_id, worker_id, claim.token, **release)
    except StoreUnavailable as exc:
        return Outcome(workflow_id, "ABANDONED", reason=reason or exc.cause, release_pending=True)
    return Outcome(workflow_id, status if released else "LOST", reason=reason)


def run_claim(
    store: Store,
    registry: Registry,
    claim: Claim,
    *,
    worker_id: str,
    listener: Listener | None = None,
    control: AttemptControl | None = None,
) -> Outcome:
    """Run the claimed workflow from the top, replaying recorded steps; record how it ended."""
    record = claim.workflow
    spec = registry.get(record.name)
    ctx = Context(
        workflow_id=record.id,
        store=store,
        worker_id=worker_id,
        token=claim.token,
        recorded=claim.steps,
        listener=listener,
        crash_at=record.crash_at if record.attempts == 1 else None,
        control=control,
        attempt=record.attempts,
    )
    keys.activate(ctx)
    try:
        status, fields = _ending(spec, ctx, record)
        store.finish_workflow(record.id, status, worker_id=worker_id, token=claim.token, **fields)
        if status is Status.COMPLETED:
            return Outcome(record.id, status.value, result=json.loads(fields["result_json"]))
        return Outcome(record.id, status.value, error=fields.get("error"))
    except LeaseLost:
        return Outcome(record.id, "LOST")
    except WorkflowAborted as exc:
        return Outcome(record.id, Status.FAILED.value, error=str(exc))
    except WorkerStopping:
        return _give_back(store, claim, worker_id, "RELEASED")
    except AttemptAbandoned as exc:
        return _give_back(store, claim, worker_id, "ABANDONED", reason=str(exc), retry_in=exc.retry_in)
    except StoreUnavailable as exc:
        reason = f"store unavailable: {exc.cause}"
        return _give_back(store, claim, worker_id, "ABANDONED", reason=reason)
    finally:
        keys.activate(None)
