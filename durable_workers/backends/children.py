"""Store operations on child workflows and deadlines: start a child, list children, expire deadlines.

A child is a workflows row with ``parent_id`` set. Its end wakes a parent
WAITING on it (``waiting_for = child:ID``, see :meth:`RowHelpers._wake_parent`);
cancelling a workflow cancels its unfinished descendants
(:meth:`RowHelpers._cancel_descendants`); a workflow past its ``deadline_at``
ends CANCELLED, "deadline exceeded", descendants included.
"""

from __future__ import annotations

from ..errors import ConflictError
from ..records import DEADLINE_EXCEEDED, TERMINAL, Status, WorkflowRecord
from .rows import RowHelpers

#: Unfinished statuses, the deadline sweep's scope.
UNFINISHED = (Status.PENDING.value, Status.RUNNING.value, Status.WAITING.value)


class ChildOps(RowHelpers):
    """Child workflows started from a workflow, and the deadline sweep."""

    def start_child(
        self,
        parent_id: str,
        child_id: str,
        name: str,
        input_json: str,
        *,
        worker_id: str,
        token: int,
        deadline_at: float | None = None,
        trace_context: str | None = None,
        now: float | None = None,
    ) -> WorkflowRecord:
        """Insert the PENDING child ``child_id`` of ``parent_id`` (fenced by the parent's lease); return its row.

        Idempotent: this parent's child with that id, name and input is
        returned as it is (a step re-run after a crash). Raises
        :class:`LeaseLost` when the parent's lease is no longer held and
        :class:`ConflictError` when the id belongs to another workflow, or to
        another child (other name or input) of this parent. ``trace_context``:
        the starting step's trace context (JSON text, :mod:`durable_workers.tracing`).
        """
        m = self.m
        now = self._clock(now)

        def body() -> WorkflowRecord:
            self._fence(parent_id, worker_id, token)
            row = m.Workflow.get_or_none(m.Workflow.id == child_id)
            if row is None:
                traced = {"trace_context": trace_context} if trace_context is not None else {}
                (m.TracedWorkflow if traced else m.Workflow).insert(
                    id=child_id, name=name, input=input_json, status=Status.PENDING.value, attempts=0, run_at=now,
                    created_at=now, updated_at=now, parent_id=parent_id, deadline_at=deadline_at, **traced,
                ).execute()  # fmt: skip
                self._notify(child_id)
                row = m.Workflow.get_by_id(child_id)
            elif row.parent_id != parent_id:
                raise ConflictError(
                    f"workflow id {child_id!r} is taken by another workflow; give ctx.start_child another workflow_id"
                )
            elif (row.name, row.input) != (name, input_json):
                raise ConflictError(
                    f"child workflow {child_id!r} of {parent_id} was started as {row.name} with input {row.input}; "
                    "give ctx.start_child another workflow_id for another child"
                )
            return WorkflowRecord.from_row(row)

        return self.write(body, safe=True)

    def list_children(self, workflow_id: str) -> list[WorkflowRecord]:
        """The workflows ``workflow_id`` started as children, oldest first."""
        m = self.m

        def body() -> list[WorkflowRecord]:
            query = m.Workflow.select().where(m.Workflow.parent_id == workflow_id).order_by(m.Workflow.created_at)
            return [WorkflowRecord.from_row(row) for row in query]

        return self.read(body)

    def expire_deadlines(self, *, now: float | None = None) -> list[str]:
        """End every unfinished workflow past its ``deadline_at`` CANCELLED, descendants included; their ids.

        A read first: nothing is written (no write lock taken) when no deadline
        passed. Each expired workflow's owner is fenced out (token + 1), as by
        :meth:`cancel`, and a parent waiting on it is woken.
        """
        m = self.m
        now = self._clock(now)

        def due() -> list[str]:
            query = m.Workflow.select(m.Workflow.id).where(
                m.Workflow.status.in_(UNFINISHED) & (m.Workflow.deadline_at <= now)
            )
            return [row.id for row in query]

        candidates = self.read(due)
        if not candidates:
            return []

        def body() -> list[str]:
            expired = []
            for workflow_id in candidates:
                self._lock_lease(workflow_id)
                row = self._locked_workflow(workflow_id)
                if row.status in TERMINAL or row.deadline_at is None or row.deadline_at > now:
                    continue
                self._end_cancelled(workflow_id, DEADLINE_EXCEEDED, now, parent_id=row.parent_id)
                expired.append(workflow_id)
            return expired

        return self.write(body, safe=True)
