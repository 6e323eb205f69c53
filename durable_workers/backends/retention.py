"""Store operations of retention: find and delete old terminal workflows with what belongs to them.

A workflow is collectable when it is terminal with one of the given statuses,
last changed (``updated_at``: when it ended) before the cutoff, its parent (if
any is still there) has ended too, and none of its children is unfinished.
Deleting it deletes its steps, lease, messages and events. Candidates are read
in pages (no write lock); each page is deleted in a write of its own that
checks every condition again, so a workflow retried, or a parent resumed,
meanwhile is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

from peewee import SQL, fn

from ..records import TERMINAL
from .rows import RowHelpers


@dataclass(frozen=True)
class Collected:
    """Rows deleted (or, for a dry run, workflows that would be), by table."""

    workflows: int = 0
    steps: int = 0
    leases: int = 0
    messages: int = 0
    events: int = 0

    def __add__(self, other: "Collected") -> "Collected":
        return Collected(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


#: Where a page of candidates ends: ``(created_at, id)`` of its last workflow (the next page starts after it).
Cursor = tuple[float, str]


def terminal_only(statuses: Sequence[str]) -> list[str]:
    """``statuses`` as a list; ``ValueError`` unless it is a non-empty choice of terminal statuses."""
    chosen = list(statuses)
    if not chosen or set(chosen) - set(TERMINAL):
        raise ValueError(f"retention deletes terminal workflows only ({', '.join(TERMINAL)}), not {chosen}")
    return chosen


class RetentionOps(RowHelpers):
    """Finding and deleting old terminal workflows (``durable gc``)."""

    def _collectable(self, before: float, statuses: Sequence[str]) -> Any:
        """Peewee condition on ``Workflow``: terminal in ``statuses``, ended before ``before``, family at rest."""
        m = self.m
        w, parent, child = m.Workflow, m.Workflow.alias("gc_parent"), m.Workflow.alias("gc_child")
        live_parent = parent.select(SQL("1")).where((parent.id == w.parent_id) & parent.status.not_in(TERMINAL))
        live_child = child.select(SQL("1")).where((child.parent_id == w.id) & child.status.not_in(TERMINAL))
        # created_at <= updated_at always: the first bound lets the (status, created_at) index narrow the scan.
        return (
            w.status.in_(terminal_only(statuses)) & (w.created_at < before) & (w.updated_at < before)
            & ~fn.EXISTS(live_parent) & ~fn.EXISTS(live_child)
        )  # fmt: skip

    def gc_candidates(
        self, before: float, statuses: Sequence[str], *, after: Cursor | None = None, limit: int = 500
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` collectable workflows after ``after``, as ``(id, created_at)`` in (created_at, id) order.

        A read: nothing is locked or written. ``ValueError`` for a status that is not terminal.
        With one status the page is read in index order and the scan stops at ``limit``.
        """
        m = self.m
        w = m.Workflow
        condition = self._collectable(before, statuses)
        if after is not None:  # the first bound on its own, so it narrows the index range
            condition &= (w.created_at >= after[0]) & ((w.created_at > after[0]) | (w.id > after[1]))

        def body() -> list[tuple[str, float]]:
            query = w.select(w.id, w.created_at).where(condition).order_by(w.created_at, w.id).limit(limit)
            return [(row.id, row.created_at) for row in query]

        return self.read(body)

    def gc_delete(self, workflow_ids: Sequence[str], before: float, statuses: Sequence[str]) -> Collected:
        """Delete those of ``workflow_ids`` still collectable, with their steps, leases, messages and events.

        One write transaction (bound its length by the number of ids). Rows
        no longer collectable (retried, a parent resumed) are kept.
        """
        m = self.m
        w = m.Workflow
        condition = self._collectable(before, statuses)
        ids = list(workflow_ids)

        def body() -> Collected:
            rows = list(self._locking(w.select(w.id, w.parent_id).where(w.id.in_(ids))))
            for parent_id in sorted({row.parent_id for row in rows if row.parent_id}):
                self._lock_workflow(parent_id)  # a parent resumed meanwhile is seen as such below
            doomed = [row.id for row in w.select(w.id).where(w.id.in_(ids) & condition)]
            if not doomed:
                return Collected()
            counts = {
                "events": m.Event.delete().where(m.Event.workflow_id.in_(doomed)).execute(),
                "messages": m.Message.delete().where(m.Message.workflow_id.in_(doomed)).execute(),
                "steps": m.Step.delete().where(m.Step.workflow_id.in_(doomed)).execute(),
                "leases": m.Lease.delete().where(m.Lease.workflow_id.in_(doomed)).execute(),
            }
            deleted = w.delete().where(w.id.in_(doomed)).execute()
            return Collected(workflows=deleted, **counts)

        return self.write(body, safe=True)
