"""Store operations that end an attempt of a workflow: finish it, or suspend it WAITING."""

from __future__ import annotations

from typing import Any

from ..errors import LeaseLost
from ..records import Status
from .rows import RowHelpers


class EndingOps(RowHelpers):
    """Recording how an attempt ended and releasing its lease, fenced by that lease (portable)."""

    def finish_workflow(
        self,
        workflow_id: str,
        status: Status,
        *,
        result_json: str | None = None,
        error: str | None = None,
        failed_step: str | None = None,
        worker_id: str,
        token: int,
        parent_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record a workflow's end (COMPLETED, FAILED, or CANCELLED by its deadline) and release its lease (fenced).

        ``failed_step`` names the step whose failure ended the workflow, if one
        did (what :meth:`retry` drops). ``parent_id``: the workflow's parent
        (from its claimed row), woken if it waits on this child. CANCELLED
        cancels the unfinished descendants too.
        """
        m = self.m
        now = self._clock(now)

        def body() -> bool:
            if parent_id is not None:  # the parent's row first, as a cancel of the parent takes it: no deadlock
                self._lock_workflow(parent_id)
            if not self._release_held(workflow_id, worker_id, token):
                return False
            self._execute(
                "finish_workflow",
                lambda: m.Workflow.update(
                    status=status.value, result=result_json, error=error, failed_step=failed_step, updated_at=now
                ).where(m.Workflow.id == workflow_id),
                [status.value, result_json, error, now, failed_step, workflow_id],
            )
            if status is Status.CANCELLED:
                self._cancel_descendants(workflow_id, error or "cancelled", now)
            self._wake_parent(workflow_id, parent_id, now)
            return True

        def confirm() -> bool | None:
            ended = m.Workflow.select().where(
                (m.Workflow.id == workflow_id) & (m.Workflow.status == status.value) & (m.Workflow.updated_at == now)
            )
            return True if ended.exists() and not self._lease_held(workflow_id, worker_id, token) else None

        if not self.write(body, confirm=confirm):
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")

    def _release_held(self, workflow_id: str, worker_id: str, token: int) -> bool:
        """Inside a write: release the lease if (worker_id, token) still holds it; False if not (the fence)."""
        m = self.m
        released: int = self._execute(
            "release_held_lease",
            lambda: m.Lease.update(worker_id=None, expires_at=None).where(
                (m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id) & (m.Lease.token == token)
            ),
            [None, None, workflow_id, worker_id, token],
        ).rowcount
        return released > 0

    def suspend_workflow(
        self, workflow_id: str, wake_at: float, *, worker_id: str, token: int, topic: str | None = None,
        child: str | None = None, deadline_at: float | None = None, now: float | None = None,
    ) -> None:
        """Record a workflow WAITING until ``wake_at`` and release its lease (fenced, like finish).

        ``topic``: the workflow waits for a message on it; one that arrived
        since its consume failed makes it due now (no wake-up is lost).
        ``child``: it waits for that child workflow to end; one that ended
        already makes it due now. ``deadline_at``: the workflow's deadline,
        recorded, and the latest it sleeps until.

        The attempt is not counted against ``max_claims`` (a workflow may sleep
        any number of times). Raises :class:`LeaseLost`, writing nothing, when
        the lease is no longer held; a retried commit finds it released likewise.
        """
        m = self.m
        now = self._clock(now)

        def body() -> bool:
            if not self._release_held(workflow_id, worker_id, token):
                return False
            self._lock_workflow(workflow_id)  # a concurrent send or child end sees WAITING, or is seen here
            due = (topic is not None and self._message_waiting(workflow_id, topic)) or (
                child is not None and self._ended(child)
            )
            waiting: dict[Any, Any] = {
                m.Workflow.status: Status.WAITING.value,
                m.Workflow.wake_at: now if due else wake_at if deadline_at is None else min(wake_at, deadline_at),
                m.Workflow.waiting_for: f"message:{topic}" if topic is not None else f"child:{child}" if child else "sleep",
                m.Workflow.attempts: self._greatest(m.Workflow.attempts - 1, 0),
                m.Workflow.updated_at: now,
            }
            if deadline_at is not None:
                waiting[m.Workflow.deadline_at] = deadline_at
            m.Workflow.update(waiting).where(m.Workflow.id == workflow_id).execute()
            return True

        if not self.write(body):
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")
