"""Messages and events of the workflow context: ``ctx.recv`` and ``ctx.set_event``.

:class:`Messaging` is a mixin of :class:`~durable_workers.context.Context`.
A receive records two reserved steps: ``durable:recv-wait`` (a consumer id and
the timeout deadline, recorded once so replay is deterministic) and
``durable:recv`` (the payload received, or None on timeout). The message is
consumed by the store, fenced by the lease, under the consumer id: a crash
between the consume and the record of ``durable:recv`` consumes the same
message again on resume, never another one, and never loses it.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from . import keys
from .codec import encode_json
from .config import NO_TIMEOUT_WAKE_AT
from .errors import WorkflowSuspended
from .parts import ContextParts
from .policy import DEFAULT_POLICY
from .records import StepStatus

RECV = keys.RESERVED_PREFIX + "recv"
RECV_WAIT = keys.RESERVED_PREFIX + "recv-wait"


class Messaging(ContextParts):
    """Receiving messages sent with ``Client.send`` and publishing events for ``Client.get_event``."""

    def recv(self, topic: str, timeout: float | None = None) -> Any:
        """The oldest unconsumed message on ``topic`` sent to this workflow, consumed exactly once.

        With none yet, the workflow suspends WAITING (holding no lease or slot)
        until a send on this workflow or the ``timeout`` (seconds, from the
        first time this call was reached); on timeout it returns None. Both the
        deadline and the result are recorded: replay returns the same value.
        """
        if not topic:
            raise ValueError("ctx.recv: topic must be a non-empty string")
        if timeout is not None and not (float(timeout) >= 0 and math.isfinite(float(timeout))):
            raise ValueError(f"ctx.recv({topic!r}, timeout={timeout!r}): timeout must be a finite number >= 0")
        scope = keys.current_scope(self, f"ctx.recv({topic!r})")  # type: ignore[arg-type]
        wait = self._run_step(scope, RECV_WAIT, lambda: self._new_wait(topic, timeout), DEFAULT_POLICY)
        here = self._by_position.get((scope.path, scope.position))
        if here is not None and here.name == RECV and here.status == StepStatus.COMPLETED.value:
            return self._run_step(scope, RECV, lambda: None, DEFAULT_POLICY)  # replayed, nothing consumed
        if self.read_only:
            key = f"{scope.path}{RECV}#{scope.counts.get(RECV, 0) + 1}"
            raise self.stop_replay(key, f"would wait for a message on {topic!r}")
        found, payload = self._store.consume_message(
            self.workflow_id, topic, wait["id"], worker_id=self._worker_id, token=self._token
        )
        deadline = wait["deadline"]
        if not found and (deadline is None or deadline > self._store.now()):
            raise WorkflowSuspended(self.workflow_id, NO_TIMEOUT_WAKE_AT if deadline is None else deadline, topic)
        value = None if payload is None else json.loads(payload)
        return self._run_step(scope, RECV, lambda: value, DEFAULT_POLICY)

    def _new_wait(self, topic: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else self._store.now() + float(timeout)
        return {"id": uuid.uuid4().hex, "topic": topic, "deadline": deadline}

    def set_event(self, key: str, value: Any) -> None:
        """Publish ``value`` (JSON) under ``key`` for ``Client.get_event`` (last write wins; recorded once)."""
        if not key:
            raise ValueError("ctx.set_event: key must be a non-empty string")
        value_json = encode_json(value, f"ctx.set_event({key!r})")
        scope = keys.current_scope(self, f"ctx.set_event({key!r})")  # type: ignore[arg-type]

        def publish() -> bool:
            self._store.set_event(self.workflow_id, key, value_json, worker_id=self._worker_id, token=self._token)
            return True

        self._run_step(scope, keys.RESERVED_PREFIX + "event:" + key, publish, DEFAULT_POLICY)
