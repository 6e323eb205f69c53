"""Store operations on steps: start, complete, fail, time out."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from peewee import Value

from ..codec import error_message, summarize_error
from ..errors import LeaseLost, WorkflowAborted
from ..records import Status, StepRecord, StepStart, StepStatus, attempt_history
from .rows import RowHelpers


class StepOps(RowHelpers):
    """Recording step attempts, fenced by the attempt's lease (portable)."""

    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        """Every recorded step of a workflow, by scope then position."""
        m = self.m

        def body() -> list[StepRecord]:
            query = m.Step.select().where(m.Step.workflow_id == workflow_id).order_by(m.Step.scope, m.Step.position)
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def load_step_table(self, workflow_id: str) -> list[StepRecord]:
        """Recorded steps in the order they were first started (for display)."""
        m = self.m

        def body() -> list[StepRecord]:
            query = m.Step.select().where(m.Step.workflow_id == workflow_id).order_by(
                m.Step.started_at, m.Step.scope, m.Step.position
            )
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def start_step(
        self,
        workflow_id: str,
        step_key: str,
        *,
        name: str,
        scope: str,
        position: int,
        worker_id: str,
        token: int,
        max_attempts: int,
        seq: int = 0,
        timeout: float | None = None,
        new: bool = False,
        now: float | None = None,
    ) -> StepStart:
        """Record that an attempt of a step starts (fenced); return its attempt number.

        ``new`` says the caller knows of no row for this step (the common case:
        one fenced ``INSERT``); otherwise the existing row's attempts are checked.
        ``seq`` orders the step's first recording within the workflow. The row
        remembers the lease ``token`` of the attempt that started it.

        A step whose row shows ``max_attempts`` starts already (crashed attempts
        count, interruptions by drains or forced stops do not) is not started:
        it and its workflow are marked FAILED and :class:`WorkflowAborted` is raised.
        """
        m = self.m
        now = self._clock(now)
        deadline = now + timeout if timeout else None
        if new and self._insert_step(workflow_id, step_key, name, scope, position, seq, worker_id, token, deadline, now):
            return StepStart(1, None)
        # Not inserted: the lease is lost, or a row exists after all; the general path decides.

        def body() -> StepStart | str:
            self._fence(workflow_id, worker_id, token)
            row = m.Step.get_or_none((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key))
            if row is None:
                m.Step.insert(
                    workflow_id=workflow_id, step_key=step_key, name=name, scope=scope, position=position, seq=seq,
                    status=StepStatus.RUNNING.value, attempts=1, deadline=deadline, started_at=now,
                    worker_id=worker_id, token=token,
                ).execute()  # fmt: skip
                return StepStart(1, None)
            if row.attempts - row.interruptions >= max_attempts:
                message = self._poison(workflow_id, step_key, row, max_attempts, now)
                # Returned, not raised: raising here would roll the FAILED marks back
                # and leave the workflow RUNNING under a lease its worker keeps renewing.
                return message
            m.Step.update(
                status=StepStatus.RUNNING.value, attempts=m.Step.attempts + 1, deadline=deadline, started_at=now,
                finished_at=None, worker_id=worker_id, token=token, history=attempt_history(row),
            ).where((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key)).execute()  # fmt: skip
            return StepStart(row.attempts + 1, row.error)

        started = self.write(body, confirm=lambda: self._confirm_start(workflow_id, step_key, worker_id, token, now))
        if isinstance(started, str):
            raise WorkflowAborted(started)
        return started

    def _confirm_start(self, workflow_id: str, step_key: str, worker_id: str, token: int, now: float) -> StepStart | str | None:
        """After an ambiguous commit of ``start_step``: what it returned if it committed, else None.

        Its start shows as the row's ``(worker_id, token, started_at)`` (``now``
        is fixed per call); a step it failed for too many attempts shows as the
        workflow FAILED by that step at ``now``.
        """
        m = self.m
        row = m.Step.get_or_none((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key))
        if row is None:
            return None
        if row.status == StepStatus.RUNNING.value and (row.worker_id, row.token, row.started_at) == (worker_id, token, now):
            return StepStart(row.attempts, row.error)
        workflow = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
        poisoned = workflow is not None and row.status == StepStatus.FAILED.value and row.finished_at == now
        if poisoned and (workflow.status, workflow.failed_step, workflow.updated_at) == (Status.FAILED.value, step_key, now):
            return str(workflow.error)
        return None

    def _insert_step(
        self,
        workflow_id: str,
        step_key: str,
        name: str,
        scope: str,
        position: int,
        seq: int,
        worker_id: str,
        token: int,
        deadline: float | None,
        now: float,
    ) -> bool:
        """One fenced ``INSERT`` of a new RUNNING step row; False if not inserted."""
        m = self.m
        running = StepStatus.RUNNING.value

        def confirm() -> int | None:
            started = self._confirm_start(workflow_id, step_key, worker_id, token, now)
            return 1 if isinstance(started, StepStart) and started.attempts == 1 else None

        return self._write_one(
            "start_new_step",
            lambda: m.Step.insert_from(
                self._share_locked(
                    m.Lease.select(
                        Value(workflow_id), Value(step_key), Value(name), Value(scope), Value(position),
                        Value(seq), Value(running), Value(1), Value(deadline), Value(now), Value(worker_id),
                        Value(token),
                    ).where(
                        (m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id) & (m.Lease.token == token)
                    )
                ),
                [
                    m.Step.workflow_id, m.Step.step_key, m.Step.name, m.Step.scope, m.Step.position, m.Step.seq,
                    m.Step.status, m.Step.attempts, m.Step.deadline, m.Step.started_at, m.Step.worker_id, m.Step.token,
                ],
            ).on_conflict_ignore(),
            [workflow_id, step_key, name, scope, position, seq, running, 1, deadline, now, worker_id, token,
             workflow_id, worker_id, token],
            confirm=confirm,
        ) == 1

    def _poison(self, workflow_id: str, step_key: str, row: Any, max_attempts: int, now: float) -> str:
        """Mark a step that used up its attempts, and its workflow, FAILED; return the reason."""
        m = self.m
        crashes = row.attempts - row.interruptions
        if row.error:
            message = (
                f"step {step_key} failed {crashes} attempts (max_attempts={max_attempts}); "
                f"last error: {summarize_error(row.error)}"
            )
        else:
            message = (
                f"step {step_key} crashed the worker {crashes} times "
                f"(max_attempts={max_attempts}); it was not started again"
            )
        error = error_message("durable_workers.errors.WorkflowAborted", message)
        m.Step.update(status=StepStatus.FAILED.value, error=error, finished_at=now, deadline=None).where(
            (m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key)
        ).execute()
        self._finish(workflow_id, Status.FAILED, None, message, now, failed_step=step_key)
        return message

    def complete_step(
        self,
        workflow_id: str,
        step_key: str,
        output_json: str,
        *,
        worker_id: str,
        token: int,
        now: float | None = None,
    ) -> None:
        """Record a step's result (fenced)."""
        m = self.m
        now = self._clock(now)
        completed = StepStatus.COMPLETED.value
        self._fenced_write(
            workflow_id,
            "complete_step",
            lambda: m.Step.update(
                status=completed, output=output_json, error=None, deadline=None, finished_at=now, worker_id=worker_id
            ).where((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key) & self._holds_lease(workflow_id, worker_id, token)),
            [completed, output_json, None, None, now, worker_id, workflow_id, step_key, workflow_id, worker_id, token],
        )

    def fail_step(
        self,
        workflow_id: str,
        step_key: str,
        error_json: str,
        *,
        final: bool,
        worker_id: str,
        token: int,
        overran: bool = False,
        now: float | None = None,
    ) -> None:
        """Record a step attempt's error (fenced); ``final`` marks the step FAILED.

        ``overran`` (a timed-out execution that may still be running, retries
        left) keeps the row's deadline, so the supervisor kills that worker
        after the grace if it has not exited by then.
        """
        m = self.m
        now = self._clock(now)
        status = StepStatus.FAILED.value if final else StepStatus.RUNNING.value

        def where() -> Any:
            return (
                (m.Step.workflow_id == workflow_id)
                & (m.Step.step_key == step_key)
                & self._holds_lease(workflow_id, worker_id, token)
            )

        if overran and not final:
            self._fenced_write(
                workflow_id,
                "fail_step_overran",
                lambda: m.Step.update(status=status, error=error_json, finished_at=now).where(where()),
                [status, error_json, now, workflow_id, step_key, workflow_id, worker_id, token],
            )
            return
        self._fenced_write(
            workflow_id,
            "fail_step",
            lambda: m.Step.update(status=status, error=error_json, deadline=None, finished_at=now).where(where()),
            [status, error_json, None, now, workflow_id, step_key, workflow_id, worker_id, token],
        )

    def note_interruption(self, workflow_id: str, worker_id: str, token: int, reason: str) -> None:
        """Record why this attempt gives up without an outcome (fenced; ``workflows.interruption``)."""
        m = self.m
        self._fenced_write(
            workflow_id,
            "note_interruption",
            lambda: m.Workflow.update(interruption=reason).where(
                (m.Workflow.id == workflow_id) & self._holds_lease(workflow_id, worker_id, token)
            ),
            [reason, workflow_id, workflow_id, worker_id, token],
        )

    def _fenced_write(self, workflow_id: str, name: str, build: Callable[[], Any], params: Sequence[Any]) -> None:
        """One fenced statement in its own transaction; no row changed means the lease is lost."""
        if self._write_one(name, build, params) == 0:
            raise LeaseLost(f"workflow {workflow_id}: the lease is no longer held")

    def note_step_timeout(
        self,
        workflow_id: str,
        step_key: str,
        *,
        worker_id: str | None,
        token: int | None = None,
        overrun: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Record on a RUNNING step that its worker was killed for overrunning its timeout.

        Written by the supervisor (not fenced): the step stays RUNNING and its
        next start counts the killed attempt. ``overrun`` is the seconds the
        supervisor saw it run (its own monotonic clock); without it, the wall
        clock since ``started_at``. Nothing is written, and ``False`` returned,
        unless the row is still RUNNING under ``worker_id`` and that worker
        still holds the workflow's lease (with ``token``, when given and the
        row records one): a later attempt or a cancel leaves it alone.
        """
        m = self.m
        now = self._clock(now)

        def body() -> bool:
            self._lock_lease(workflow_id)  # the holder's in-flight fenced write lands first
            row = m.Step.get_or_none((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key))
            if row is None or row.status != StepStatus.RUNNING.value or row.worker_id != worker_id:
                return False
            lease = m.Lease.get_or_none(m.Lease.workflow_id == workflow_id)
            if lease is None or lease.worker_id != worker_id:
                return False
            if token is not None and row.token is not None and row.token != token:
                return False
            ran = overrun if overrun is not None else now - (row.started_at or now)
            error = json.dumps(
                {
                    "type": "durable_workers.errors.StepTimeoutError",
                    "message": f"step {step_key} ran {ran:.1f}s, past its timeout; its worker was killed",
                    "args": None,
                }
            )
            m.Step.update(error=error, deadline=None).where(
                (m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key)
            ).execute()
            return True

        return self.write(body)
