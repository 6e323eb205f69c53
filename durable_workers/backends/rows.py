"""Row helpers shared by the operation areas, each run inside a caller's write transaction."""

from __future__ import annotations

from typing import Any

from ..errors import WorkflowNotFound
from ..records import Status, StepStatus
from .base import StoreBase


class RowHelpers(StoreBase):
    """Statements several operations run inside their own transaction (never a transaction of their own)."""

    def _lease_held(self, workflow_id: str, worker_id: str, token: int) -> bool:
        """Whether ``(worker_id, token)`` holds the workflow's lease now (a plain read: confirmations use it)."""
        m = self.m
        return bool(
            m.Lease.select(m.Lease.token)
            .where((m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id) & (m.Lease.token == token))
            .exists()
        )

    def _locked_workflow(self, workflow_id: str) -> Any:
        """Inside a write: the workflow's row, locked; raises :class:`WorkflowNotFound`."""
        self._lock_workflow(workflow_id)
        row = self.m.Workflow.get_or_none(self.m.Workflow.id == workflow_id)
        if row is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
        return row

    def _release_lease(self, workflow_id: str, *, bump: bool = False) -> None:
        m = self.m
        update: dict[Any, Any] = {m.Lease.worker_id: None, m.Lease.expires_at: None}
        if bump:
            update[m.Lease.token] = m.Lease.token + 1
        m.Lease.update(update).where(m.Lease.workflow_id == workflow_id).execute()

    def _clear_step_deadlines(self, workflow_id: str, worker_id: str | None = None) -> None:
        """Inside a write: no RUNNING step of the workflow (of ``worker_id``'s attempts) has a deadline now."""
        m = self.m
        condition = (m.Step.workflow_id == workflow_id) & (m.Step.status == StepStatus.RUNNING.value)
        if worker_id is not None:
            condition &= m.Step.worker_id == worker_id
        m.Step.update(deadline=None).where(condition & m.Step.deadline.is_null(False)).execute()

    def _finish(
        self, workflow_id: str, status: Status, result_json: str | None, error: str | None, now: float,
        failed_step: str | None = None,
    ) -> None:  # fmt: skip
        m = self.m
        m.Workflow.update(
            status=status.value, result=result_json, error=error, failed_step=failed_step, updated_at=now
        ).where(m.Workflow.id == workflow_id).execute()
        self._release_lease(workflow_id)

    def _message_waiting(self, workflow_id: str, topic: str) -> bool:
        """Inside a write: is an unconsumed message on ``topic`` there for ``workflow_id``?"""
        m = self.m
        query = m.Message.select(m.Message.id).where(
            (m.Message.workflow_id == workflow_id) & (m.Message.topic == topic) & m.Message.consumed_by_step.is_null()
        )
        return bool(query.exists())
