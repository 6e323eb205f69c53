"""Store operations that claim workflows and give them back: claim, lease, release."""

from __future__ import annotations

import time
from typing import Sequence

from peewee import fn

from ..errors import InvalidStateError, LeaseLost, WorkflowNotFound
from ..liveness import host_identity, process_alive
from ..records import TERMINAL, Claim, LeaseRecord, Status, StepRecord, StepStatus, WorkflowRecord
from .heads import HeadOps
from .queues import QueuePlan

class ClaimOps(HeadOps):
    """Claims and leases, written once; the runnable probe is the dialect's (:meth:`_runnable`)."""

    def _runnable(self, names: Sequence[str], now: float, plan: QueuePlan, stale_before: float | None = None) -> str | None:
        """Dialect hook: id of a runnable workflow among ``names`` (stale lease first, else the best due one).

        Only queues ``plan`` leaves open are probed for PENDING and WAITING
        rows, with its filters (started only, saturated keys); a stale row is
        taken unless this worker is at its own limit of that row's queue.
        """
        raise NotImplementedError

    def _take(
        self, workflow_id: str, worker_id: str, ttl: float, now: float, max_claims: int, *, real_time: bool = False
    ) -> Claim | None:
        """Inside a claim: take ``workflow_id`` for ``worker_id`` (None: failed past ``max_claims``)."""
        # The lease runs from when the lock was obtained: ``now`` may be from before a long
        # wait for it, and a lease dated from then could be born expired (and taken at once).
        m = self.m
        held_from = max(now, self.now()) if real_time else now
        running = Status.RUNNING.value
        self._execute(
            "take_workflow",
            lambda: m.Workflow.update(
                status=running,
                attempts=m.Workflow.attempts + 1,
                updated_at=now,
                started_at=fn.COALESCE(m.Workflow.started_at, held_from),
            ).where(m.Workflow.id == workflow_id),
            [running, 1, now, held_from, workflow_id],
        )
        values = dict(
            zip(
                m.workflow_columns,
                self._execute(
                    "get_workflow", lambda: m.Workflow.select().where(m.Workflow.id == workflow_id), [workflow_id]
                ).fetchone(),
            )
        )
        if values["attempts"] > max_claims:
            self._fail_overclaimed(workflow_id, values["attempts"] - 1, max_claims, now)
            return None
        token = self._take_lease(workflow_id, worker_id, held_from, held_from + ttl)
        steps = self._execute(
            "claim_steps",
            lambda: m.Step.select().where(m.Step.workflow_id == workflow_id).order_by(m.Step.scope, m.Step.position),
            [workflow_id],
        ).fetchall()
        return Claim(
            workflow=WorkflowRecord.from_values(values),
            token=token,
            steps=tuple(StepRecord.from_tuple(row, m.step_columns) for row in steps),
        )

    def _fail_overclaimed(self, workflow_id: str, claims: int, max_claims: int, now: float) -> None:
        """Inside a claim: FAIL a workflow claimed ``claims`` times already, fencing out its last holder."""
        m = self.m
        message = (
            f"workflow was claimed {claims} times without finishing "
            f"(max_claims={max_claims}); inspect it with `durable status {workflow_id}`"
        )
        m.Workflow.update(status=Status.FAILED.value, error=message, updated_at=now, attempts=claims).where(
            m.Workflow.id == workflow_id
        ).execute()
        self._release_lease(workflow_id, bump=True)
        self._clear_step_deadlines(workflow_id)
        self._wake_parent(workflow_id, self._parent_of(workflow_id), now)

    def _take_lease(self, workflow_id: str, worker_id: str, held_from: float, expires: float) -> int:
        """Inside a claim: upsert the lease for ``worker_id`` with token + 1 (1 for a new row); return the token."""
        m = self.m
        mono = time.monotonic()
        self._execute(
            "take_lease",
            lambda: m.Lease.insert(
                workflow_id=workflow_id,
                worker_id=worker_id,
                token=1,
                expires_at=expires,
                heartbeat_at=held_from,
                renewed_mono=mono,
            ).on_conflict(
                conflict_target=[m.Lease.workflow_id],
                update={
                    m.Lease.worker_id: worker_id,
                    m.Lease.token: m.Lease.token + 1,
                    m.Lease.expires_at: expires,
                    m.Lease.heartbeat_at: held_from,
                    m.Lease.renewed_mono: mono,
                },
            ),
            [workflow_id, worker_id, 1, expires, held_from, mono, worker_id, 1, expires, held_from, mono],
        )
        token: int = self._execute(
            "lease_token", lambda: m.Lease.select(m.Lease.token).where(m.Lease.workflow_id == workflow_id), [workflow_id]
        ).fetchone()[0]
        return token

    def _vouch_for_live_holder(self, workflow_id: str, ttl: float, now: float) -> bool:
        """Extend an expired-looking lease whose holder provably lives; True if it did.

        Leases expire by the wall clock, which can jump. A holder on this host
        whose process is alive (PID + create time) and that renewed this very
        lease less than its TTL ago on the host's monotonic clock is
        heartbeating: its lease is extended as its next heartbeat would, instead
        of being taken from under it. A holder that stopped renewing (its attempt
        ended, it is frozen, or it died) or whose row says it stopped gets no
        such extension.
        """
        m = self.m
        row = self._execute(
            "lease_holder",
            lambda: m.Lease.select(
                m.Lease.renewed_mono, m.Worker.host_id, m.Worker.pid, m.Worker.proc_started_at, m.Worker.ttl
            )
            .join(m.Worker, on=(m.Worker.id == m.Lease.worker_id))
            .where((m.Lease.workflow_id == workflow_id) & m.Worker.state.in_(["running", "draining"])),
            [workflow_id, "running", "draining"],
        ).fetchone()
        if row is None or row[0] is None or row[1] != host_identity():
            return False
        renewed_mono, _, pid, proc_started_at, holder_ttl = row
        holder_ttl = holder_ttl or ttl
        if time.monotonic() - renewed_mono >= holder_ttl or not process_alive(pid, proc_started_at):
            return False
        m.Lease.update(expires_at=max(now, self.now()) + holder_ttl).where(m.Lease.workflow_id == workflow_id).execute()
        return True

    def claim_next(
        self,
        worker_id: str,
        names: Sequence[str],
        *,
        ttl: float,
        max_claims: int = 20,
        now: float | None = None,
    ) -> Claim | None:
        """Claim the oldest runnable workflow among ``names`` for ``worker_id``.

        Runnable means PENDING with ``run_at <= now``, WAITING with
        ``wake_at <= now`` (both in due order), or RUNNING under an expired lease. Returns ``None`` when there is nothing to do. A workflow
        claimed more than ``max_claims`` times is failed instead of returned.
        """
        if not names:
            return None
        real_time = now is None
        now = self._clock(now)

        # Probe without the write lock: an idle worker never takes it just to find nothing.
        probe = lambda: self._runnable(names, now, self._queue_plan(worker_id, now), self._stale_before(now, ttl))  # noqa: E731
        if self.read(probe) is None:
            return None

        taken: list[Claim] = []

        def body() -> Claim | None:
            # After any wait for the lock, so that a stall just seen extends every lease.
            stale_before = self._stale_before(now, ttl)
            plan = self._queue_plan(worker_id, now)
            locked: list[str] = []
            taken.clear()
            while True:
                workflow_id = self._runnable(names, now, plan, stale_before)
                if workflow_id is None:
                    return None
                if self._vouch_for_live_holder(workflow_id, ttl, now):
                    continue
                if not self._admit(plan, workflow_id, worker_id, now, locked):
                    continue
                claim = self._take(workflow_id, worker_id, ttl, now, max_claims, real_time=real_time)
                if claim is not None:
                    taken.append(claim)
                    return claim

        return self.write(body, confirm=lambda: self._confirm_claim(taken, worker_id))

    def _confirm_claim(self, taken: list[Claim], worker_id: str) -> Claim | None:
        """After an ambiguous commit: the claim the body took if the lease shows it committed, else None."""
        if not taken:
            return None
        claim = taken[0]
        return claim if self._lease_held(claim.workflow.id, worker_id, claim.token) else None

    def claim_workflow(
        self,
        workflow_id: str,
        worker_id: str,
        *,
        ttl: float,
        max_claims: int = 20,
        now: float | None = None,
    ) -> Claim | None:
        """Claim one given workflow if it is runnable now.

        Returns ``None`` when the workflow is already finished (COMPLETED,
        FAILED, CANCELLED). Raises :class:`InvalidStateError` when another live
        lease holds it.
        """
        m = self.m
        real_time = now is None
        now = self._clock(now)

        def body() -> Claim | None:
            self._lock_lease(workflow_id)  # lease, then workflow: the order of every fenced write
            self._lock_workflow(workflow_id)
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status in TERMINAL:
                return None
            lease = m.Lease.get_or_none(m.Lease.workflow_id == workflow_id)
            if (
                row.status == Status.RUNNING.value
                and lease is not None
                and lease.worker_id is not None
                and lease.worker_id != worker_id
                and (lease.expires_at or 0) >= now
            ):
                raise InvalidStateError(
                    f"workflow {workflow_id} is running on worker {lease.worker_id}; "
                    "wait for it or stop that worker"
                )
            claim = self._take(workflow_id, worker_id, ttl, now, max_claims, real_time=real_time)
            taken[:] = [claim] if claim is not None else []
            return claim

        taken: list[Claim] = []
        return self.write(body, confirm=lambda: self._confirm_claim(taken, worker_id))

    def release(
        self,
        workflow_id: str,
        worker_id: str,
        token: int,
        *,
        reason: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Give a workflow back: PENDING again, claim not counted, its place in the queue kept.

        Used for a drain and an attempt the store interrupted; ``reason`` is
        kept in ``workflows.interruption``. Fenced:
        returns ``False`` (writing nothing) when the lease is no longer held.
        Step rows this attempt started and never ended (``finished_at`` unset)
        count the start as an interruption, not a crash, and lose their
        deadline. After an ambiguous commit it confirms its own release (lease
        free with ``token`` kept, workflow PENDING at ``now``) and returns True.
        """
        m = self.m
        now = self._clock(now)

        def body() -> bool:
            try:
                self._fence(workflow_id, worker_id, token, exclusive=True)
            except LeaseLost:
                return False
            m.Workflow.update(
                status=Status.PENDING.value,
                attempts=self._greatest(m.Workflow.attempts - 1, 0),
                updated_at=now,
                crash_at=None,
                interruption=reason,
            ).where((m.Workflow.id == workflow_id) & (m.Workflow.status == Status.RUNNING.value)).execute()
            m.Step.update(interruptions=m.Step.interruptions + 1, deadline=None).where(
                (m.Step.workflow_id == workflow_id)
                & (m.Step.token == token)
                & (m.Step.status == StepStatus.RUNNING.value)
                & m.Step.finished_at.is_null()
            ).execute()
            self._release_lease(workflow_id)
            self._notify(workflow_id)
            return True

        def confirm() -> bool | None:
            """Released by this call: the lease free with ``token`` kept, the workflow PENDING since ``now``."""
            lease = m.Lease.get_or_none(m.Lease.workflow_id == workflow_id)
            row = m.Workflow.get_or_none(m.Workflow.id == workflow_id)
            if lease is None or row is None or (lease.worker_id, lease.token) != (None, token):
                return None
            return True if (row.status, row.updated_at) == (Status.PENDING.value, now) else None

        return self.write(body, confirm=confirm)

    def next_wake(self, names: Sequence[str]) -> float | None:
        """The earliest ``wake_at`` of a WAITING workflow among ``names`` (None: none waits).

        What an idle worker bounds its poll interval by, so a due wake is not overslept.
        """
        m = self.m
        if not names:
            return None

        def body() -> float | None:
            value: float | None = (
                m.Workflow.select(fn.MIN(m.Workflow.wake_at))
                .where((m.Workflow.status == Status.WAITING.value) & m.Workflow.name.in_(list(names)))
                .scalar()
            )
            return value

        return self.read(body)

    def get_lease(self, workflow_id: str) -> LeaseRecord | None:
        """The lease row of a workflow, if it was ever claimed."""
        m = self.m

        def body() -> LeaseRecord | None:
            row = m.Lease.get_or_none(m.Lease.workflow_id == workflow_id)
            return LeaseRecord.from_row(row) if row is not None else None

        return self.read(body)
