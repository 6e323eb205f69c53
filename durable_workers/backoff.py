"""Repeated failures of a loop: log each distinct error once, back off with jitter.

A polling loop (the worker's claim loop, the supervisor's ``loop_once``) that
meets the same infrastructure error on every turn must neither spin nor print
a traceback per turn: a full disk once produced about 1,100 tracebacks in 7 s.
:class:`ErrorBackoff` logs the first occurrence of each distinct error with
its traceback, counts the repeats (at DEBUG level), logs a summary with the
repeat count when the error changes or the loop recovers, and tells the caller
how long to wait before the next turn: bounded exponential backoff with
jitter, reset by the first success.
"""

from __future__ import annotations

import logging
import random
import re

#: First pause after a failure, in seconds (doubles per consecutive failure).
BACKOFF_BASE = 0.05
#: Longest pause between two tries, in seconds.
BACKOFF_CAP = 5.0

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def error_key(exc: BaseException) -> str:
    """``Type: first line of the message``, numbers masked: two errors with the same key count as one.

    Numbers are masked so that "locked for 130 s" and "locked for 131 s" are
    one distinct error, not two.
    """
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {_NUMBER.sub('#', text)}"


class ErrorBackoff:
    """Log-once-per-distinct-error and jittered bounded backoff for one loop.

    Call :meth:`failed` with each exception (it returns the seconds to wait
    before trying again) and :meth:`succeeded` after each successful turn.
    Not thread-safe: one instance per loop.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
        rng: random.Random | None = None,
    ) -> None:
        self.logger = logger
        self.what = what
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self._key: str | None = None
        #: Times the current distinct error was seen again after its first log line.
        self.repeats = 0
        #: Consecutive failed turns (any error) since the last success.
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Record one failed turn; return the jittered pause (seconds) before the next one.

        The first occurrence of a distinct error is logged at WARNING with its
        traceback; repeats only at DEBUG. Never raises.
        """
        key = error_key(exc)
        self.failures += 1
        if key != self._key:
            self._summarize()
            self._key = key
            self.repeats = 0
            self.logger.warning("%s failed: %s (backing off; repeats are counted)", self.what, key, exc_info=exc)
        else:
            self.repeats += 1
            self.logger.debug("%s failed again: %s (repeat %d)", self.what, key, self.repeats)
        pause = min(self.cap, self.base * 2 ** min(self.failures - 1, 32))
        return pause * (0.5 + 0.5 * self._rng.random())

    def succeeded(self) -> None:
        """Record a successful turn: summarise the outage (if any) and reset the backoff."""
        if not self.failures:
            return
        self._summarize()
        self.logger.warning("%s recovered after %d failed tries", self.what, self.failures)
        self._key = None
        self.repeats = 0
        self.failures = 0

    def _summarize(self) -> None:
        if self._key is not None and self.repeats:
            self.logger.warning("%s failed: %s (repeated %d more times)", self.what, self._key, self.repeats)
