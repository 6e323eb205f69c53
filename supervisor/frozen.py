"""Which of a supervisor's own workers are frozen: their heartbeat stopped and is not coming back.

A worker's heartbeat can be late for two reasons that look the same in its row.
Its process may be frozen (SIGSTOP, a hang), or nobody could write for a while
(a worker stopped inside a write transaction, a backup, a long transaction
elsewhere). In the second case every worker's heartbeat is late, and killing
them would turn a short stall into a fleet-wide restart. So:

- a worker whose process is stopped by a signal is frozen for certain once its
  heartbeat is past the limit, and it is killed at once, whatever the database
  says. It may be the very process that holds the write lock everyone waits for;
- a worker that is not stopped but whose heartbeat is past the limit gets
  ``FROZEN_PROOF_TTLS`` more, counted only while the database is writable. The
  turn probes the write lock first. A probe that fails, or that had to wait for
  the lock, saw a stall: no heartbeat is judged older than that stall's end and
  every such timer starts again. A heartbeat that waited for the lock lands
  within the proof time. The worker is killed only if its heartbeat is still the
  same at the end of it;
- a live own process whose row another supervisor marked dead (its heartbeat
  was older than ``DEAD_HEARTBEAT_TTLS`` by their clock) has lost its work
  already: it is killed too, so that its slot is filled again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from durable_workers.liveness import FROZEN_PROOF_TTLS, STALL_SEEN_S, heartbeat_age, on_this_host, process_stopped

from .fleet import Slot

if TYPE_CHECKING:
    from durable_workers.backends.base import Store
    from durable_workers.records import WorkerRecord

log = logging.getLogger("durable_workers.supervisor")

#: Worker rows in these states are judged by their heartbeat.
ALIVE_STATES = ("running", "draining")


@dataclass
class FrozenWatch:
    """Turn by turn, finds the own workers to kill for a heartbeat that stopped (see the module docstring)."""

    frozen_after_ttls: float
    default_ttl: float
    #: Monotonic time a stall of the database was last seen: no heartbeat is judged older than that.
    unwritable_at: float | None = None
    #: Worker id -> (the late ``heartbeat_mono`` seen, monotonic time it was first seen late while writable).
    _late: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: True from a stall seen with late heartbeats until a turn finds none, or the database writable at once.
    _stalled: bool = False

    def frozen(self, store: "Store", slots: Iterable[Slot]) -> list[tuple[Slot, str]]:
        """The slots whose worker is frozen, each with the reason to log; reads the workers' rows."""
        rows = {w.id: w for w in store.list_workers()}
        found: list[tuple[Slot, str]] = []
        running_late: list[tuple[Slot, "WorkerRecord", float, str]] = []
        for slot in slots:
            row = rows.get(slot.worker_id or "")
            if slot.process is None or not slot.alive() or slot.killed_for or row is None or not self._judged(row):
                continue
            if row.state not in ALIVE_STATES:
                if row.state == "dead":  # another supervisor reaped it by its heartbeat: its work is gone
                    found.append((slot, f"its heartbeat is {heartbeat_age(row):.1f}s old and another supervisor marked it dead"))
                continue
            ttl = row.ttl or self.default_ttl
            limit = self.frozen_after_ttls * ttl + store.stall_grace(ttl)
            age = heartbeat_age(row)
            if age > limit and process_stopped(slot.process.pid):  # frozen for certain: the raw age counts
                found.append((slot, f"its heartbeat is {age:.1f}s old (stopped; limit {limit:.1f}s)"))
                continue
            if self.unwritable_at is not None:  # a heartbeat cannot be older than the store's recovery
                age = min(age, time.monotonic() - self.unwritable_at)
            if age > limit:
                running_late.append((slot, row, ttl, f"its heartbeat is {age:.1f}s old (frozen? limit {limit:.1f}s)"))
        found += self._proven(store, running_late)
        return found

    def _proven(self, store: "Store", late: list[tuple[Slot, "WorkerRecord", float, str]]) -> list[tuple[Slot, str]]:
        """Of the running workers past the limit, those whose proof time ran out while the database was writable."""
        if not late:
            self._late, self._stalled = {}, False
            return []
        ttl = min(t for _, _, t, _ in late)
        began = time.monotonic()
        writable = store.writable(within=ttl / 3)
        mono = time.monotonic()
        if not writable or mono - began >= STALL_SEEN_S:
            if not self._stalled:
                log.warning("heartbeats are late but the database %s; no running worker is killed for it",
                            "is not writable" if not writable else "was stalled too")  # fmt: skip
            self.unwritable_at, self._late, self._stalled = mono, {}, True
            return []
        self._stalled = False
        found, kept = [], {}
        for slot, row, ttl, reason in late:
            assert row.heartbeat_mono is not None  # checked by _judged
            seen = self._late.get(row.id)
            if seen is None or seen[0] != row.heartbeat_mono:
                seen = (row.heartbeat_mono, mono)
            kept[row.id] = seen
            if mono - seen[1] >= FROZEN_PROOF_TTLS * ttl:
                found.append((slot, reason))
        self._late = kept
        return found

    @staticmethod
    def _judged(row: "WorkerRecord") -> bool:
        """Only rows of this host with a monotonic heartbeat are judged (another host's clock is not ours)."""
        return row.heartbeat_mono is not None and on_this_host(row)
