"""Which of a supervisor's own workers are frozen: their heartbeat stopped and is not coming back.

A worker's heartbeat can be late for two reasons that look the same in its row.
Its process may be frozen (SIGSTOP, a hang), or nobody could write for a while
(a worker stopped inside a write transaction, a backup, a long transaction
elsewhere). In the second case every worker's heartbeat is late, and killing
them would turn a short stall into a fleet-wide restart. So:

- a worker whose process is stopped by a signal is frozen for certain once its
  heartbeat is past the limit, and it is killed at once. It may be the very
  process that holds the write lock everyone else waits for;
- a worker that is not stopped but whose heartbeat is past the limit gets one
  more TTL to prove it lives. A heartbeat that waited for the write lock lands
  within that TTL. It is killed only if the heartbeat is still the same at the
  end of it and the database can be written then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from durable_workers.liveness import heartbeat_age, on_this_host, process_stopped

from .fleet import Slot

if TYPE_CHECKING:
    from durable_workers.backends.base import Store
    from durable_workers.records import WorkerRecord

log = logging.getLogger("durable_workers.supervisor")


@dataclass
class FrozenWatch:
    """Turn by turn, finds the own workers to kill for a heartbeat that stopped (see the module docstring)."""

    frozen_after_ttls: float
    default_ttl: float
    #: Monotonic time the database was last found unwritable: no heartbeat is judged older than that.
    unwritable_at: float | None = None
    #: Worker id -> (the late ``heartbeat_mono`` seen, monotonic time it was first seen late).
    _late: dict[str, tuple[float, float]] = field(default_factory=dict)

    def frozen(self, store: "Store", slots: Iterable[Slot]) -> list[tuple[Slot, str]]:
        """The slots whose worker is frozen, each with the reason to log; reads the workers' rows."""
        rows = {w.id: w for w in store.list_workers(alive_only=True)}
        mono = time.monotonic()
        found: list[tuple[Slot, str]] = []
        late: dict[str, tuple[float, float]] = {}
        writable: bool | None = None
        for slot in slots:
            row = rows.get(slot.worker_id or "")
            if slot.process is None or not slot.alive() or slot.killed_for or row is None or not self._judged(row):
                continue
            ttl = row.ttl or self.default_ttl
            limit = self.frozen_after_ttls * ttl + store.stall_grace(ttl)
            age = heartbeat_age(row)
            if self.unwritable_at is not None:  # a heartbeat cannot be older than the store's recovery
                age = min(age, mono - self.unwritable_at)
            if age <= limit:
                continue
            reason = f"its heartbeat is {age:.1f}s old (frozen? limit {limit:.1f}s)"
            if process_stopped(slot.process.pid):
                found.append((slot, reason))
                continue
            assert row.heartbeat_mono is not None  # checked by _judged
            seen = self._late.get(row.id)
            if seen is None or seen[0] != row.heartbeat_mono:
                seen = (row.heartbeat_mono, mono)
            late[row.id] = seen
            if mono - seen[1] < ttl:
                continue
            if writable is None:
                writable = store.writable(within=ttl / 3)
            if writable:
                found.append((slot, reason))
                continue
            if self.unwritable_at is None:
                log.warning("heartbeats are late but the database is not writable either; "
                            "no running worker is killed for it until it is")
            self.unwritable_at = mono
        self._late = late
        return found

    @staticmethod
    def _judged(row: "WorkerRecord") -> bool:
        """Only rows of this host with a monotonic heartbeat are judged (another host's clock is not ours)."""
        return row.heartbeat_mono is not None and on_this_host(row)
