"""The attempts alive in a worker process, and the heartbeat that renews exactly their leases.

The heartbeat renews the worker row and the ``(workflow_id, token)`` lease of
each attempt registered in :class:`LiveAttempts` — never "every lease of this
worker", so an attempt that ended without releasing (the store failed while it
recorded its end) stops being renewed and its lease expires. A renewal that
finds no row stops that attempt at once (its :class:`AttemptControl` is marked
lost and woken). Hand-backs the store refused while it was unavailable are kept
here and retried on every beat until the store answers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from .backends import Store
from .context import AttemptControl
from .errors import StoreUnavailable

log = logging.getLogger("durable_workers.worker")


@dataclass(frozen=True)
class PendingRelease:
    """A workflow to hand back (PENDING) once the store answers again."""

    workflow_id: str
    token: int
    reason: str | None


class LiveAttempts:
    """Thread-safe registry of this process's running attempts and pending hand-backs."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        self._lock = threading.Lock()
        self._live: dict[str, tuple[int, AttemptControl]] = {}
        self._held: set[tuple[str, int]] = set()
        self._pending: list[PendingRelease] = []

    def begin(self, workflow_id: str, token: int) -> AttemptControl:
        """Register an attempt; returns the control its context watches."""
        control = AttemptControl(stopping=self.stopping)
        with self._lock:
            self._live[workflow_id] = (token, control)
        if self.stopping.is_set():
            control.wakeup.set()
        return control

    def end(self, workflow_id: str, token: int) -> None:
        """Forget an attempt (whatever its outcome): its lease is renewed no more, unless held."""
        with self._lock:
            if self._live.get(workflow_id, (None,))[0] == token and (workflow_id, token) not in self._held:
                del self._live[workflow_id]

    def hold(self, workflow_id: str, token: int) -> None:
        """Keep renewing this ended attempt's lease until the process exits (a timed-out step may still run)."""
        with self._lock:
            self._held.add((workflow_id, token))

    def held(self) -> list[str]:
        """Workflow ids whose leases are held for ended attempts (see :meth:`hold`)."""
        with self._lock:
            return [workflow_id for workflow_id, _ in self._held]

    def count(self) -> int:
        """Attempts running now (held leases of ended attempts not included)."""
        with self._lock:
            return len(self._live) - len(self._held)

    def pairs(self) -> list[tuple[str, int]]:
        """``(workflow_id, token)`` of every live attempt."""
        with self._lock:
            return [(workflow_id, token) for workflow_id, (token, _) in self._live.items()]

    def mark_lost(self, workflow_id: str, token: int) -> bool:
        """Stop the attempt holding ``token`` (its lease is gone); True if it was live."""
        with self._lock:
            entry = self._live.get(workflow_id)
        if entry is None or entry[0] != token:
            return False
        entry[1].lost.set()
        entry[1].wakeup.set()
        return True

    def stop(self) -> None:
        """Every attempt stops before its next step (and at once from a retry back-off)."""
        self.stopping.set()
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every attempt waiting to retry a step (the worker is stopping)."""
        with self._lock:
            controls = [control for _, control in self._live.values()]
        for control in controls:
            control.wakeup.set()

    def defer_release(self, workflow_id: str, token: int, reason: str | None) -> None:
        """Remember to hand ``workflow_id`` back once the store answers."""
        with self._lock:
            self._pending.append(PendingRelease(workflow_id, token, reason))

    def retry_releases(self, store: Store, worker_id: str) -> int:
        """Try every pending hand-back once; returns how many are still pending."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        kept = []
        for item in pending:
            try:
                done = store.release(item.workflow_id, worker_id, item.token, reason=item.reason)
            except StoreUnavailable:
                kept.append(item)
                continue
            log.info(
                "handed back workflow_id=%s after the store recovered%s",
                item.workflow_id,
                "" if done else " (its lease had already moved on)",
            )
        with self._lock:
            self._pending[:0] = kept
            return len(self._pending)


class Heartbeat:
    """Thread that renews the worker row and its live attempts' leases every ``ttl / 3`` seconds."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        ttl: float,
        attempts: LiveAttempts,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.ttl = ttl
        self.attempts = attempts
        self.on_beat = on_beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._failures = 0

    def start(self) -> "Heartbeat":
        """Start beating in a daemon thread; returns self."""
        self._thread.start()
        return self

    def beat(self) -> None:
        """Renew once now; stop attempts whose lease is gone; retry pending hand-backs.

        ``on_beat`` runs afterwards, also when the renewal failed (it may explain why).
        """
        try:
            pairs = self.attempts.pairs()
            tokens = dict(pairs)
            for workflow_id in self.store.heartbeat(self.worker_id, ttl=self.ttl, leases=pairs):
                if self.attempts.mark_lost(workflow_id, tokens[workflow_id]):
                    log.warning("lease lost workflow_id=%s token=%s; stopping that attempt", workflow_id, tokens[workflow_id])
            self.attempts.retry_releases(self.store, self.worker_id)
        finally:
            if self.on_beat is not None:
                self.on_beat()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.ttl / 3):
                try:
                    self.beat()
                    if self._failures:
                        log.info("heartbeat recovered after %s failed renewals worker_id=%s", self._failures, self.worker_id)
                        self._failures = 0
                except (Exception, StoreUnavailable) as exc:  # keep beating; the next renewal may succeed
                    self._failures += 1
                    if self._failures == 1 and not self._stop.is_set():  # halted: explained by on_beat
                        log.warning("heartbeat failed worker_id=%s: %s", self.worker_id, getattr(exc, "cause", exc))
        finally:
            self.store.close()

    def halt(self) -> None:
        """Renew no more after the current beat (callable from ``on_beat``, in the heartbeat thread)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop beating and wait for the thread."""
        self._stop.set()
        self._thread.join()
