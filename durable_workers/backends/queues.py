"""Store operations of queues: their limits, the claim's view of them, and their depth.

A claim asks :meth:`QueueOps._queue_plan` which queues may start work now and
probes only those (``_runnable``); before it takes a workflow of a limited
queue it re-counts under the queue's row lock (:meth:`QueueOps._admit`), so two
claimers on different hosts never both take the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from peewee import fn

from ..records import ACTIVE, DEFAULT_QUEUE, Status
from .rows import RowHelpers


@dataclass(frozen=True)
class QueueLimits:
    """One row of ``queues``: a queue's limits (None: unlimited)."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    per_key_concurrency: int | None = None

    @property
    def limited(self) -> bool:
        """Whether any limit applies (an unlimited queue costs the claim nothing)."""
        return any(
            v is not None for v in (self.concurrency, self.worker_concurrency, self.rate_limit, self.per_key_concurrency)
        )


@dataclass
class QueueGate:
    """What a claim may take from one queue now (see :class:`QueuePlan`)."""

    limits: QueueLimits
    #: No workflow of the queue may start RUNNING (at its concurrency, or this worker at its own).
    closed: bool = False
    #: Its rate window is full: only workflows that started before may run.
    started_only: bool = False
    #: Concurrency keys at the queue's per-key limit.
    saturated: set[str] = field(default_factory=set)


@dataclass
class QueuePlan:
    """The claim's view of every known queue: which it probes and with what filters."""

    gates: dict[str, QueueGate]

    def open_queues(self) -> list[str]:
        """Queues a PENDING or due WAITING workflow may be taken from, in name order."""
        return sorted(name for name, gate in self.gates.items() if not gate.closed)

    def closed_for_worker(self) -> list[str]:
        """Queues where this worker may not take even a stale workflow (its own limit reached)."""
        return sorted(name for name, gate in self.gates.items() if gate.closed and gate.limits.worker_concurrency)

    def shape(self) -> str:
        """A short key of the probe's form (its compiled SQL is cached per form)."""
        return ",".join(
            f"{int(g.started_only)}{len(g.saturated)}" for _, g in sorted(self.gates.items()) if not g.closed
        )

    @property
    def limited(self) -> bool:
        """Whether any known queue has a limit (else the claim needs no admission check)."""
        return any(g.limits.limited for g in self.gates.values())


