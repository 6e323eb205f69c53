"""Store operation submitting many workflows in one transaction (``submit_many``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import DuplicateWorkflowError
from ..records import DEFAULT_QUEUE, Status, WorkflowRecord
from .queues import QueueOps

#: Rows per statement (a bound on the statement's parameters: SQLite's and PostgreSQL's limits are far above).
CHUNK = 500


@dataclass(frozen=True)
class NewWorkflow:
    """One workflow of a batch submit: what :meth:`WorkflowOps.submit` takes for one."""

    id: str
    name: str
    input_json: str
    run_at: float | None = None
    crash_at: str | None = None
    deadline_at: float | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    concurrency_key: str | None = None
    dedupe_key: str | None = None
    #: The submitter's trace context (JSON text, :mod:`durable_workers.tracing`), or None.
    trace_context: str | None = None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


class BatchOps(QueueOps):
    """Submitting many workflows at once."""

    def submit_many(
        self,
        workflows: Sequence[NewWorkflow],
        *,
        check: Callable[[int, WorkflowRecord], None] | None = None,
        now: float | None = None,
    ) -> list[tuple[WorkflowRecord, bool]]:
        """Insert every workflow whose id does not exist, in one transaction; (row, created) for each, in order.

        ``check(index, existing)`` is called inside the transaction for each
        workflow whose id exists (the client's idempotency check); whatever it
        raises rolls the whole batch back. Ids must be distinct (``ValueError``).
        """
        ids = [w.id for w in workflows]
        if len(set(ids)) != len(ids):
            raise ValueError("submit_many: workflow ids must be distinct")
        now = self._clock(now)

        def body() -> list[tuple[WorkflowRecord, bool]]:
            for queue in sorted({w.queue for w in workflows}):
                self._ensure_queue(queue, now)
            existing = self._rows_of(ids)
            if check is not None:
                for index, workflow in enumerate(workflows):
                    if workflow.id in existing:
                        check(index, existing[workflow.id])
            fresh = [self._new_row(w, now) for w in workflows if w.id not in existing]
            created = self._insert_new(fresh)
            raced = [row["id"] for row in fresh if row["id"] not in created]
            if raced:  # inserted meanwhile by a concurrent writer (PostgreSQL): checked like the others
                existing.update(self._rows_of(raced))
                self._refuse_duplicates([w for w in workflows if w.id in raced and w.id not in existing])
                if check is not None:
                    for index, workflow in enumerate(workflows):
                        if workflow.id in raced:
                            check(index, existing[workflow.id])
            results = []
            for row in fresh:
                if row["id"] in created:
                    record = {k: v for k, v in row.items() if k != "trace_context"}
                    existing[row["id"]] = WorkflowRecord(**record | {"input": json.loads(row["input"])})
            for workflow in workflows:
                results.append((existing[workflow.id], workflow.id in created))
            return results

        return self.write(body, safe=True)

    def _refuse_duplicates(self, refused: Sequence[NewWorkflow]) -> None:
        """Inside a write: raise for the first workflow of the batch refused for its dedupe key (rolls all back)."""
        if refused:
            w = refused[0]
            raise DuplicateWorkflowError(
                f"workflow {w.id!r}: dedupe key {w.dedupe_key!r} is held by an unfinished workflow of queue "
                f"{w.queue!r}; nothing of the batch was submitted"
            )

    def _rows_of(self, ids: Sequence[str]) -> dict[str, WorkflowRecord]:
        """Inside a transaction: the existing workflows among ``ids``, by id (a bare id probe first: usually none)."""
        m = self.m
        table = m.Workflow._meta.table_name
        present: list[str] = []
        for chunk in _chunks(ids):
            marks = ", ".join([self.db.param] * len(chunk))
            present += [found for (found,) in self.db.execute_sql(f"SELECT id FROM {table} WHERE id IN ({marks})", list(chunk))]
        found: dict[str, WorkflowRecord] = {}
        for chunk in _chunks(present):
            for row in m.Workflow.select().where(m.Workflow.id.in_(list(chunk))):
                found[row.id] = WorkflowRecord.from_row(row)
        return found

    @staticmethod
    def _new_row(workflow: NewWorkflow, now: float) -> dict[str, Any]:
        return {
            "id": workflow.id, "name": workflow.name, "input": workflow.input_json, "status": Status.PENDING.value,
            "result": None, "error": None, "attempts": 0, "run_at": now if workflow.run_at is None else workflow.run_at,
            "created_at": now, "updated_at": now, "crash_at": workflow.crash_at, "deadline_at": workflow.deadline_at,
            "queue": workflow.queue, "priority": workflow.priority, "concurrency_key": workflow.concurrency_key,
            "dedupe_key": workflow.dedupe_key, "trace_context": workflow.trace_context,
        }  # fmt: skip

    def _insert_new(self, rows: list[dict[str, Any]]) -> set[str]:
        """Inside a write: insert ``rows`` unless their id exists; the ids inserted (workers of their names told).

        One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` per
        chunk, written out here rather than built by the query builder (whose
        per-value compilation costs more than the insert itself at this size).
        """
        created: set[str] = set()
        if not rows:
            return created
        columns = list(rows[0])
        marks = "(" + ", ".join([self.db.param] * len(columns)) + ")"
        head = f"INSERT INTO {self.m.Workflow._meta.table_name} ({', '.join(columns)}) VALUES "
        for chunk in _chunks(rows):
            sql = head + ", ".join([marks] * len(chunk)) + " ON CONFLICT DO NOTHING RETURNING id"
            params = [row[c] for row in chunk for c in columns]
            created.update(found for (found,) in self.db.execute_sql(sql, params).fetchall())
        by_name = {row["name"]: row["id"] for row in rows if row["id"] in created}
        for workflow_id in by_name.values():  # the wake-up hint names the workflow's name: one per name
            self._notify(workflow_id)
        return created
