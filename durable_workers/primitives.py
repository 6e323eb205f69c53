"""Durable primitives of the workflow context: sleep, recorded values, patches.

:class:`Primitives` is a mixin of :class:`~durable_workers.context.Context`.
Each primitive is a step with a reserved name (``durable:...``, which user step
ids cannot take, see :func:`keys.check_name`), so its value is recorded once
and replayed, never recomputed.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from typing import Callable, TypeVar

from . import keys
from .errors import WorkflowSuspended
from .parts import ContextParts
from .policy import DEFAULT_POLICY
from .records import StepStatus

T = TypeVar("T")

#: Prefix of the step names the primitives record under.
RESERVED = keys.RESERVED_PREFIX


class Primitives(ContextParts):
    """Sleep, recorded ``now``/``uuid4``/``random`` and patch markers, on top of the context's steps."""

    def _reserved(self, what: str, name: str, fn: Callable[[], T]) -> T:
        scope = keys.current_scope(self, f"ctx.{what}")  # type: ignore[arg-type]
        return self._run_step(scope, RESERVED + name, fn, DEFAULT_POLICY)

    def sleep(self, seconds: float) -> None:
        """Sleep durably for ``seconds`` (from the first time this call was reached).

        The wake time is recorded once (the database clock plus ``seconds``); while
        it is in the future the attempt suspends: the workflow becomes WAITING,
        its worker slot and lease are freed, and any worker resumes it when due,
        replaying up to here and going on. Raises ``ValueError`` for a negative
        or non-finite duration.
        """
        seconds = float(seconds)
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"ctx.sleep({seconds!r}): seconds must be a finite number >= 0")
        wake_at = self._reserved("sleep", "sleep", lambda: self._store.now() + seconds)
        self._suspend_until(float(wake_at))

    def sleep_until(self, epoch_seconds: float) -> None:
        """Sleep durably until the UNIX time ``epoch_seconds`` (recorded once; see :meth:`sleep`)."""
        target = float(epoch_seconds)
        if target != target or target == float("inf"):
            raise ValueError(f"ctx.sleep_until({epoch_seconds!r}): needs a finite UNIX time")
        wake_at = self._reserved("sleep_until", "sleep", lambda: target)
        self._suspend_until(float(wake_at))

    def _suspend_until(self, wake_at: float) -> None:
        if wake_at > self._store.now():
            raise WorkflowSuspended(self.workflow_id, wake_at)

    def now(self) -> float:
        """The current UNIX time, recorded the first time: the same value on every replay."""
        return float(self._reserved("now", "now", self._store.now))

    def uuid4(self) -> str:
        """A random UUID (as text), recorded the first time: the same value on every replay."""
        return str(self._reserved("uuid4", "uuid4", lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        """A random float in [0, 1), recorded the first time: the same value on every replay."""
        return float(self._reserved("random", "random", _random.random))

    def patched(self, patch_id: str) -> bool:
        """True where new code runs (a marker is recorded), False replaying a history from before the patch.

        A history recorded before the patch has, at this position, another
        step (or is at its end and still running): then ``False`` and nothing is
        recorded. Otherwise the marker is recorded (or replayed) and ``True``.
        """
        keys.check_name(patch_id)
        scope = keys.current_scope(self, f"ctx.patched({patch_id!r})")  # type: ignore[arg-type]
        marker = f"{RESERVED}patch:{patch_id}"
        here = self._by_position.get((scope.path, scope.position))
        if here is not None and here.name != marker:
            return False  # older history: the code before the patch ran here
        self._run_step(scope, marker, lambda: True, DEFAULT_POLICY)
        return True

    def deprecate_patch(self, patch_id: str) -> None:
        """Accept histories with or without the marker of ``patch_id`` (the old branch was removed).

        A recorded marker at this position is consumed; otherwise nothing happens
        and nothing is recorded.
        """
        keys.check_name(patch_id)
        scope = keys.current_scope(self, f"ctx.deprecate_patch({patch_id!r})")  # type: ignore[arg-type]
        here = self._by_position.get((scope.path, scope.position))
        if here is not None and here.name == f"{RESERVED}patch:{patch_id}" and here.status == StepStatus.COMPLETED.value:
            self._run_step(scope, here.name, lambda: True, DEFAULT_POLICY)
