"""The engine's clock hook: the real wall clock, or a fake one a test installs.

Every instant the engine stores or compares (leases, wake times of
``ctx.sleep`` and ``ctx.recv(timeout=)``, deadlines, claims, schedule slots)
comes from ``Store.now()``, and ``Store.now()`` looks at :data:`installed`
first: ``None`` (the default) means the real clock (the wall clock on SQLite,
the server's on PostgreSQL); a :class:`FakeClock` means its time, on both
backends. One module attribute read is all the hook costs when unused.

The fake clock is this process's only: workers in other processes keep the
real one, so it is for in-process runs (``Client.run_here``, the pytest
plugin's ``durable_run``). An in-process run under a fake clock never waits
real time for a durable sleep or a receive timeout: with ``auto_advance`` it
moves the clock to the wake time and resumes, else it hands the workflow back
``WAITING`` at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from .errors import InputError


class FakeClock:
    """A clock that only moves when told: :meth:`advance`, :meth:`set`, or a run's auto-advance.

    ``start``: the first reading (UNIX seconds; default the real time now).
    ``auto_advance``: whether an in-process run jumps the clock to each durable
    wake time (True) or returns the workflow ``WAITING`` (False).
    """

    def __init__(self, start: float | None = None, *, auto_advance: bool = True) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()
        #: In-process runs jump the clock to each wake time instead of returning ``WAITING``.
        self.auto_advance = auto_advance

    def now(self) -> float:
        """The fake time (UNIX seconds)."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward (not back); the new time."""
        if seconds < 0:
            raise InputError(f"the clock only moves forward: advance({seconds}) is negative; use set() to go back")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def set(self, epoch: float) -> float:
        """Put the clock at ``epoch`` (UNIX seconds, either direction); the new time."""
        with self._lock:
            self._now = float(epoch)
            return self._now

    def reach(self, wake_at: float) -> bool:
        """Called by an in-process run before a wake time: whether ``wake_at`` is due now.

        With :attr:`auto_advance` the clock first moves on to ``wake_at`` (never back).
        """
        with self._lock:
            if self.auto_advance and wake_at > self._now:
                self._now = wake_at
            return wake_at <= self._now


#: The fake clock in force in this process, or None for the real clock (read by ``Store.now()``).
installed: FakeClock | None = None


def install(clock: FakeClock | None) -> FakeClock | None:
    """Make ``clock`` this process's clock (None: the real one again); the one it replaces."""
    global installed
    previous, installed = installed, clock
    return previous


@contextlib.contextmanager
def fake_clock(start: float | None = None, *, auto_advance: bool = True) -> Iterator[FakeClock]:
    """Context manager: a :class:`FakeClock` installed for the block, the previous clock restored after."""
    clock = FakeClock(start, auto_advance=auto_advance)
    previous = install(clock)
    try:
        yield clock
    finally:
        install(previous)


__all__ = ["FakeClock", "fake_clock", "install", "installed"]
