"""Calling a step's function: on the workflow's thread, or on a thread of its own when it has a timeout.

A thread cannot be stopped, so a step with a ``timeout`` runs on a daemon
thread the caller joins for that long: still running then is an
:class:`Overrun` (the caller abandons the attempt: the thread may go on); ended
but later than the timeout (its process was frozen past both deadlines, and
the step's end won the race with the join on SIGCONT) is a plain
:class:`~durable_workers.errors.StepTimeoutError`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, TypeVar

from . import keys
from .errors import StepTimeoutError

T = TypeVar("T")


class Overrun(Exception):
    """Internal: the step's thread was still running at its timeout."""

    def __init__(self, error: StepTimeoutError) -> None:
        super().__init__(str(error))
        self.error = error


def call_step(ctx: Any, key: str, fn: Callable[[], T], timeout: float | None) -> T:
    """Run step ``key``'s function ``fn`` for the workflow context ``ctx``, within ``timeout`` seconds if given."""
    if not timeout:
        keys.enter_step(key)
        try:
            return fn()
        finally:
            keys.enter_step(None)
    box: dict[str, Any] = {}

    def target() -> None:
        keys.activate(ctx)
        keys.enter_step(key)
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the waiting thread
            box["error"] = exc
        box["took"] = time.monotonic() - began

    began = time.monotonic()
    runner = threading.Thread(target=target, name=f"step {key}", daemon=True)
    runner.start()
    runner.join(timeout)
    if runner.is_alive():
        raise Overrun(StepTimeoutError(f"step {key} did not finish within {timeout:g}s"))
    if box["took"] > timeout:  # it ended, but late
        raise StepTimeoutError(f"step {key} took {box['took']:.3g}s, over its timeout of {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
