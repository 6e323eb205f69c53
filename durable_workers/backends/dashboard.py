"""Store reads for the web dashboard: filtered workflow pages, finishes per minute, messages.

A page of workflows is keyset-paged on ``(created_at, id)``, newest first: the
next page starts strictly after the last row shown, so a page costs the same
on the millionth row as on the first (no ``OFFSET``). Each status is read as
its own range scan of the ``workflows(status, created_at)`` index and the
scans are merged, so an unfiltered page never sorts the whole table.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Sequence

from peewee import SQL, fn

from ..records import Status, WorkflowRecord
from .rows import RowHelpers

#: The statuses a finish-per-minute chart counts.
FINISHED = (Status.COMPLETED.value, Status.FAILED.value)


@dataclass(frozen=True)
class WorkflowFilter:
    """What a dashboard list shows: each field narrows it (None or empty: no restriction).

    ``statuses`` any of these; ``name`` and ``queue`` exactly; ``id_prefix``
    ids starting with it (case-sensitive); ``created_from`` / ``created_to``
    a half-open range of ``created_at`` (epoch seconds, ``from <= t < to``).
    """

    statuses: tuple[str, ...] = ()
    name: str | None = None
    queue: str | None = None
    id_prefix: str | None = None
    created_from: float | None = None
    created_to: float | None = None


@dataclass(frozen=True)
class WorkflowPage:
    """One page of a filtered list, newest first; ``after`` is the cursor of the next page (None: last page)."""

    rows: tuple[WorkflowRecord, ...]
    after: tuple[float, str] | None


@dataclass(frozen=True)
class MessageRecord:
    """One row of ``messages``: ``payload`` is its stored JSON text; ``consumed_by_step`` None while unread."""

    id: str
    workflow_id: str
    topic: str
    payload: str | None
    key: str | None
    created_at: float
    consumed_by_step: str | None


class DashboardOps(RowHelpers):
    """Reads the dashboard needs beyond the CLI's: pages, a finish histogram, a workflow's messages."""

    def workflow_page(
        self, where: WorkflowFilter = WorkflowFilter(), *, after: tuple[float, str] | None = None, limit: int = 50
    ) -> WorkflowPage:
        """Up to ``limit`` workflows matching ``where``, newest first, strictly after the cursor ``after``.

        ``after`` is a previous page's :attr:`WorkflowPage.after`. Raises ValueError for ``limit < 1``.
        """
        if limit < 1:
            raise ValueError(f"limit={limit}: give at least 1")
        statuses = where.statuses or tuple(s.value for s in Status)

        def body() -> WorkflowPage:
            scans = [self._status_scan(status, where, after, limit + 1) for status in statuses]
            merged = list(heapq.merge(*scans, key=lambda r: (r.created_at, r.id), reverse=True))[: limit + 1]
            rows = tuple(merged[:limit])
            more = len(merged) > limit
            return WorkflowPage(rows, (rows[-1].created_at, rows[-1].id) if more else None)

        return self.read(body)

    def _status_scan(
        self, status: str, where: WorkflowFilter, after: tuple[float, str] | None, limit: int
    ) -> list[WorkflowRecord]:
        """Inside a read: one status's matching rows after the cursor, newest first (an index range scan)."""
        w = self.m.Workflow
        query = w.select().where(w.status == status)
        for condition in self._filter_conditions(where):
            query = query.where(condition)
        if after is not None:
            created, last_id = after
            # The first conjunct bounds the index range; the second breaks ties on created_at by id.
            query = query.where((w.created_at <= created) & ((w.created_at < created) | (w.id < last_id)))
        query = query.order_by(w.created_at.desc(), w.id.desc()).limit(limit)
        return [WorkflowRecord.from_row(row) for row in query]

    def _filter_conditions(self, where: WorkflowFilter) -> list[Any]:
        """The filter's row conditions besides the status (peewee expressions)."""
        w = self.m.Workflow
        conditions: list[Any] = []
        if where.name:
            conditions.append(w.name == where.name)
        if where.queue:
            conditions.append(w.queue == where.queue)
        if where.id_prefix:
            # SUBSTR, not LIKE: exact and case-sensitive on both dialects, no wildcard escaping.
            conditions.append(fn.SUBSTR(w.id, 1, len(where.id_prefix)) == where.id_prefix)
        if where.created_from is not None:
            conditions.append(w.created_at >= where.created_from)
        if where.created_to is not None:
            conditions.append(w.created_at < where.created_to)
        return conditions

    def finished_per_minute(self, *, minutes: int = 60, now: float | None = None) -> dict[str, list[int]]:
        """COMPLETED and FAILED workflows per minute over the last ``minutes`` minutes, oldest minute first.

        A workflow counts in the minute of its last update (when it ended).
        Returns ``{"COMPLETED": [n, ...], "FAILED": [n, ...]}``, ``minutes`` counts each.
        """
        if minutes < 1:
            raise ValueError(f"minutes={minutes}: give at least 1")
        now = self._clock(now)
        since = now - 60.0 * minutes
        w = self.m.Workflow

        def body() -> dict[str, list[int]]:
            offset = (w.updated_at - since) / 60.0
            # Epoch offsets are positive: SQLite's CAST truncates (a floor); PostgreSQL's rounds, so FLOOR there.
            bucket = fn.FLOOR(offset) if self.dialect == "postgresql" else offset.cast("INTEGER")
            query = (
                w.select(w.status, bucket, fn.COUNT(w.id))
                .where(w.status.in_(list(FINISHED)) & (w.updated_at >= since) & (w.updated_at <= now))
                .group_by(SQL("1"), SQL("2"))  # by position: the bucket's parameters differ each time it is written
            )
            counts = {status: [0] * minutes for status in FINISHED}
            for status, index, count in query.tuples():
                counts[status][min(int(index), minutes - 1)] += count
            return counts

        return self.read(body)

    def workflow_messages(self, workflow_id: str, *, limit: int = 200) -> list[MessageRecord]:
        """The messages sent to ``workflow_id``, oldest first (at most ``limit``); none for an unknown id."""
        m = self.m

        def body() -> list[MessageRecord]:
            query = (
                m.Message.select()
                .where(m.Message.workflow_id == workflow_id)
                .order_by(m.Message.created_at, m.Message.id)
                .limit(limit)
            )
            return [MessageRecord(**{f: getattr(r, f) for f in MessageRecord.__dataclass_fields__}) for r in query]

        return self.read(body)


def page_cursor(text: str | None) -> tuple[float, str] | None:
    """The cursor ``"<created_at>:<id>"`` (as :func:`cursor_text` writes it) parsed; None for none or a bad one."""
    if not text or ":" not in text:
        return None
    created, _, last_id = text.partition(":")
    try:
        return float(created), last_id
    except ValueError:
        return None


def cursor_text(cursor: Sequence[Any] | None) -> str:
    """A page cursor as URL-safe text (``repr`` of the float keeps it exact); empty for None."""
    return "" if cursor is None else f"{float(cursor[0])!r}:{cursor[1]}"
