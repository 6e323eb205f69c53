"""What passes between a worker and one running attempt: step events, stop signals, crash points."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

from .errors import DurableError, LeaseLost, WorkerStopping


@dataclass(frozen=True)
class StepEvent:
    """What happened to a step, for progress output and logs.

    ``kind`` is one of ``replayed``, ``started``, ``completed``, ``retrying``,
    ``failed`` (retries exhausted) or ``replayed-failure``. ``timed_out`` is
    True only on the live event of an execution that overran its timeout (its
    thread may still be running); never on a replayed failure.
    """

    kind: str
    workflow_id: str
    step_key: str
    attempt: int = 0
    duration: float = 0.0
    error: str | None = None
    timed_out: bool = False


Listener = Callable[[StepEvent], None]


@dataclass
class AttemptControl:
    """Signals from the worker to one running attempt.

    ``stopping``: the worker drains (shared by its attempts). ``lost``: the
    heartbeat found this attempt's lease gone. ``wakeup`` is set with either,
    so a retry back-off wakes at once.
    """

    stopping: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    wakeup: threading.Event = field(default_factory=threading.Event)

    def check(self, workflow_id: str, before: str) -> None:
        """Raise :class:`LeaseLost` or :class:`WorkerStopping` when the attempt must stop."""
        if self.lost.is_set():
            raise LeaseLost(f"workflow {workflow_id}: the lease was lost before {before}")
        if self.stopping.is_set():
            raise WorkerStopping(f"worker stopping before {before}")


#: Where ``--crash-at STEP:POINT`` kills: before the step's function runs (its start is
#: recorded), after it returned but before its result is recorded, after the result is recorded.
CRASH_POINTS = ("before", "returned", "after")


def parse_crash_at(spec: str | None) -> tuple[str, str] | None:
    """Parse ``STEP:before|returned|after``; raises :class:`DurableError` when malformed."""
    if not spec:
        return None
    target, _, point = spec.rpartition(":")
    if not target or point not in CRASH_POINTS:
        raise DurableError(f"--crash-at must look like STEP:before, STEP:returned or STEP:after, got {spec!r}")
    return target, point


#: The crash points of a suspend (``--crash-at durable:suspend:before|after``): just before
#: the WAITING state is committed, and just after it (the lease is already released).
SUSPEND_POINT = "durable:suspend"


def crash_if_asked(crash_at: tuple[str, str] | None, target: str, point: str) -> None:
    """SIGKILL this process when ``crash_at`` (parsed, None once past the first attempt) is ``target:point``."""
    if crash_at == (target, point):
        os.kill(os.getpid(), signal.SIGKILL)
