"""The suspend operation and the claim of due WAITING workflows, on both backends.

``suspend_workflow`` is fenced by the lease token like ``finish_workflow``; a
WAITING workflow holds no lease and is runnable again from its ``wake_at``
(the database clock), competing with PENDING work by due time.
"""

from __future__ import annotations

import time

import pytest

from durable_workers import LeaseLost
from durable_workers.backends import SCHEMA_VERSION
from durable_workers.records import Status
from tests.contract.conftest import Backend

TTL = 30.0


def test_suspend_records_waiting_releases_the_lease_and_does_not_count_the_claim(backend: Backend) -> None:
    store = backend.open("suspend")
    now = time.time()
    store.submit("wf", "n", "{}", now=now)
    claim = store.claim_next("w", ["n"], ttl=TTL, now=now)
    assert claim is not None
    store.suspend_workflow("wf", now + 100, worker_id="w", token=claim.token, now=now + 1)
    row = store.get_workflow("wf")
    assert (row.status, row.wake_at, row.attempts) == (Status.WAITING.value, now + 100, 0)
    lease = store.get_lease("wf")
    assert lease is not None and lease.worker_id is None
    assert store.claim_next("w", ["n"], ttl=TTL, now=now + 99) is None  # not due yet
    assert store.next_wake(["n"]) == now + 100
    assert store.next_wake(["other"]) is None
    woken = store.claim_next("w2", ["n"], ttl=TTL, now=now + 100)
    assert woken is not None and woken.workflow.id == "wf" and woken.token == claim.token + 1
    assert store.get_workflow("wf").status == Status.RUNNING.value
    assert store.next_wake(["n"]) is None


def test_a_suspend_after_the_lease_was_taken_over_raises_lease_lost_and_writes_nothing(backend: Backend) -> None:
    store = backend.open("fenced")
    now = time.time()
    store.submit("wf", "n", "{}", now=now)
    old = store.claim_next("w1", ["n"], ttl=1.0, now=now)
    assert old is not None
    new = store.claim_next("w2", ["n"], ttl=TTL, now=now + 5)  # the old lease expired: taken over
    assert new is not None and new.token == old.token + 1
    before = store.get_workflow("wf")
    with pytest.raises(LeaseLost):
        store.suspend_workflow("wf", now + 100, worker_id="w1", token=old.token, now=now + 6)
    after = store.get_workflow("wf")
    assert (after.status, after.wake_at, after.attempts, after.updated_at) == (
        before.status, before.wake_at, before.attempts, before.updated_at,
    )  # fmt: skip
    lease = store.get_lease("wf")
    assert lease is not None and (lease.worker_id, lease.token) == ("w2", new.token)
    with pytest.raises(LeaseLost):  # a second try (a retried commit) fails the same way
        store.suspend_workflow("wf", now + 100, worker_id="w1", token=old.token, now=now + 6)


def test_due_waiting_and_pending_workflows_are_claimed_in_due_order(backend: Backend) -> None:
    store = backend.open("order")
    now = time.time()
    for workflow_id, wake in (("late", 30.0), ("early", 10.0), ("mid", 20.0)):
        store.submit(workflow_id, "n", "{}", now=now)
        claim = store.claim_next("w", ["n"], ttl=TTL, now=now)
        assert claim is not None and claim.workflow.id == workflow_id
        store.suspend_workflow(workflow_id, now + wake, worker_id="w", token=claim.token, now=now)
    store.submit("pending", "n", "{}", run_at=now + 15, now=now)
    order = []
    for _ in range(4):
        claim = store.claim_next("w", ["n"], ttl=TTL, now=now + 40)
        assert claim is not None
        order.append(claim.workflow.id)
    assert order == ["early", "pending", "mid", "late"]
    assert store.claim_next("w", ["n"], ttl=TTL, now=now + 40) is None


def test_a_waiting_workflow_is_claimed_by_the_database_clock(backend: Backend) -> None:
    store = backend.open("clock")
    store.submit("wf", "n", "{}")
    claim = store.claim_next("w", ["n"], ttl=TTL)
    assert claim is not None
    store.suspend_workflow("wf", store.now() + 3600, worker_id="w", token=claim.token)
    assert store.claim_next("w", ["n"], ttl=TTL) is None
    store.submit("wf2", "n", "{}")
    claim = store.claim_next("w", ["n"], ttl=TTL)
    assert claim is not None and claim.workflow.id == "wf2"
    store.suspend_workflow("wf2", store.now() - 1, worker_id="w", token=claim.token)
    again = store.claim_next("w", ["n"], ttl=TTL)
    assert again is not None and again.workflow.id == "wf2"


