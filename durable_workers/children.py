"""Child workflows of the workflow context: ``ctx.start_child``, ``ctx.call`` and :class:`ChildHandle`.

:class:`Children` is a mixin of :class:`~durable_workers.context.Context`.
Starting a child records the reserved step ``durable:child:NAME`` (its value is
the child's id, so replay returns the same child; the store's insert is
fenced by the parent's lease and idempotent). Waiting records
``durable:child-wait`` (the deadline of a ``timeout``, once) and
``durable:child-result`` (how the child ended); while the child runs, the
parent suspends WAITING (``waiting_for = child:ID``) and the child's end makes
it due. The default child id is ``keys.idempotency_key(parent id, step key)``
without the reserved prefix, e.g. ``onb-1/child:provision#1``: distinct for
every (parent, call), whatever characters the parent id holds.

The deadline of a workflow (``@workflow(timeout=)``) is checked here too,
before every step starts and when the attempt begins.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from . import keys, tracing
from .codec import encode_input
from .config import NO_TIMEOUT_WAKE_AT
from .errors import ChildFailedError, ChildTimeoutError, DeadlineExceeded, DurableError, WorkflowSuspended
from .parts import ContextParts
from .policy import DEFAULT_POLICY
from .records import TERMINAL, Status, StepStatus
from .registry import default_registry
from .typed import step_result

CHILD = keys.RESERVED_PREFIX + "child"
CHILD_WAIT = keys.RESERVED_PREFIX + "child-wait"
CHILD_RESULT = keys.RESERVED_PREFIX + "child-result"


class ChildHandle:
    """A child workflow started with :meth:`Context.start_child`; ``result()`` waits for it durably."""

    def __init__(self, ctx: "Children", workflow_id: str, name: str) -> None:
        self._ctx = ctx
        #: The child's workflow id.
        self.workflow_id = workflow_id
        #: The child's workflow name.
        self.name = name

    def result(self, timeout: float | None = None) -> Any:
        """The child's result, once it ends (recorded: replay returns the same).

        While the child runs the parent suspends WAITING (no lease, no worker
        slot) and is woken by the child's end. Raises :class:`ChildFailedError`
        when the child ended FAILED or CANCELLED, and :class:`ChildTimeoutError`
        when ``timeout`` seconds (from the first time this call was reached)
        pass first; the child goes on running then. The result is decoded into
        the child's annotated return type when its workflow is registered here.
        """
        return self._ctx._child_result(self, timeout)

    def __repr__(self) -> str:
        return f"ChildHandle({self.workflow_id!r}, name={self.name!r})"


def _child_name(workflow: str | Callable[..., Any]) -> str:
    if isinstance(workflow, str):
        if not workflow:
            raise DurableError("ctx.start_child: the workflow name must be a non-empty string")
        return workflow
    name = getattr(workflow, "__durable_name__", None)
    if name is None:
        raise DurableError(
            f"ctx.start_child({getattr(workflow, '__name__', workflow)!r}): pass a workflow name or an @workflow function"
        )
    return str(name)


class Children(ContextParts):
    """Starting child workflows, waiting for them, and the workflow's own deadline."""

    #: This run's deadline (epoch seconds) or None; set by the engine from the row or ``@workflow(timeout=)``.
    deadline: float | None = None

    def check_deadline(self) -> None:
        """Raise :class:`DeadlineExceeded` (an interrupt: the run ends CANCELLED) once the deadline has passed."""
        if self.deadline is not None and self._store.now() >= self.deadline:
            raise DeadlineExceeded(f"workflow {self.workflow_id} is past its deadline")

    def start_child(self, workflow: str | Callable[..., Any], *, workflow_id: str | None = None, **input: Any) -> ChildHandle:
        """Start the child workflow ``workflow`` (a name or an ``@workflow`` function) with ``input``; its handle.

        Recorded once: replay returns the same child and starts nothing. The
        child runs on any worker serving its name; cancelling this workflow
        (or its deadline) cancels the child. ``workflow_id`` defaults to an id
        derived from this workflow's id and the call (see the module text).
        Raises :class:`InputError` for an input that does not fit a workflow
        registered here, and :class:`ConflictError` (inside the step) when
        ``workflow_id`` is another workflow's.
        """
        name = _child_name(workflow)
        spec = default_registry.get(name) if name in default_registry else None
        if spec is not None:
            spec.check_input(input)
        input_json = encode_input(input)
        step_name = f"{CHILD}:{name}" if "#" not in name and "/" not in name else CHILD
        scope = keys.current_scope(self, f"ctx.start_child({name!r})")  # type: ignore[arg-type]

        def start() -> dict[str, str]:
            key = keys.running_step() or ""
            child_id = workflow_id or keys.idempotency_key(self.workflow_id, key.replace(keys.RESERVED_PREFIX, "", 1))
            timeout = spec.timeout if spec is not None else None
            deadline_at = self._store.now() + timeout if timeout is not None else None
            self._store.start_child(
                self.workflow_id, child_id, name, input_json, worker_id=self._worker_id, token=self._token,
                deadline_at=deadline_at, trace_context=tracing.current_context(),
            )  # fmt: skip
            return {"id": child_id, "name": name}

        started = self._run_step(scope, step_name, start, DEFAULT_POLICY)
        return ChildHandle(self, str(started["id"]), name)

    def call(self, workflow: str | Callable[..., Any], *, workflow_id: str | None = None, **input: Any) -> Any:
        """Start the child workflow and wait for its result: ``start_child(...).result()``."""
        return self.start_child(workflow, workflow_id=workflow_id, **input).result()

    def _child_result(self, handle: ChildHandle, timeout: float | None) -> Any:
        if timeout is not None and not (float(timeout) >= 0 and math.isfinite(float(timeout))):
            raise ValueError(f"handle.result(timeout={timeout!r}): timeout must be a finite number >= 0")
        scope = keys.current_scope(self, f"the result of child {handle.workflow_id}")  # type: ignore[arg-type]
        deadline = None
        if timeout is not None:
            wait = self._run_step(
                scope, CHILD_WAIT, lambda: {"child": handle.workflow_id, "deadline": self._store.now() + float(timeout)},
                DEFAULT_POLICY,
            )  # fmt: skip
            deadline = float(wait["deadline"])
        here = self._by_position.get((scope.path, scope.position))
        if here is not None and here.name == CHILD_RESULT and here.status == StepStatus.COMPLETED.value:
            outcome = self._run_step(scope, CHILD_RESULT, lambda: {}, DEFAULT_POLICY)  # replayed
        else:
            outcome = self._child_outcome(handle, scope, deadline)
            outcome = self._run_step(scope, CHILD_RESULT, lambda: outcome, DEFAULT_POLICY)
        key = f"{scope.path}{CHILD_RESULT}#{scope.counts[CHILD_RESULT]}"
        return self._child_value(handle, key, outcome)

    def _child_outcome(self, handle: ChildHandle, scope: keys.Scope, deadline: float | None) -> dict[str, Any]:
        """How the child ended, to record; suspends while it runs and the deadline is ahead."""
        child = self._store.get_workflow(handle.workflow_id)
        if child.status in TERMINAL:
            error = (child.error or "").splitlines()[0] if child.error else None
            return {"id": child.id, "status": child.status, "result": child.result, "error": error}
        if self.read_only:
            key = f"{scope.path}{CHILD_RESULT}#{scope.counts.get(CHILD_RESULT, 0) + 1}"
            raise self.stop_replay(key, f"would wait for child workflow {handle.workflow_id}")
        if deadline is None or deadline > self._store.now():
            wake_at = NO_TIMEOUT_WAKE_AT if deadline is None else deadline
            raise WorkflowSuspended(self.workflow_id, wake_at, child=handle.workflow_id)
        return {"id": handle.workflow_id, "status": "TIMEOUT"}

    def _child_value(self, handle: ChildHandle, key: str, outcome: dict[str, Any]) -> Any:
        status = outcome.get("status")
        if status == Status.COMPLETED.value:
            spec = default_registry.get(handle.name) if handle.name in default_registry else None
            return outcome.get("result") if spec is None else step_result(spec.fn, outcome.get("result"))
        if status == "TIMEOUT":
            raise self._raised_by(key, ChildTimeoutError(f"child workflow {handle.workflow_id} had not ended in time"))
        raise self._raised_by(key, ChildFailedError(handle.workflow_id, str(status), outcome.get("error")))