class QueueOps(RowHelpers):
    """Queue limits, the claim's admission under them, and per-queue depth."""

    #: Writers are serialised (SQLite's ``BEGIN IMMEDIATE``): a plan made inside the claim's
    #: transaction is exact, so the probe's filters already admit what it finds.
    _writers_serialised = True

    def _lock_queue(self, name: str, *, wait: bool) -> bool:
        """Dialect hook: lock the queue's row for this transaction (``wait=False``: skip if locked); True if held."""
        return True

    def register_queues(self, queues: Sequence[QueueLimits], *, now: float | None = None) -> None:
        """Write these queues' limits (the app's declarations), replacing what was recorded for them."""
        if not queues:
            return
        m = self.m
        now = self._clock(now)

        def body() -> None:
            for q in queues:
                values = dict(
                    concurrency=q.concurrency, worker_concurrency=q.worker_concurrency, rate_limit=q.rate_limit,
                    rate_period=q.rate_period, per_key_concurrency=q.per_key_concurrency, updated_at=now,
                )  # fmt: skip
                m.Queue.insert(name=q.name, **values).on_conflict(
                    conflict_target=[m.Queue.name], update={getattr(m.Queue, k): v for k, v in values.items()}
                ).execute()

        self.write(body, safe=True)

    def _ensure_queue(self, name: str, now: float) -> None:
        """Inside a write: a row for queue ``name`` (no limits) unless one exists, so claims probe it."""
        if name != DEFAULT_QUEUE:
            self.m.Queue.insert(name=name, updated_at=now).on_conflict_ignore().execute()

    def list_queues(self) -> list[QueueLimits]:
        """Every known queue's limits, the default queue first."""
        return self.read(lambda: sorted(self._known_queues().values(), key=lambda q: (q.name != DEFAULT_QUEUE, q.name)))

    def _known_queues(self) -> dict[str, QueueLimits]:
        m = self.m
        rows = m.Queue.select(
            m.Queue.name, m.Queue.concurrency, m.Queue.worker_concurrency, m.Queue.rate_limit, m.Queue.rate_period,
            m.Queue.per_key_concurrency,
        ).tuples()  # fmt: skip
        known = {row[0]: QueueLimits(*row) for row in rows}
        known.setdefault(DEFAULT_QUEUE, QueueLimits(DEFAULT_QUEUE))
        return known

    def _queue_plan(self, worker_id: str, now: float) -> QueuePlan:
        """What the claim may take now: each known queue with its limits checked (see :class:`QueueGate`)."""
        gates = {name: QueueGate(limits) for name, limits in self._known_queues().items()}
        limited = [g for g in gates.values() if g.limits.limited]
        if not limited:
            return QueuePlan(gates)
        running = self._running_by_queue([g.limits.name for g in limited])
        mine = self._running_by_queue([g.limits.name for g in limited if g.limits.worker_concurrency], worker_id)
        for gate in limited:
            self._check_gate(gate, running.get(gate.limits.name, 0), mine.get(gate.limits.name, 0), now)
        return QueuePlan(gates)

    def _check_gate(self, gate: QueueGate, running: int, mine: int, now: float) -> None:
        """Set ``gate``'s filters from the queue's counts now."""
        q = gate.limits
        gate.closed = (q.concurrency is not None and running >= q.concurrency) or (
            q.worker_concurrency is not None and mine >= q.worker_concurrency
        )
        if gate.closed:
            return
        gate.started_only = q.rate_limit is not None and self._starts_since(q.name, now - (q.rate_period or 0)) >= q.rate_limit
        gate.saturated = set(self._saturated_keys(q.name, q.per_key_concurrency)) if q.per_key_concurrency else set()

    def _running_by_queue(self, queues: list[str], worker_id: str | None = None) -> dict[str, int]:
        """RUNNING workflows per queue among ``queues`` (of ``worker_id``'s leases only, if given)."""
        if not queues:
            return {}
        m = self.m
        query = m.Workflow.select(m.Workflow.queue, fn.COUNT(m.Workflow.id))
        if worker_id is not None:
            query = query.join(m.Lease, on=(m.Lease.workflow_id == m.Workflow.id)).where(m.Lease.worker_id == worker_id)
        query = query.where((m.Workflow.status == Status.RUNNING.value) & m.Workflow.queue.in_(queues))
        return dict(query.group_by(m.Workflow.queue).tuples())

    def _starts_since(self, queue: str, since: float) -> int:
        m = self.m
        count: int = m.Workflow.select().where((m.Workflow.queue == queue) & (m.Workflow.started_at > since)).count()
        return count

    def _saturated_keys(self, queue: str, limit: int) -> list[str]:
        m = self.m
        key = m.Workflow.concurrency_key
        query = (
            m.Workflow.select(key)
            .where((m.Workflow.status == Status.RUNNING.value) & (m.Workflow.queue == queue) & key.is_null(False))
            .group_by(key)
            .having(fn.COUNT(m.Workflow.id) >= limit)
        )
        return [k for (k,) in query.tuples()]

    def _admit(self, plan: QueuePlan, workflow_id: str, worker_id: str, now: float, locked: list[str]) -> bool:
        """Inside a claim: whether ``workflow_id`` may start now under its queue's limits, re-counted under its lock.

        The first queue a claim locks it waits for; any further one it only
        tries (``locked`` lists those held), so two claimers never wait on each
        other. A refusal narrows ``plan`` so the next probe skips what was full.
        Where writers are serialised the claim's plan is already exact: nothing to re-count.
        """
        if not plan.limited or self._writers_serialised:
            return True
        m = self.m
        queue, key, started, status = (
            m.Workflow.select(m.Workflow.queue, m.Workflow.concurrency_key, m.Workflow.started_at, m.Workflow.status)
            .where(m.Workflow.id == workflow_id)
            .tuples()
            .get()
        )
        gate = plan.gates.get(queue) or QueueGate(QueueLimits(queue))
        if not gate.limits.limited or status == Status.RUNNING.value:
            return True  # a stale lease's workflow keeps the slot it holds
        if queue not in locked:
            if not self._lock_queue(queue, wait=not locked):
                gate.closed = True
                return False
            locked.append(queue)
        fresh = QueueGate(replace(gate.limits))
        running = self._running_by_queue([queue]).get(queue, 0)
        mine = self._running_by_queue([queue], worker_id).get(queue, 0) if gate.limits.worker_concurrency else 0
        self._check_gate(fresh, running, mine, now)
        plan.gates[queue] = fresh
        return not fresh.closed and not (fresh.started_only and started is None) and key not in fresh.saturated

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Per known queue, how many workflows are PENDING, RUNNING and WAITING."""
        m = self.m

        def body() -> dict[str, dict[str, int]]:
            depths = {name: {s: 0 for s in ACTIVE} for name in self._known_queues()}
            query = (
                m.Workflow.select(m.Workflow.queue, m.Workflow.status, fn.COUNT(m.Workflow.id))
                .where(m.Workflow.status.in_(list(ACTIVE)))
                .group_by(m.Workflow.queue, m.Workflow.status)
            )
            for queue, status, count in query.tuples():
                depths.setdefault(queue, {s: 0 for s in ACTIVE})[status] = count
            return depths

        return self.read(body)

    def queue_load(self, queue: str, concurrency_key: str | None = None) -> tuple[int, int]:
        """RUNNING workflows of ``queue``, and of those the ones with ``concurrency_key`` (0 without one)."""
        m = self.m

        def body() -> tuple[int, int]:
            running = m.Workflow.select().where((m.Workflow.status == Status.RUNNING.value) & (m.Workflow.queue == queue))
            keyed = running.where(m.Workflow.concurrency_key == concurrency_key).count() if concurrency_key else 0
            return running.count(), keyed

        return self.read(body)

    def rate_window_opens(self, queue: str, *, now: float | None = None) -> float | None:
        """When queue ``queue``'s rate window next admits a first start (None: it admits one now or has no rate)."""
        now = self._clock(now)

        def body() -> float | None:
            limits = self._known_queues().get(queue)
            if limits is None or limits.rate_limit is None:
                return None
            return self._window_opens(limits, now)

        return self.read(body)

    def _window_opens(self, q: QueueLimits, now: float) -> float | None:
        m = self.m
        period = q.rate_period or 0
        starts = self._starts_since(q.name, now - period)
        if q.rate_limit is None or starts < q.rate_limit:
            return None
        # The window admits again once enough of its starts age out: the (starts - limit + 1)-th oldest.
        oldest: Any = (
            m.Workflow.select(m.Workflow.started_at)
            .where((m.Workflow.queue == q.name) & (m.Workflow.started_at > now - period))
            .order_by(m.Workflow.started_at)
            .offset(starts - q.rate_limit)
            .limit(1)
            .scalar()
        )
        return None if oldest is None else float(oldest) + period
