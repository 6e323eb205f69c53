"""Store operations on workflows: submit, read, cancel, retry."""

from __future__ import annotations

from ..errors import InvalidStateError, WorkflowNotFound
from ..records import TERMINAL, Status, StepStatus, WorkflowRecord
from peewee import fn
from .rows import RowHelpers


class WorkflowOps(RowHelpers):
    """Submitting, reading, cancelling and retrying workflows (portable across dialects)."""

    def submit(
        self,
        workflow_id: str,
        name: str,
        input_json: str,
        *,
        run_at: float | None = None,
        crash_at: str | None = None,
        now: float | None = None,
    ) -> tuple[WorkflowRecord, bool]:
        """Insert a PENDING workflow unless the id exists; return (row, created)."""
        m = self.m
        now = self._clock(now)

        def body() -> tuple[WorkflowRecord, bool]:
            # INSERT ... ON CONFLICT DO NOTHING: a concurrent submit of the same id (possible where
            # writers run concurrently) finds the row instead of a unique violation.
            inserted = m.Workflow.insert(
                id=workflow_id,
                name=name,
                input=input_json,
                status=Status.PENDING.value,
                attempts=0,
                run_at=now if run_at is None else run_at,
                created_at=now,
                updated_at=now,
                crash_at=crash_at,
            ).on_conflict_ignore().as_rowcount().execute()
            if inserted:
                self._notify(workflow_id)
            return WorkflowRecord.from_row(m.Workflow.get_by_id(workflow_id)), inserted == 1

        return self.write(body, safe=True)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The workflow with this id; raises :class:`WorkflowNotFound`."""
        m = self.m

        def body() -> WorkflowRecord:
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            return WorkflowRecord.from_row(row)

        return self.read(body)

    def list_workflows(self, status: str | None = None, limit: int = 50) -> list[WorkflowRecord]:
        """The newest workflows first, optionally of one status."""
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
        """Mark a PENDING or RUNNING workflow CANCELLED and fence out its owner."""
        m = self.m
        now = self._clock(now)

        def body() -> WorkflowRecord:
            self._lock_lease(workflow_id)  # waits for an in-flight fenced write of the owner
            self._lock_workflow(workflow_id)
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status in TERMINAL:
                raise InvalidStateError(
                    f"workflow {workflow_id} is already {row.status}; nothing to cancel"
                )
            m.Workflow.update(status=Status.CANCELLED.value, error="cancelled", updated_at=now).where(
                m.Workflow.id == workflow_id
            ).execute()
            self._release_lease(workflow_id, bump=True)
            self._clear_step_deadlines(workflow_id)
            return WorkflowRecord.from_row(m.Workflow.get_by_id(workflow_id))

        return self.write(body, confirm=lambda: self._confirm_change(workflow_id, Status.CANCELLED, now))

    def retry(self, workflow_id: str, *, now: float | None = None) -> WorkflowRecord:
        """Make a FAILED or CANCELLED workflow PENDING again.

        Everything recorded before the step failure that ended the workflow
        (``workflows.failed_step``) is kept, failures the workflow caught
        included, so the run takes the same branches; that failure and every
        step first recorded after it are dropped and run afresh. When no step
        failure ended it, every recorded step is kept. Unfinished steps start
        again at attempt 1.
        """
        m = self.m
        now = self._clock(now)

        def body() -> WorkflowRecord:
            self._lock_workflow(workflow_id)
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status not in (Status.FAILED.value, Status.CANCELLED.value):
                raise InvalidStateError(
                    f"workflow {workflow_id} is {row.status}; only FAILED or CANCELLED workflows can be retried"
                )
            self._forget_ending_failure(workflow_id, row.failed_step)
            m.Workflow.update(
                status=Status.PENDING.value,
                error=None,
                failed_step=None,
                result=None,
                attempts=0,
                run_at=now,
                updated_at=now,
                crash_at=None,
            ).where(m.Workflow.id == workflow_id).execute()
            self._notify(workflow_id)
            return WorkflowRecord.from_row(m.Workflow.get_by_id(workflow_id))

        return self.write(body, confirm=lambda: self._confirm_change(workflow_id, Status.PENDING, now))

    def _confirm_change(self, workflow_id: str, status: Status, now: float) -> WorkflowRecord | None:
        """After an ambiguous commit of ``cancel``/``retry``: the row if it shows ``status`` set at ``now``, else None.

        ``now`` is fixed per call (and a retry also sets ``run_at``), so another
        writer's change is not mistaken for this one; then the body runs again.
        """
        m = self.m
        row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
        if row is None or (row.status, row.updated_at) != (status.value, now):
            return None
        return WorkflowRecord.from_row(row)

    def _forget_ending_failure(self, workflow_id: str, failed_step: str | None) -> None:
        """Drop the step whose failure ended the workflow and every step first recorded after it.

        When no step failure ended it (its own exception, a cancel, an
        integrity error), every recorded result and caught failure stays; only
        unfinished steps start again at attempt 1.
        """
        m = self.m
        ending = None
        if failed_step is not None:
            ending = (
                m.Step.select(m.Step.seq)
                .where((m.Step.workflow_id == workflow_id) & (m.Step.step_key == failed_step))
                .scalar()
            )
        if ending:
            m.Step.delete().where((m.Step.workflow_id == workflow_id) & (m.Step.seq >= ending)).execute()
        elif failed_step is not None:  # rows recorded before schema 2 carry no sequence
            m.Step.delete().where(
                (m.Step.workflow_id == workflow_id) & (m.Step.status != StepStatus.COMPLETED.value)
            ).execute()
        m.Step.update(attempts=0, interruptions=0, deadline=None).where(
            (m.Step.workflow_id == workflow_id) & (m.Step.status == StepStatus.RUNNING.value)
        ).execute()
