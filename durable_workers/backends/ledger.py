"""Store operations of the chaos experiment only.

Used by ``durable chaos`` (durable_workers/chaos/, checkflows.py) and its
stress tests: the side-effect ledger its check workflows append to, the
read-outs of its verdict, and its lock fault. The engine never calls these.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Sequence

from peewee import fn

from ..records import LedgerRecord, StepRecord, WorkflowRecord
from .base import StoreBase


class LedgerOps(StoreBase):
    """The chaos experiment's ledger table and verdict read-outs."""

    def ledger_create(self) -> None:
        """Create the ``chaos_ledger`` table if it is missing."""
        m = self.m
        self.write(lambda: self.db.create_tables([m.Ledger], safe=True))

    def ledger_append(
        self,
        workflow_id: str,
        step_key: str,
        *,
        value_json: str | None,
        worker_id: str | None,
        token: int | None,
        attempt: int | None,
    ) -> None:
        """Append one execution by this process to the ledger, in its own transaction (a side effect).

        Deliberately not fenced: it stands for an external system. It records the
        lease token and the step's status as they are when the row is written, so
        that executions by fenced workers and of already COMPLETED steps show.
        """
        m = self.m

        def body() -> None:
            lease_token = m.Lease.select(m.Lease.token).where(m.Lease.workflow_id == workflow_id).scalar()
            step_status = (
                m.Step.select(m.Step.status)
                .where((m.Step.workflow_id == workflow_id) & (m.Step.step_key == step_key))
                .scalar()
            )
            m.Ledger.insert(
                workflow_id=workflow_id,
                step_key=step_key,
                pid=os.getpid(),
                worker_id=worker_id,
                token=token,
                attempt=attempt,
                value=value_json,
                at=time.time(),
                lease_token=lease_token,
                step_status=step_status,
            ).execute()

        self.write(body)

    def ledger_rows(self) -> list["LedgerRecord"]:
        """Every ledger row, in the order written."""
        m = self.m

        def body() -> list[LedgerRecord]:
            return [LedgerRecord.from_row(row) for row in m.Ledger.select().order_by(m.Ledger.id)]

        return self.read(body)

    def ledger_executions(self, workflow_id: str, step_key: str) -> int:
        """How many executions of step ``step_key`` of ``workflow_id`` the ledger holds (0 if none)."""
        m = self.m
        return self.read(
            lambda: m.Ledger.select()
            .where((m.Ledger.workflow_id == workflow_id) & (m.Ledger.step_key == step_key))
            .count()
        )

    def ledger_counts(self) -> dict[tuple[str, str], int]:
        """Executions per ``(workflow_id, step_key)`` (attempt markers ``@...`` left out)."""
        m = self.m

        def body() -> dict[tuple[str, str], int]:
            query = (
                m.Ledger.select(m.Ledger.workflow_id, m.Ledger.step_key, fn.COUNT(m.Ledger.id))
                .where(~m.Ledger.step_key.startswith("@"))
                .group_by(m.Ledger.workflow_id, m.Ledger.step_key)
            )
            return {(wf, key): count for wf, key, count in query.tuples()}

        return self.read(body)

    def workflows_named(self, names: Sequence[str]) -> list[WorkflowRecord]:
        """Every workflow with one of these names, oldest first."""
        m = self.m

        def body() -> list[WorkflowRecord]:
            query = m.Workflow.select().where(m.Workflow.name.in_(list(names))).order_by(m.Workflow.created_at)
            return [WorkflowRecord.from_row(row) for row in query]

        return self.read(body)

    def steps_of_workflows_named(self, names: Sequence[str]) -> list[StepRecord]:
        """Every step row of the workflows with one of these names."""
        m = self.m

        def body() -> list[StepRecord]:
            query = (
                m.Step.select(m.Step)
                .join(m.Workflow, on=(m.Workflow.id == m.Step.workflow_id))
                .where(m.Workflow.name.in_(list(names)))
            )
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def status_counts_by_name(self) -> dict[str, dict[str, int]]:
        """``{name: {status: count}}`` over all workflows."""
        m = self.m

        def body() -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            query = m.Workflow.select(m.Workflow.name, m.Workflow.status, fn.COUNT(m.Workflow.id)).group_by(
                m.Workflow.name, m.Workflow.status
            )
            for name, status, count in query.tuples():
                counts.setdefault(name, {})[status] = count
            return counts

        return self.read(body)

    def workflow_ids(self) -> list[str]:
        """The id of every workflow row (duplicates would show twice)."""
        m = self.m
        return self.read(lambda: [row[0] for row in m.Workflow.select(m.Workflow.id).tuples()])

    def _lock_writers(self) -> None:
        """Inside a write: take the lock every writer of the engine tables needs (SQLite: the
        ``BEGIN IMMEDIATE`` write lock, taken by the transaction's first statement)."""
        m = self.m
        m.Worker.select(fn.COUNT(m.Worker.id)).scalar()

    def hold_write_lock(self, seconds: float, on_locked: Callable[[float], None] | None = None) -> float:
        """Hold the database's write lock (``BEGIN IMMEDIATE``) for ``seconds``; return when it was taken.

        The chaos experiment's lock fault: every other writer waits meanwhile
        (on PostgreSQL, writers hit ``lock_timeout`` and poll, then raise
        :class:`StoreUnavailable` past their patience).
        """

        def body() -> float:
            self._lock_writers()
            locked_at = time.time()
            if on_locked is not None:
                on_locked(locked_at)
            threading.Event().wait(seconds)
            return locked_at

        return self.write(body)
