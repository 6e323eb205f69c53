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
it sleeps (ctx.sleep, WorkflowSuspended)  WAITING + wake_at, lease released
it is past its deadline                   CANCELLED "deadline exceeded" (children too)
a step timed out with retries left        the failed attempt; the lease is held until
                                          the process exits, then a fresh one retries
StoreUnavailable                          nothing now; the worker hands the
                                          workflow back once the store answers
LeaseLost, WorkflowAborted                nothing more (someone else decided)
========================================  =====================================
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from . import keys, tracing
from .attempt import SUSPEND_POINT, crash_if_asked, parse_crash_at
from .backends import Store
from .codec import encode_json, format_traceback, safe_str
from .context import AttemptControl, Context, Listener
from .errors import (
    AttemptAbandoned,
    CorruptRecordError,
    DeadlineExceeded,
    DurableInterrupt,
    LeaseLost,
    NonDeterminismError,
    StoreUnavailable,
    WorkerStopping,
    WorkflowAborted,
    WorkflowSuspended,
)
from .records import DEADLINE_EXCEEDED, Claim, Status, WorkflowRecord
from .registry import Registry, WorkflowSpec
from .typed import workflow_inputs


log = logging.getLogger("durable_workers.worker")


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended.

    ``status`` is COMPLETED or FAILED when this attempt recorded the end,
    ``LOST`` when the lease was lost (nothing more was written), ``WAITING``
    when it suspended until ``wake_at`` (a durable sleep), ``RELEASED``
    when a stopping worker handed the workflow back, or ``ABANDONED`` when the
    attempt gave up (a timed-out step, the store unavailable). ``reason`` says
    why it was abandoned; ``release_pending`` is True when the store could not
    be told yet, so the worker must hand the workflow back later
    (:meth:`Store.release` with the same token). ``hold`` is True when a
    timed-out execution may still run in this process: the worker keeps the
    lease renewed until it exits, so no retry starts beside it.
    """

    workflow_id: str
    status: str
    result: Any = None
    error: str | None = None
    reason: str | None = None
    release_pending: bool = False
    hold: bool = False
    wake_at: float | None = None


def describe_failure(exc: BaseException) -> str:
    """First line ``Type: message``, then the traceback, as stored in ``workflows.error``."""
    return f"{type(exc).__name__}: {safe_str(exc)}\n{format_traceback(exc)}"


def _ending(spec: WorkflowSpec, ctx: Context, record: WorkflowRecord) -> tuple[Status, dict[str, Any]]:
    """Run the workflow body; return the status and fields to record. Interrupts propagate."""
    try:
        if record.corrupt:
            raise CorruptRecordError(record.id, record.corrupt[0], detail="not a JSON object")
        result = spec.fn(ctx, **workflow_inputs(spec.fn, record.input))
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
        ending = ctx.diverged or exc
        return Status.FAILED, {"error": describe_failure(ending), "failed_step": ctx.failed_step_of(ending)}


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
    """Run the claimed workflow from the top, replaying recorded steps; record how it ended.

    With OpenTelemetry configured the attempt is a span, its step executions child spans
    (:mod:`durable_workers.tracing`).
    """
    with tracing.attempt(store, claim, worker_id) as traced:
        outcome = _attempt(store, registry, claim, worker_id, traced.listener(listener), control)
        traced.finish(outcome)
        return outcome


def _attempt(
    store: Store, registry: Registry, claim: Claim, worker_id: str, listener: Listener | None,
    control: AttemptControl | None,
) -> Outcome:  # fmt: skip
    """:func:`run_claim`'s attempt: exactly one outcome recorded (see the module text)."""
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
    ctx.deadline = run_deadline(record, spec)
    keys.activate(ctx)
    try:
        ctx.check_deadline()
        status, fields = _ending(spec, ctx, record)
        store.finish_workflow(
            record.id, status, worker_id=worker_id, token=claim.token, parent_id=record.parent_id, **fields
        )
        if status is Status.COMPLETED:
            return Outcome(record.id, status.value, result=json.loads(fields["result_json"]))
        return Outcome(record.id, status.value, error=fields.get("error"))
    except LeaseLost:
        return Outcome(record.id, "LOST")
    except WorkflowAborted as exc:
        return Outcome(record.id, Status.FAILED.value, error=str(exc))
    except WorkflowSuspended as exc:
        return _suspend(store, claim, worker_id, exc, ctx)
    except DeadlineExceeded:
        return _past_deadline(store, claim, worker_id, ctx)
    except WorkerStopping:
        if ctx.overran:  # a timed-out step of this attempt may still be running here
            return _hold(store, claim, worker_id, "stopped after a step timed out")
        return _give_back(store, claim, worker_id, "RELEASED")
    except AttemptAbandoned as exc:
        return _hold(store, claim, worker_id, str(exc))
    except StoreUnavailable as exc:
        reason = f"store unavailable: {exc.cause}"
        if ctx.overran:  # never hand back while a timed-out step may still run here
            return _hold(store, claim, worker_id, reason)
        return _give_back(store, claim, worker_id, "ABANDONED", reason=reason)
    except Exception as exc:  # an engine or store bug: still exactly one outcome
        return _last_resort(store, claim, worker_id, exc)
    finally:
        keys.activate(None)


