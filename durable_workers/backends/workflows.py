"""Store operations on workflows: submit, read, cancel, retry."""

from __future__ import annotations

from ..errors import ConflictError, InvalidStateError, StepNotFound, WorkflowNotFound
from ..records import ACTIVE, DEFAULT_QUEUE, TERMINAL, Status, StepStatus, WorkflowRecord
from typing import Any

from peewee import fn
from .revive import Revival


class WorkflowOps(Revival):
    """Submitting, reading, cancelling and retrying workflows (portable across dialects)."""

    def submit(
        self,
        workflow_id: str,
        name: str,
        input_json: str,
        *,
        run_at: float | None = None,
        crash_at: str | None = None,
        deadline_at: float | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        concurrency_key: str | None = None,
        dedupe_key: str | None = None,
        trace_context: str | None = None,
        now: float | None = None,
    ) -> tuple[WorkflowRecord, bool]:
        """Insert a PENDING workflow unless the id exists; return (row, created).

        ``queue``, ``priority``, ``concurrency_key`` are how the claim orders
        and limits it. With ``dedupe_key``, while an unfinished workflow of the
        same queue holds that key nothing is inserted and *that* workflow is
        returned (its id differs from ``workflow_id``; created False).
        ``trace_context``: the submitter's trace context (JSON text, :mod:`durable_workers.tracing`).
        """
        m = self.m
        now = self._clock(now)

        def body() -> tuple[WorkflowRecord, bool]:
            self._ensure_queue(queue, now)
            for _ in range(3):
                options = dict(queue=queue, priority=priority, concurrency_key=concurrency_key, dedupe_key=dedupe_key)
                if trace_context is not None:
                    options["trace_context"] = trace_context
                inserted = self._insert_one(workflow_id, name, input_json, run_at, crash_at, deadline_at, now, options)
                if inserted:
                    self._notify(workflow_id)
                row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
                if row is None and dedupe_key is not None:  # the key's holder, unless it just ended
                    row = m.Workflow.get_or_none(
                        (m.Workflow.queue == queue) & (m.Workflow.dedupe_key == dedupe_key)
                        & m.Workflow.status.in_(list(ACTIVE))
                    )  # fmt: skip
                if row is not None:
                    return WorkflowRecord.from_row(row), inserted == 1
            raise WorkflowNotFound(f"workflow {workflow_id!r} could not be inserted; submit it again")

        return self.write(body, safe=True)

    def _insert_one(
        self, workflow_id: str, name: str, input_json: str, run_at: float | None, crash_at: str | None,
        deadline_at: float | None, now: float, options: dict[str, Any],
    ) -> int:  # fmt: skip
        """Inside a write: INSERT the PENDING row unless a unique key (id, queue + dedupe key) exists; rows inserted."""
        # INSERT ... ON CONFLICT DO NOTHING: a concurrent submit of the same id (possible where
        # writers run concurrently) finds the row instead of a unique violation. Only a traced
        # submit names the trace_context column (the model that has it).
        table = self.m.TracedWorkflow if "trace_context" in options else self.m.Workflow
        inserted: int = table.insert(
            id=workflow_id,
            name=name,
            input=input_json,
            status=Status.PENDING.value,
            attempts=0,
            run_at=now if run_at is None else run_at,
            created_at=now,
            updated_at=now,
            crash_at=crash_at,
            deadline_at=deadline_at,
            **options,
        ).on_conflict_ignore().as_rowcount().execute()
        return inserted

    def get_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The workflow with this id; raises :class:`WorkflowNotFound`."""
        m = self.m

        def body() -> WorkflowRecord:
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            return WorkflowRecord.from_row(row)

        return self.read(body)

    def trace_context(self, workflow_id: str) -> str | None:
        """The trace context stored with the workflow at submit (JSON text), or None."""
        m = self.m

        def body() -> str | None:
            found: str | None = (
                m.TracedWorkflow.select(m.TracedWorkflow.trace_context).where(m.TracedWorkflow.id == workflow_id).scalar()
            )
            return found

        return self.read(body)

    def list_workflows(self, status: str | None = None, limit: int | None = 50) -> list[WorkflowRecord]:
        """The newest workflows first, optionally of one status (``limit=None``: all of them)."""
        m = self.m

        def body() -> list[WorkflowRecord]:
            query = m.Workflow.select().order_by(m.Workflow.created_at.desc(), m.Workflow.id.desc())
            if status:
                query = query.where(m.Workflow.status == status)
            return [WorkflowRecord.from_row(row) for row in query.limit(limit)]

        return self.read(body)

    def count_by_status(self) -> dict[str, int]:
        """Number of workflows per status (every status present, zero included)."""
        m = self.m

        def body() -> dict[str, int]:
            counts = {s.value: 0 for s in Status}
            query = m.Workflow.select(m.Workflow.status, fn.COUNT(m.Workflow.id)).group_by(m.Workflow.status)
            for status, count in query.tuples():
                counts[status] = count
            return counts

        return self.read(body)

    def pending_names(self) -> dict[str, int]:
        """PENDING workflow counts by workflow name."""
        m = self.m

        def body() -> dict[str, int]:
            query = (
                m.Workflow.select(m.Workflow.name, fn.COUNT(m.Workflow.id))
                .where(m.Workflow.status == Status.PENDING.value)
                .group_by(m.Workflow.name)
            )
            return dict(query.tuples())

        return self.read(body)

    def cancel(self, workflow_id: str, *, now: float | None = None) -> WorkflowRecord:
        """Mark an unfinished workflow CANCELLED and fence out its owner; its unfinished descendants likewise.

        A parent waiting on it is woken (its ``handle.result()`` raises ChildFailedError).
        """
        m = self.m
        now = self._clock(now)

        def body() -> WorkflowRecord:
            parent_id = self._parent_of(workflow_id)
            if parent_id is not None:  # the parent's row before the child's, like a finishing child
                self._lock_workflow(parent_id)
            self._lock_lease(workflow_id)  # waits for an in-flight fenced write of the owner
            row = self._locked_workflow(workflow_id)
            if row.status in TERMINAL:
                raise InvalidStateError(
                    f"workflow {workflow_id} is already {row.status}; nothing to cancel"
                )
            self._end_cancelled(workflow_id, "cancelled", now, parent_id=row.parent_id)
            return WorkflowRecord.from_row(m.Workflow.get_by_id(workflow_id))

        return self.write(body, confirm=lambda: self._confirm_change(workflow_id, Status.CANCELLED, now))

    def retry(self, workflow_id: str, *, now: float | None = None) -> WorkflowRecord:
        """Make a FAILED or CANCELLED workflow PENDING again.

        Everything recorded before the step failure that ended the workflow
        (``workflows.failed_step``) is kept, failures the workflow caught
        included, so the run takes the same branches; that failure and every
        step first recorded after it are dropped and run afresh. When no step
        failure ended it, every recorded step is kept. Unfinished steps start
        again at attempt 1. A deadline is renewed (as long as it was). The
        children the end took along are retried too: those its cancel or
        deadline cancelled, and the failed child whose ``ChildFailedError``
        ended it.
        """
        m = self.m
        now = self._clock(now)

        def body() -> WorkflowRecord:
            row = self._locked_workflow(workflow_id)
            if row.status not in (Status.FAILED.value, Status.CANCELLED.value):
                raise InvalidStateError(
                    f"workflow {workflow_id} is {row.status}; only FAILED or CANCELLED workflows can be retried"
                )
            self._refuse_held_key(row)
            self._revive(row, now)
            return WorkflowRecord.from_row(m.Workflow.get_by_id(workflow_id))

        return self.write(body, confirm=lambda: self._confirm_retry(workflow_id, now))

    def _refuse_held_key(self, row: Any) -> None:
        """Inside a write: raise :class:`InvalidStateError` if another unfinished workflow holds ``row``'s dedupe key."""
        m = self.m
        if row.dedupe_key is None:
            return
        holder = m.Workflow.get_or_none(
            (m.Workflow.queue == row.queue) & (m.Workflow.dedupe_key == row.dedupe_key)
            & m.Workflow.status.in_(list(ACTIVE)) & (m.Workflow.id != row.id)
        )  # fmt: skip
        if holder is not None:
            raise InvalidStateError(
                f"workflow {row.id} cannot run again while {holder.id} ({holder.status}) holds its dedupe key "
                f"{row.dedupe_key!r}; wait for that one to end"
            )

    def _confirm_change(self, workflow_id: str, status: Status, now: float) -> WorkflowRecord | None:
        """After an ambiguous commit of ``cancel``: the row if it shows ``status`` set at ``now``, else None.

        ``now`` is fixed per call, so another writer's change is not mistaken
        for this one; then the body runs again.
        """
        m = self.m
        row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
        if row is None or (row.status, row.updated_at) != (status.value, now):
            return None
        return WorkflowRecord.from_row(row)

    def _confirm_retry(self, workflow_id: str, now: float) -> WorkflowRecord | None:
        """After an ambiguous commit of ``retry``: the row if its ``run_at`` is this call's ``now``, else None.

        Not the status: a worker may have claimed (or even finished) the retried
        workflow before the confirmation reads it. ``run_at`` is set by submit
        and retry only (claims, releases and suspends keep it), so it still
        shows this call's commit.
        """
        m = self.m
        row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
        return WorkflowRecord.from_row(row) if row is not None and row.run_at == now else None

    def fork(self, workflow_id: str, from_step: str, new_id: str | None = None, *, now: float | None = None) -> str:
        """Start a PENDING copy of a workflow (any status) that keeps its history before ``from_step``.

        The copy has the same name and input; the steps first recorded (by
        ``seq``) before step ``from_step`` are copied if they had finished
        (COMPLETED, or FAILED: a failure the workflow caught), so the copy
        replays them and runs ``from_step`` and what follows afresh. The new id
        is ``new_id`` or the first free ``ID~fork-N``. Returns the new id.
        """
        m = self.m
        now = self._clock(now)

        def body() -> str:
            source = self._locked_workflow(workflow_id)
            cut = m.Step.get_or_none((m.Step.workflow_id == workflow_id) & (m.Step.step_key == from_step))
            if cut is None or not cut.seq:
                raise StepNotFound(
                    f"workflow {workflow_id} has no recorded step {from_step!r}; "
                    f"list its step keys with `durable steps {workflow_id}`"
                )
            fork_id = self._insert_fork(source, new_id, now)
            kept = m.Step.select().where(
                (m.Step.workflow_id == workflow_id) & (m.Step.seq > 0) & (m.Step.seq < cut.seq)
                & m.Step.status.in_([StepStatus.COMPLETED.value, StepStatus.FAILED.value])
            )  # fmt: skip
            rows = [
                {"workflow_id": fork_id, "step_key": r.step_key, "name": r.name, "scope": r.scope,
                 "position": r.position, "seq": r.seq, "status": r.status, "output": r.output, "error": r.error,
                 "attempts": r.attempts, "started_at": r.started_at, "finished_at": r.finished_at}
                for r in kept
            ]  # fmt: skip
            if rows:
                m.Step.insert_many(rows).execute()
            self._notify(fork_id)
            return fork_id

        return self.write(body)

    def _insert_fork(self, source: Any, new_id: str | None, now: float) -> str:
        """Inside a write: insert the fork's PENDING row under ``new_id`` or the first free ``ID~fork-N``.

        The fork keeps the source's queue, priority and concurrency key (its
        limits apply), not its dedupe key (the source may still hold it).
        """
        m = self.m
        n = 0
        while True:
            n += 1
            fork_id = new_id or f"{source.id}~fork-{n}"
            inserted = m.Workflow.insert(
                id=fork_id, name=source.name, input=source.input, status=Status.PENDING.value, attempts=0,
                run_at=now, created_at=now, updated_at=now, queue=source.queue, priority=source.priority,
                concurrency_key=source.concurrency_key,
            ).on_conflict_ignore().as_rowcount().execute()  # fmt: skip
            if inserted:
                return fork_id
            if new_id is not None:
                raise ConflictError(f"workflow {new_id} already exists; choose another --id")
