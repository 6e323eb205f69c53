"""Store operations on workers: register, heartbeat, expire, interrupt, prune, and their read-outs."""

from __future__ import annotations

import json
import os
import time
from typing import Iterable, Sequence

from ..liveness import host_identity, hostname, process_start_time
from ..records import LeaseRecord, Status, StepRecord, StepStatus, WorkerRecord
from .rows import RowHelpers


class WorkerOps(RowHelpers):
    """Worker rows and the leases they renew (portable)."""

    def register_worker(
        self,
        worker_id: str,
        *,
        names: Iterable[str],
        concurrency: int = 1,
        supervisor_pid: int | None = None,
        pid: int | None = None,
        ttl: float | None = None,
        now: float | None = None,
    ) -> WorkerRecord:
        """Insert this process's worker row (host identity, pid, psutil create time, TTL)."""
        m = self.m
        now = self._clock(now)
        pid = os.getpid() if pid is None else pid

        def body() -> WorkerRecord:
            w = m.Worker
            m.Worker.insert(
                id=worker_id,
                host=hostname(),
                pid=pid,
                proc_started_at=process_start_time(pid),
                started_at=now,
                heartbeat_at=now,
                state="running",
                names=json.dumps(sorted(set(names))),
                concurrency=concurrency,
                supervisor_pid=supervisor_pid,
                host_id=host_identity(),
                heartbeat_mono=time.monotonic(),
                ttl=ttl,
            ).on_conflict(
                conflict_target=[w.id],
                preserve=[
                    w.host, w.pid, w.proc_started_at, w.started_at, w.heartbeat_at, w.state, w.names,
                    w.concurrency, w.supervisor_pid, w.host_id, w.heartbeat_mono, w.ttl,
                ],
            ).execute()  # fmt: skip
            return WorkerRecord.from_row(m.Worker.get_by_id(worker_id))

        return self.write(body, safe=True)

    def heartbeat(
        self,
        worker_id: str,
        *,
        ttl: float,
        leases: Iterable[tuple[str, int]] = (),
        state: str | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Renew the worker row and exactly the ``(workflow_id, token)`` leases given.

        Returns the workflow ids whose lease was not renewed because this
        worker no longer holds it with that token (the attempt must stop:
        :class:`LeaseLost`). A lease of an attempt that already ended is never
        renewed, so it expires even while the process lives. The new expiry
        counts from when the write lock was obtained, not from when the
        renewal was asked for (it may have waited for the lock). Safe to retry.
        """
        m = self.m
        pairs = list(leases)

        def body() -> list[str]:
            at = self._clock(now)
            if state is not None:
                m.Worker.update(state=state).where(m.Worker.id == worker_id).execute()
            mono = time.monotonic()
            self._execute(
                "beat_worker",
                lambda: m.Worker.update(heartbeat_at=at, heartbeat_mono=mono).where(m.Worker.id == worker_id),
                [at, mono, worker_id],
            )
            expires = at + ttl
            lost = []
            for workflow_id, token in sorted(pairs):  # lease locks in workflow_id order, as expire_worker
                renewed = self._execute(
                    "beat_lease",
                    lambda: m.Lease.update(expires_at=expires, heartbeat_at=at, renewed_mono=mono).where(
                        (m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id) & (m.Lease.token == token)
                    ),
                    [expires, at, mono, workflow_id, worker_id, token],
                ).rowcount
                if not renewed:
                    lost.append(workflow_id)
            return lost

        return self.write(body, safe=True)

    def set_worker_state(self, worker_id: str, state: str) -> None:
        """Record a worker's lifecycle state (running, draining, stopped, dead)."""
        m = self.m
        self.write(lambda: m.Worker.update(state=state).where(m.Worker.id == worker_id).execute())

    def expire_worker(self, worker_id: str, *, state: str = "dead", keep: Iterable[str] = ()) -> list[str]:
        """Mark a worker gone and make its leases immediately reclaimable.

        The deadlines of the RUNNING steps it held are cleared (their attempts
        are over). Leases of the workflows in ``keep`` are left to expire by
        their TTL (a worker that exits with a timed-out step's thread still
        alive: only once the process is gone may the retry start). Returns the
        ids of the workflows whose lease was expired.
        """
        m = self.m
        kept = set(keep)

        def body() -> list[str]:
            m.Worker.update(state=state).where(m.Worker.id == worker_id).execute()
            held = [
                row.workflow_id
                for row in self._locking(
                    m.Lease.select(m.Lease.workflow_id).where(m.Lease.worker_id == worker_id).order_by(m.Lease.workflow_id)
                )
                if row.workflow_id not in kept
            ]
            for workflow_id in held:
                m.Lease.update(expires_at=0).where(
                    (m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id)
                ).execute()
                self._clear_step_deadlines(workflow_id, worker_id)  # its attempts are over
                self._notify(workflow_id)  # claimable now
            return held

        return self.write(body)

    def list_workers(self, *, alive_only: bool = False) -> list[WorkerRecord]:
        """Worker rows, newest first."""
        m = self.m

        def body() -> list[WorkerRecord]:
            query = m.Worker.select().order_by(m.Worker.started_at.desc())
            if alive_only:
                query = query.where(m.Worker.state.in_(["running", "draining"]))
            return [WorkerRecord.from_row(row) for row in query]

        return self.read(body)

    def get_worker(self, worker_id: str) -> WorkerRecord | None:
        """The row of a worker, or ``None`` if it never registered."""
        m = self.m

        def body() -> WorkerRecord | None:
            row = m.Worker.get_or_none(m.Worker.id == worker_id)
            return WorkerRecord.from_row(row) if row is not None else None

        return self.read(body)

    def leases_by_worker(self) -> dict[str, list[LeaseRecord]]:
        """Held leases grouped by worker id."""
        m = self.m

        def body() -> dict[str, list[LeaseRecord]]:
            held: dict[str, list[LeaseRecord]] = {}
            for row in m.Lease.select().where(m.Lease.worker_id.is_null(False)):
                held.setdefault(row.worker_id, []).append(LeaseRecord.from_row(row))
            return held

        return self.read(body)

    def timed_steps(self, *, overdue_at: float | None = None) -> list[StepRecord]:
        """RUNNING steps with a deadline whose attempt still holds the workflow's lease.

        Held means the lease's ``worker_id`` is the step row's, and its token is
        the row's (a row that records no token matches on ``worker_id`` only).
        With ``overdue_at``, only the steps whose deadline is before it.
        """
        m = self.m

        def body() -> list[StepRecord]:
            condition = (
                (m.Step.status == StepStatus.RUNNING.value)
                & m.Step.deadline.is_null(False)
                & (m.Lease.worker_id == m.Step.worker_id)
                & (m.Step.token.is_null() | (m.Step.token == m.Lease.token))
            )
            if overdue_at is not None:
                condition &= m.Step.deadline < overdue_at
            query = m.Step.select(m.Step).join(m.Lease, on=(m.Lease.workflow_id == m.Step.workflow_id)).where(condition)
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def overdue_steps(self, *, now: float | None = None) -> list[StepRecord]:
        """RUNNING steps past their deadline (wall clock) whose attempt still holds the lease."""
        return self.timed_steps(overdue_at=self._clock(now))

    def interrupt_workers(self, worker_ids: Sequence[str], *, now: float | None = None) -> list[str]:
        """Record a forced stop of these workers, just before they are SIGKILLed.

        In one transaction, for every lease they hold: the RUNNING step of that
        attempt (same worker, same token or no token recorded) gets
        ``interruptions += 1`` and no deadline, so its next start does not count
        this one against ``max_attempts``; the workflow's claim is uncounted
        (``attempts - 1``, as :meth:`release` does; the next claim counts it
        again); the lease expires at once (``expires_at = 0``), so any worker
        can claim the workflow, and its next claim's new token fences the
        killed workers out. Returns the workflow ids. Raises
        ``StoreUnavailable`` like any write.
        """
        m = self.m
        now = self._clock(now)
        ids = list(worker_ids)
        if not ids:
            return []

        def body() -> list[str]:
            held = list(
                self._locking(
                    m.Lease.select(m.Lease.workflow_id, m.Lease.worker_id, m.Lease.token)
                    .where(m.Lease.worker_id.in_(ids))
                    .order_by(m.Lease.workflow_id)  # one lock order: no deadlock against claims
                ).tuples()
            )
            for workflow_id, worker_id, token in held:
                m.Step.update(interruptions=m.Step.interruptions + 1, deadline=None).where(
                    (m.Step.workflow_id == workflow_id)
                    & (m.Step.status == StepStatus.RUNNING.value)
                    & (m.Step.worker_id == worker_id)
                    & (m.Step.token.is_null() | (m.Step.token == token))
                ).execute()
                m.Workflow.update(attempts=self._greatest(m.Workflow.attempts - 1, 0), updated_at=now).where(
                    (m.Workflow.id == workflow_id) & (m.Workflow.status == Status.RUNNING.value)
                ).execute()
                m.Lease.update(expires_at=0).where(
                    (m.Lease.workflow_id == workflow_id) & (m.Lease.worker_id == worker_id)
                ).execute()
                self._notify(workflow_id)  # claimable now
            return [workflow_id for workflow_id, _, _ in held]

        return self.write(body)

    def prune_workers(self, *, older_than: float, now: float | None = None) -> int:
        """Delete ``dead`` and ``stopped`` worker rows whose last heartbeat is older than ``older_than`` s.

        Live-looking rows (running, draining) are kept whatever their age: the
        reaper decides about those. Returns the number of rows deleted.
        """
        m = self.m
        cutoff = self._clock(now) - older_than
        return self.write(
            lambda: m.Worker.delete()
            .where(m.Worker.state.in_(["dead", "stopped"]) & (m.Worker.heartbeat_at < cutoff))
            .execute()
        )