def run_deadline(record: WorkflowRecord, spec: WorkflowSpec) -> float | None:
    """The run's deadline: the row's, else its start (``run_at``) plus the registered ``@workflow(timeout=)``, else None."""
    if record.deadline_at is not None:
        return record.deadline_at
    return None if spec.timeout is None else record.run_at + spec.timeout


def _past_deadline(store: Store, claim: Claim, worker_id: str, ctx: Context) -> Outcome:
    """Record CANCELLED, "deadline exceeded" (descendants too); hold instead while a timed-out step may run here."""
    if ctx.overran:
        return _hold(store, claim, worker_id, "past its deadline after a step timed out")
    record = claim.workflow
    try:
        store.finish_workflow(
            record.id, Status.CANCELLED, error=DEADLINE_EXCEEDED, worker_id=worker_id, token=claim.token,
            parent_id=record.parent_id,
        )  # fmt: skip
    except LeaseLost:
        return Outcome(record.id, "LOST")
    except StoreUnavailable as exc:
        return _give_back(store, claim, worker_id, "ABANDONED", reason=f"store unavailable: {exc.cause}")
    return Outcome(record.id, Status.CANCELLED.value, error=DEADLINE_EXCEEDED)


def _suspend(store: Store, claim: Claim, worker_id: str, suspended: WorkflowSuspended, ctx: Context) -> Outcome:
    """Record WAITING until ``wake_at`` (lease released); hold instead while a timed-out step may run here."""
    if ctx.overran:
        return _hold(store, claim, worker_id, "suspended after a step timed out")
    try:
        wake_at = suspended.wake_at
        crash_at = _suspend_crash_at(claim)
        crash_if_asked(crash_at, SUSPEND_POINT, "before")
        store.suspend_workflow(
            claim.workflow.id, wake_at, worker_id=worker_id, token=claim.token, topic=suspended.topic,
            child=suspended.child, deadline_at=ctx.deadline,
        )  # fmt: skip
        crash_if_asked(crash_at, SUSPEND_POINT, "after")
    except LeaseLost:
        return Outcome(claim.workflow.id, "LOST")
    except StoreUnavailable as exc:
        return _give_back(store, claim, worker_id, "ABANDONED", reason=f"store unavailable: {exc.cause}")
    return Outcome(claim.workflow.id, Status.WAITING.value, wake_at=wake_at)


def _suspend_crash_at(claim: Claim) -> tuple[str, str] | None:
    """The crash point of a first attempt of a workflow that never suspended before, else None.

    A suspend gives its claim back (the next claim is a first attempt again), so without the
    second condition ``durable:suspend:after`` would fire at every wait of the workflow. A row
    keeps its last ``wake_at``: None means it never waited.
    """
    if claim.workflow.attempts != 1 or claim.workflow.wake_at is not None:
        return None
    return parse_crash_at(claim.workflow.crash_at)


def _hold(store: Store, claim: Claim, worker_id: str, reason: str) -> Outcome:
    """Keep the lease (the worker renews it until it exits) and note why; see :class:`Outcome`."""
    try:
        store.note_interruption(claim.workflow.id, worker_id, claim.token, reason)
    except LeaseLost:
        return Outcome(claim.workflow.id, "LOST")
    except StoreUnavailable:
        pass  # the reason is only informative; holding the lease is what matters
    return Outcome(claim.workflow.id, "ABANDONED", reason=reason, hold=True)


def _last_resort(store: Store, claim: Claim, worker_id: str, exc: Exception) -> Outcome:
    """Record FAILED for an error the engine did not expect; if even that fails, let the lease expire."""
    error = f"internal error while running the attempt: {describe_failure(exc)}"
    log.error("attempt failed unexpectedly workflow_id=%s: %s", claim.workflow.id, error.splitlines()[0])
    try:
        store.finish_workflow(claim.workflow.id, Status.FAILED, worker_id=worker_id, token=claim.token, error=error)
    except (Exception, StoreUnavailable, LeaseLost):
        return Outcome(claim.workflow.id, "ABANDONED", reason=error.splitlines()[0])
    return Outcome(claim.workflow.id, Status.FAILED.value, error=error)
