"""The claim's probes: the best due workflow of the open queues, found by bounded index range scans.

Per open queue and served name, a PENDING head is found by walking priority
levels from the top and a due WAITING head in wake order; the claim
(:mod:`.claims`) takes the best of them. Each probe's compiled SQL is cached
per shape (see ``RowHelpers``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..records import Status
from .queues import QueueGate, QueueOps, QueuePlan

#: One probe of the claim: (name of its compiled statement, the peewee query, its parameters in bind order).
Probe = tuple[str, Any, list[Any]]


class HeadOps(QueueOps):
    """Finds the head of each (queue, name) the claim may take from."""

    def _best_due(self, names: Sequence[str], now: float, plan: QueuePlan, *, lock: bool = False) -> str | None:
        """Id of the best due workflow among ``names`` in the queues ``plan`` leaves open (None: none).

        Best is the highest priority, then the earliest due time (``run_at``;
        ``wake_at`` for a due WAITING row). Per open queue and served name, a
        PENDING head is found by walking priority levels from the top
        (:meth:`_pending_head`) and a due WAITING head in wake order; each
        probe is a bounded index range scan, so neither rows of other names, of
        queues at their limit, nor rows due later are visited. ``lock``: take
        each head ``FOR UPDATE SKIP LOCKED`` (PostgreSQL inside a claim).
        """
        m = self.m
        best: tuple[int, float, str] | None = None
        for queue in plan.open_queues():
            gate = plan.gates[queue]
            for name in names:
                waiting = self._head_query(gate, name, now, m.Workflow.wake_at, Status.WAITING.value)
                for head in (self._pending_head(gate, name, now, lock), self._probe(*waiting, lock=lock)):
                    if head is not None and (best is None or (-head[1], head[2]) < best[:2]):
                        best = (-head[1], head[2], head[0])
        return best[2] if best is not None else None

    def _pending_head(self, gate: QueueGate, name: str, now: float, lock: bool) -> tuple[str, int, float] | None:
        """The first due PENDING row of (queue, ``name``) at the highest priority that has one: ``(id, priority, run_at)``.

        Walks the distinct priority levels downwards, one index seek each, so
        rows due later at a higher priority cost one probe per level, not one
        visit per row (priorities are meant to be few distinct values).
        """
        m = self.m
        pending = Status.PENDING.value
        below: int | None = None
        while True:
            where = (m.Workflow.status == pending) & (m.Workflow.queue == gate.limits.name) & (m.Workflow.name == name)
            params: list[Any] = [pending, gate.limits.name, name]
            if below is not None:
                where &= m.Workflow.priority < below
                params.append(below)
            level = self._execute(
                f"priority_level/{int(below is not None)}",
                lambda w=where: m.Workflow.select(m.Workflow.priority).where(w).order_by(m.Workflow.priority.desc()).limit(1),
                [*params, 1],
            ).fetchone()
            if level is None:
                return None
            head = self._probe(*self._head_query(gate, name, now, m.Workflow.run_at, pending, level[0]), lock=lock)
            if head is not None:
                return head
            below = level[0]

    def _head_query(
        self, gate: QueueGate, name: str, now: float, column: Any, status: str, priority: int | None = None
    ) -> Probe:
        """The probe of the first due row of (queue, ``name``) in ``status`` (at ``priority``, if given), in due order."""
        m = self.m
        key = m.Workflow.concurrency_key
        saturated = sorted(gate.saturated)
        where = (m.Workflow.status == status) & (m.Workflow.queue == gate.limits.name) & (m.Workflow.name == name)
        params: list[Any] = [status, gate.limits.name, name]
        if priority is not None:
            where &= m.Workflow.priority == priority
            params.append(priority)
        where &= column <= now
        if gate.started_only:
            where &= m.Workflow.started_at.is_null(False)
        if saturated:
            where &= key.is_null() | key.not_in(saturated)
        query = m.Workflow.select(m.Workflow.id, m.Workflow.priority, column).where(where).order_by(column).limit(1)
        shape = f"head_{status.lower()}/{int(gate.started_only)}/{len(saturated)}"
        return shape, query, [*params, now, *saturated, 1]

    def _probe(self, shape: str, query: Any, params: list[Any], *, lock: bool) -> tuple[str, int, float] | None:
        """Run one head probe (``lock``: ``FOR UPDATE SKIP LOCKED``); its row or None."""
        build = (lambda: query.for_update("FOR UPDATE", skip_locked=True)) if lock else (lambda: query)
        row = self._execute(f"{shape}{'/lock' if lock else ''}", build, params).fetchone()
        return None if row is None else (row[0], row[1], row[2])
