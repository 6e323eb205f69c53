"""Signals turned into ordinary calls, made outside any signal handler.

A Python signal handler runs on the main thread between two bytecodes, in
the middle of whatever that thread was doing: ``threading.Event.set()`` there
takes a lock the interrupted code may hold, and the process deadlocks on
itself. So the handlers installed here do nothing; the interpreter's C-level
handler writes the signal number to a self-pipe (``signal.set_wakeup_fd``),
and a daemon thread reads the pipe and calls the callback registered for that
signal, where locks, logging and store calls are safe.

``SignalDispatcher("worker-signals").on(signal.SIGTERM, lambda count: ...)``
on the main thread; ``count`` is how many times that signal has arrived.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Callable

log = logging.getLogger("durable_workers.signals")

#: A callback gets how many times its signal has been received so far (1 the first time).
Callback = Callable[[int], None]


def _do_nothing(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing (the signal number is already in the self-pipe)."""


class SignalDispatcher:
    """Delivers chosen signals to callbacks on a thread named ``name`` (one per process).

    :meth:`on` must be called on the main thread (``signal.signal`` and
    ``signal.set_wakeup_fd`` raise ``ValueError`` elsewhere). Callbacks run
    one at a time, in arrival order, on the dispatcher's thread; an exception
    in one is logged and delivery goes on. A burst of signals larger than the
    pipe's buffer loses the excess (only repeats of signals already queued).
    """

    def __init__(self, name: str = "signals") -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # the C-level handler must never block
        self._callbacks: dict[int, Callback] = {}
        self._counts: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._installed = False

    def on(self, signum: int, callback: Callback) -> "SignalDispatcher":
        """Call ``callback(count)`` on the dispatcher thread for each ``signum``; returns ``self``."""
        self._callbacks[signum] = callback
        if not self._installed:
            signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
            self._installed = True
        signal.signal(signum, _do_nothing)
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def count(self, signum: int) -> int:
        """How many times ``signum`` has been delivered to its callback."""
        return self._counts.get(signum, 0)

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 512)
            except OSError:  # pragma: no cover - the pipe was closed
                return
            if not data:  # pragma: no cover
                return
            for signum in data:
                callback = self._callbacks.get(signum)
                if callback is None:
                    continue
                self._counts[signum] = self._counts.get(signum, 0) + 1
                try:
                    callback(self._counts[signum])
                except Exception:
                    log.exception("handling signal %s failed", signum)