#: Statements taking a fresh (version 5) database back to version 2, per dialect.
_TO_V2 = {
    "sqlite": (
        *(f'DROP INDEX "{index}"' for index in (
            "workflows_status_queue_name_priority_run_at", "workflows_status_queue_name_wake_at",
            "workflows_status_queue_concurrency_key", "workflows_queue_started_at", "workflows_queue_dedupe_key")),
        *(f"ALTER TABLE workflows DROP COLUMN {c}" for c in ("queue", "priority", "concurrency_key", "dedupe_key", "started_at")),
        "DROP TABLE queues",
        'CREATE INDEX "workflows_status_name_run_at" ON "workflows" ("status", "name", "run_at")',
        'CREATE INDEX "workflows_status_name_wake_at" ON "workflows" ("status", "name", "wake_at")',
        'DROP INDEX "workflows_parent_id"',
        'DROP INDEX "workflows_waiting_for"',
        'DROP INDEX "workflows_status_deadline_at"',
        "ALTER TABLE workflows DROP COLUMN deadline_at",
        "ALTER TABLE workflows DROP COLUMN waiting_for",
        'DROP INDEX "workflows_status_name_wake_at"',
        "ALTER TABLE workflows DROP COLUMN wake_at",
        "ALTER TABLE workflows DROP COLUMN parent_id",
        "DROP TABLE messages",
        "DROP TABLE events",
        "PRAGMA user_version = 2",
    ),
    "postgresql": (
        *(f"DROP INDEX {index}" for index in (
            "workflows_queue_pending", "workflows_queue_waiting", "workflows_queue_running", "workflows_queue_started",
            "workflows_queue_dedupe")),
        *(f"ALTER TABLE workflows DROP COLUMN {c}" for c in ("queue", "priority", "concurrency_key", "dedupe_key", "started_at")),
        "DROP TABLE queues",
        "CREATE INDEX workflows_pending_due ON workflows (name, run_at) WHERE status = 'PENDING'",
        "CREATE INDEX workflows_waiting_due ON workflows (name, wake_at) WHERE status = 'WAITING'",
        "DROP INDEX workflows_parent",
        "DROP INDEX workflows_waiting_for",
        "DROP INDEX workflows_deadline",
        "ALTER TABLE workflows DROP COLUMN deadline_at",
        "ALTER TABLE workflows DROP COLUMN waiting_for",
        "DROP INDEX workflows_waiting_due",
        "ALTER TABLE workflows DROP COLUMN wake_at",
        "ALTER TABLE workflows DROP COLUMN parent_id",
        "DROP TABLE messages",
        "DROP TABLE events",
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
    ),
}


def _raw(backend: Backend, target: str, statement: str) -> list[tuple]:
    if backend.name == "postgresql":
        from tests.contract.pg_support import sql

        return sql(target, statement)
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(target)) as conn:
        rows = conn.execute(statement).fetchall()
        conn.commit()
        return rows


def test_a_version_2_database_is_migrated_forward_and_keeps_its_rows(backend: Backend) -> None:
    target = backend.target("v2")
    store = backend.open("v2")
    store.submit("old", "n", "{}")
    store.close_idle()
    for statement in _TO_V2[backend.name]:
        _raw(backend, target, statement)
    migrated = backend.open("v2")
    migrated.submit("new", "n", "{}")  # a writer migrates
    assert {r.id for r in migrated.list_workflows()} == {"old", "new"}
    claim = migrated.claim_next("w", ["n"], ttl=TTL)
    assert claim is not None
    migrated.suspend_workflow(claim.workflow.id, migrated.now() + 60, worker_id="w", token=claim.token)
    assert migrated.get_workflow(claim.workflow.id).status == Status.WAITING.value
    version = "SELECT value FROM meta WHERE key = 'schema_version'" if backend.name == "postgresql" else "PRAGMA user_version"
    assert str(_raw(backend, target, version)[0][0]) == str(SCHEMA_VERSION)
    assert _raw(backend, target, "SELECT count(*) FROM messages")[0][0] == 0
    assert _raw(backend, target, "SELECT count(*) FROM events")[0][0] == 0
