"""Row helpers shared by the operation areas, each run inside a caller's write transaction."""

from __future__ import annotations

from typing import Any

from ..errors import WorkflowNotFound
from ..records import TERMINAL, Status, StepStatus
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
        self._wake_parent(workflow_id, self._parent_of(workflow_id), now)

    def _parent_of(self, workflow_id: str) -> str | None:
        m = self.m
        parent: str | None = m.Workflow.select(m.Workflow.parent_id).where(m.Workflow.id == workflow_id).scalar()
        return parent

    def _wake_parent(self, child_id: str, parent_id: str | None, now: float) -> None:
        """Inside the write that ended ``child_id``: make every workflow WAITING on it due now (its parent, forks of it).

        The parent's row is locked first (whatever its status), so a parent
        suspending concurrently either sees the child ended or is seen WAITING
        here: the wake-up is never lost.
        """
        if parent_id is None:
            return
        m = self.m
        self._lock_workflow(parent_id)
        waiting = m.Workflow.select(m.Workflow.id).where(
            (m.Workflow.waiting_for == f"child:{child_id}") & (m.Workflow.status == Status.WAITING.value)
        )  # the parent, and any fork of it that replays the same child's start
        for row in list(waiting):
            m.Workflow.update(wake_at=now).where(
                (m.Workflow.id == row.id) & (m.Workflow.status == Status.WAITING.value)
            ).execute()
            self._notify(row.id)

    def _end_cancelled(self, workflow_id: str, reason: str, now: float, *, parent_id: str | None) -> None:
        """Inside a write: ``workflow_id`` CANCELLED with ``reason`` (owner fenced out), its descendants too, its parent woken."""
        m = self.m
        m.Workflow.update(status=Status.CANCELLED.value, error=reason, updated_at=now).where(
            m.Workflow.id == workflow_id
        ).execute()
        self._release_lease(workflow_id, bump=True)
        self._clear_step_deadlines(workflow_id)
        self._cancel_descendants(workflow_id, reason, now)
        self._wake_parent(workflow_id, parent_id, now)

    def _cancel_descendants(self, workflow_id: str, reason: str, now: float) -> list[str]:
        """Inside a write: every unfinished descendant of ``workflow_id`` CANCELLED (owners fenced out); their ids."""
        m = self.m
        cancelled: list[str] = []
        frontier, seen = [workflow_id], {workflow_id}
        while frontier:
            rows = list(m.Workflow.select(m.Workflow.id, m.Workflow.status, m.Workflow.parent_id)
                        .where(m.Workflow.parent_id.in_(frontier)))  # fmt: skip
            frontier = [row.id for row in rows if row.id not in seen]
            seen.update(frontier)
            for row in rows:
                if row.status in TERMINAL:
                    continue
                self._lock_lease(row.id)
                self._lock_workflow(row.id)
                updated = m.Workflow.update(
                    status=Status.CANCELLED.value, error=f"cancelled: {reason} (parent {row.parent_id})", updated_at=now
                ).where((m.Workflow.id == row.id) & m.Workflow.status.not_in(TERMINAL)).execute()
                if updated:
                    self._release_lease(row.id, bump=True)
                    self._clear_step_deadlines(row.id)
                    cancelled.append(row.id)
        return cancelled

    def _ended(self, workflow_id: str) -> bool:
        """Inside a write: has ``workflow_id`` ended (COMPLETED, FAILED or CANCELLED)?"""
        m = self.m
        return bool(m.Workflow.select(m.Workflow.id).where((m.Workflow.id == workflow_id) & m.Workflow.status.in_(TERMINAL)).exists())

    def _message_waiting(self, workflow_id: str, topic: str) -> bool:
        """Inside a write: is an unconsumed message on ``topic`` there for ``workflow_id``?"""
        m = self.m
        query = m.Message.select(m.Message.id).where(
            (m.Message.workflow_id == workflow_id) & (m.Message.topic == topic) & m.Message.consumed_by_step.is_null()
        )
        return bool(query.exists())
