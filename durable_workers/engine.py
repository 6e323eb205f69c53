"""Runs one claimed attempt of a workflow and records how it ended."""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from .context import Context, Listener, bind_context
from .errors import LeaseLost, NonDeterminismError, NotSerializableError, WorkerStopping, WorkflowAborted
from .models import Status
from .registry import Registry
from .store import Claim, Store


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended.

    ``status`` is COMPLETED or FAILED when this attempt recorded the end,
    ``LOST`` when the lease was lost (nothing more was written), or
    ``RELEASED`` when a stopping worker handed the workflow back.
    """

    workflow_id: str
    status: str
    result: Any = None
    error: str | None = None


def describe_failure(exc: BaseException) -> str:
    """First line ``Type: message``, then the traceback, as stored in ``workflows.error``."""
    head = f"{type(exc).__name__}: {exc}"
    return head + "\n" + "".join(traceback.format_exception(exc)).rstrip()


def run_claim(
    store: Store,
    registry: Registry,
    claim: Claim,
    *,
    worker_id: str,
    listener: Listener | None = None,
    stopping: threading.Event | None = None,
) -> Outcome:
    """Run the claimed workflow from the top, replaying recorded steps."""
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
        stopping=stopping,
        attempt=record.attempts,
    )

    def finish(status: Status, **fields: Any) -> Outcome:
        try:
            store.finish_workflow(record.id, status, worker_id=worker_id, token=claim.token, **fields)
        except LeaseLost:
            return Outcome(record.id, "LOST")
        if status is Status.COMPLETED:
            return Outcome(record.id, status.value, result=json.loads(fields["result_json"]))
        return Outcome(record.id, status.value, error=fields.get("error"))

    bind_context(ctx)
    try:
        result = spec.fn(ctx, **record.input)
        if ctx.diverged is not None:  # the workflow caught the NonDeterminismError: fail anyway
            raise ctx.diverged
        missing = ctx.unreplayed_steps()
        if missing:
            raise NonDeterminismError(
                f"workflow {record.id} changed under replay: recorded steps {', '.join(missing)} "
                "were not called this time"
            )
        try:
            result_json = json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise NotSerializableError(
                f"workflow {record.id} returned {type(result).__name__}, which is not JSON-serialisable "
                f"({exc}); return dicts, lists, strings, numbers, booleans or None"
            ) from None
        return finish(Status.COMPLETED, result_json=result_json)
    except LeaseLost:
        return Outcome(record.id, "LOST")
    except WorkflowAborted as exc:
        return Outcome(record.id, Status.FAILED.value, error=str(exc))
    except WorkerStopping:
        released = store.release(record.id, worker_id, claim.token)
        return Outcome(record.id, "RELEASED" if released else "LOST")
    except Exception as exc:  # the workflow's own failure is recorded, not propagated
        return finish(Status.FAILED, error=describe_failure(ctx.diverged or exc))
    finally:
        bind_context(None)
