"""Retrying a workflow: what is forgotten of its history, and the children revived with it."""

from __future__ import annotations

import json
from typing import Any

from ..records import Status, StepStatus
from .rows import RowHelpers


class Revival(RowHelpers):
    """The body of ``retry``, applied to a workflow and, recursively, to the children its end took along."""

    def _revive(self, row: Any, now: float) -> None:
        """Inside a write: make the FAILED or CANCELLED ``row`` PENDING again, its deadline renewed; its children too."""
        m = self.m
        revived = self._children_to_revive(row)
        self._forget_ending_failure(row.id, row.failed_step)
        update: dict[Any, Any] = {
            m.Workflow.status: Status.PENDING.value, m.Workflow.error: None, m.Workflow.failed_step: None,
            m.Workflow.result: None, m.Workflow.attempts: 0, m.Workflow.run_at: now, m.Workflow.updated_at: now,
            m.Workflow.crash_at: None,
        }  # fmt: skip
        if row.deadline_at is not None:  # as long as before, from now
            update[m.Workflow.deadline_at] = now + max(row.deadline_at - row.run_at, 0.0)
        m.Workflow.update(update).where(m.Workflow.id == row.id).execute()
        self._notify(row.id)
        for child in revived:
            self._revive(child, now)

    def _children_to_revive(self, row: Any) -> list[Any]:
        """The children of ``row`` its end took along: cancelled with it, or the failed child that failed it."""
        m = self.m
        ended = (Status.FAILED.value, Status.CANCELLED.value)
        children = list(m.Workflow.select().where((m.Workflow.parent_id == row.id) & m.Workflow.status.in_(ended)))
        awaited = self._failed_child_id(row)
        cascaded = f"(parent {row.id})"
        return [
            c for c in children
            if c.id == awaited or (c.status == Status.CANCELLED.value and (c.error or "").endswith(cascaded))
        ]  # fmt: skip

    def _failed_child_id(self, row: Any) -> str | None:
        """The child whose recorded end (``durable:child-result``) ended ``row``, if one did."""
        m = self.m
        if not row.failed_step or "durable:child-result" not in row.failed_step:
            return None
        output = m.Step.select(m.Step.output).where(
            (m.Step.workflow_id == row.id) & (m.Step.step_key == row.failed_step)
        ).scalar()  # fmt: skip
        try:
            child = json.loads(output).get("id") if output else None
        except (ValueError, AttributeError):
            return None
        return str(child) if child else None

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
        m.Step.update(attempts=0, interruptions=0, deadline=None, history=None).where(
            (m.Step.workflow_id == workflow_id) & (m.Step.status == StepStatus.RUNNING.value)
        ).execute()
