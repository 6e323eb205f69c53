"""Lease grace after a store outage seen by this process (the PostgreSQL dialect's stall grace).

While the server is down or refuses connections, no worker can renew its leases, and
an attempt the outage interrupted cannot hand its workflow back; every lease that
should have been renewed meanwhile looks expired once the server answers again.
Without a grace, the first claimer to get through takes such a lease before its
live holder's next heartbeat: a running attempt loses its workflow, and an
interrupted one's hand-back (``interruption = "store unavailable: ..."``) finds the
lease moved on, so the interruption is never recorded and the attempt counts as a
crash. SQLite measures the same thing as a wait for its write lock
(``SqliteStore._stall_grace``); here an outage runs from this process's last
successful operation before a :class:`StoreUnavailable` to its first success after.
For ``ttl`` seconds after that, a lease counts as expired only if it expired that
much before now, and a heartbeat may be that much late without its worker being
frozen.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from ..errors import StoreUnavailable

T = TypeVar("T")


class OutageGrace:
    """Mixin for a store class: measures outages around ``_run`` and extends lease expiry after one."""

    #: Monotonic time of the last operation that went through (None: none yet).
    _ok_mono: float | None = None
    #: Monotonic time the current outage began (None: the store answers).
    _down_since: float | None = None
    #: (monotonic time it ended, seconds) of the last outage.
    _outage: tuple[float, float] = (float("-inf"), 0.0)

    def _run(self, body: Callable[[], T], **options: Any) -> T:
        try:
            result: T = super()._run(body, **options)  # type: ignore[misc]
        except StoreUnavailable:
            if self._down_since is None:
                self._down_since = self._ok_mono if self._ok_mono is not None else time.monotonic()
            raise
        mono = time.monotonic()
        down_since = self._down_since
        if down_since is not None:
            self._outage = (mono, mono - down_since)
            self._down_since = None
        self._ok_mono = mono
        return result

    def _outage_grace(self, ttl: float) -> float:
        """Seconds by which lease expiry is extended: the last outage's length, for ``ttl`` s after it.

        During an outage (or the first operation after it, which has not returned yet) the
        outage so far.
        """
        mono = time.monotonic()
        down_since = self._down_since
        if down_since is not None:
            return mono - down_since
        ended, seconds = self._outage
        return seconds if 0.0 <= mono - ended < ttl else 0.0

    def _stale_before(self, now: float, ttl: float) -> float:
        """Leases that expired before this instant are claimable (``now`` less any outage grace)."""
        return now - self._outage_grace(ttl)

    def stall_grace(self, ttl: float, *, now: float | None = None) -> float:
        """Seconds this store could not reach the database recently (see the module docstring)."""
        return self._outage_grace(ttl)
