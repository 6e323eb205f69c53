"""Store operations on messages and events: send, consume (fenced), set and read events."""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import InvalidStateError
from ..records import TERMINAL, Status
from .rows import RowHelpers


class MessageOps(RowHelpers):
    """Messages sent to a workflow on a topic, and the key/value events a workflow publishes."""

    def send_message(
        self, workflow_id: str, topic: str, payload: str | None, *, key: str | None = None, now: float | None = None
    ) -> tuple[str, bool]:
        """Store a message for ``workflow_id`` on ``topic``; ``(message id, created)``.

        Idempotent by ``key``: a second send with the same key stores nothing
        and returns the first message's id (even once the workflow ended). A workflow WAITING
        in a receive on this topic is made due now (``wake_at``) and listening workers are told (a
        sleeping one, or one waiting on another topic or a child, is left alone). Raises WorkflowNotFound
        for an unknown workflow, InvalidStateError for a finished one.
        """
        m = self.m
        now = self._clock(now)
        new_id = uuid.uuid4().hex  # chosen once: a retried body finds its own row

        def body() -> tuple[str, bool]:
            row = self._locked_workflow(workflow_id)
            match = m.Message.id == new_id
            if key is not None:
                match = match | ((m.Message.workflow_id == workflow_id) & (m.Message.key == key))
            found = m.Message.select(m.Message.id).where(match).scalar()
            if found is not None:  # sent already (this very call retried, or the same key): still one message
                return str(found), found == new_id
            if row.status in TERMINAL:
                raise InvalidStateError(f"workflow {workflow_id} is already {row.status}; it takes no new messages")
            m.Message.insert(
                id=new_id, workflow_id=workflow_id, topic=topic, payload=payload, key=key, created_at=now
            ).execute()
            if row.status == Status.WAITING.value and row.waiting_for in (None, f"message:{topic}"):
                m.Workflow.update(wake_at=now).where(m.Workflow.id == workflow_id).execute()
                self._notify(workflow_id)
            return new_id, True

        return self.write(body, safe=True)

    def consume_message(
        self, workflow_id: str, topic: str, step_id: str, *, worker_id: str, token: int
    ) -> tuple[bool, str | None]:
        """Mark the oldest unconsumed message on ``topic`` consumed by ``step_id`` and return its payload.

        Fenced by the lease: raises LeaseLost, consuming nothing, when the lease
        is no longer held. A message already consumed by ``step_id`` (a retried
        commit, a replay) is returned again. ``(found, payload JSON)``; ``(False, None)`` when there is none.
        """
        m = self.m

        def body() -> Any:
            self._fence(workflow_id, worker_id, token)
            mine = m.Message.select().where(
                (m.Message.workflow_id == workflow_id) & (m.Message.consumed_by_step == step_id)
            ).first()
            if mine is not None:
                return True, mine.payload
            oldest = self._locking(
                m.Message.select()
                .where((m.Message.workflow_id == workflow_id) & (m.Message.topic == topic)
                       & m.Message.consumed_by_step.is_null())
                .order_by(m.Message.created_at, m.Message.id)
                .limit(1)
            ).first()
            if oldest is None:
                return False, None
            m.Message.update(consumed_by_step=step_id).where(m.Message.id == oldest.id).execute()
            return True, oldest.payload

        return self.write(body, safe=True)

    def set_event(
        self, workflow_id: str, key: str, value: str | None, *, worker_id: str, token: int, now: float | None = None
    ) -> None:
        """Upsert the event ``key`` of ``workflow_id`` (last write wins), fenced by the lease."""
        m = self.m
        now = self._clock(now)

        def body() -> None:
            self._fence(workflow_id, worker_id, token)
            m.Event.insert(workflow_id=workflow_id, key=key, value=value, updated_at=now).on_conflict(
                conflict_target=[m.Event.workflow_id, m.Event.key],
                update={m.Event.value: value, m.Event.updated_at: now},
            ).execute()

        self.write(body, safe=True)

    def get_events(self, workflow_id: str) -> dict[str, str | None]:
        """All events of ``workflow_id`` as ``{key: value (JSON text)}``, by key."""
        m = self.m

        def body() -> dict[str, str | None]:
            rows = m.Event.select(m.Event.key, m.Event.value).where(m.Event.workflow_id == workflow_id)
            return {row.key: row.value for row in rows.order_by(m.Event.key)}

        return self.read(body)
