"""Forward migrations of the SQLite schema (the version lives in ``PRAGMA user_version``).

``MIGRATIONS[v]`` takes a database from version ``v`` to ``v + 1``; an empty
database gets the current schema from the models instead (``create_statements``).
"""

from __future__ import annotations

import re
from typing import Sequence

from peewee import Database

from ..schema import bind

#: ``from_version -> statements`` (one transaction per run, see ``migrations.run``).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE workflows ADD COLUMN interruption TEXT",
        "ALTER TABLE workflows ADD COLUMN failed_step TEXT",
        "ALTER TABLE steps ADD COLUMN token INTEGER",
        "ALTER TABLE steps ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE steps ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE leases ADD COLUMN renewed_mono REAL",
        "ALTER TABLE workers ADD COLUMN host_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE workers ADD COLUMN heartbeat_mono REAL",
        "ALTER TABLE workers ADD COLUMN ttl REAL",
        'CREATE TABLE IF NOT EXISTS "meta" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL)',
        'CREATE INDEX IF NOT EXISTS "workflows_status_name_run_at" ON "workflows" ("status", "name", "run_at")',
        'DROP INDEX IF EXISTS "workflows_name_status"',
    ),
    2: (
        "ALTER TABLE workflows ADD COLUMN wake_at REAL",
        "ALTER TABLE workflows ADD COLUMN parent_id TEXT",
        'CREATE INDEX IF NOT EXISTS "workflows_status_name_wake_at" ON "workflows" ("status", "name", "wake_at")',
        'CREATE TABLE IF NOT EXISTS "messages" ("id" TEXT NOT NULL PRIMARY KEY, "workflow_id" TEXT NOT NULL, '
        '"topic" TEXT NOT NULL, "payload" TEXT, "key" TEXT, "created_at" REAL NOT NULL, "consumed_by_step" TEXT)',
        'CREATE INDEX IF NOT EXISTS "messages_workflow_id_topic_created_at" ON "messages" ("workflow_id", "topic", "created_at")',
        'CREATE UNIQUE INDEX IF NOT EXISTS "messages_workflow_id_key" ON "messages" ("workflow_id", "key")',
        'CREATE TABLE IF NOT EXISTS "events" ("workflow_id" TEXT NOT NULL, "key" TEXT NOT NULL, "value" TEXT, '
        '"updated_at" REAL NOT NULL, PRIMARY KEY ("workflow_id", "key"))',
    ),
    3: (
        "ALTER TABLE workflows ADD COLUMN deadline_at REAL",
        "ALTER TABLE workflows ADD COLUMN waiting_for TEXT",
        'CREATE INDEX IF NOT EXISTS "workflows_parent_id" ON "workflows" ("parent_id")',
        'CREATE INDEX IF NOT EXISTS "workflows_waiting_for" ON "workflows" ("waiting_for")',
        'CREATE INDEX IF NOT EXISTS "workflows_status_deadline_at" ON "workflows" ("status", "deadline_at")',
    ),
    4: (
        "ALTER TABLE workflows ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'",
        "ALTER TABLE workflows ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE workflows ADD COLUMN concurrency_key TEXT",
        "ALTER TABLE workflows ADD COLUMN dedupe_key TEXT",
        "ALTER TABLE workflows ADD COLUMN started_at REAL",
        'CREATE TABLE IF NOT EXISTS "queues" ("name" TEXT NOT NULL PRIMARY KEY, "concurrency" INTEGER, '
        '"worker_concurrency" INTEGER, "rate_limit" INTEGER, "rate_period" REAL, "per_key_concurrency" INTEGER, '
        '"updated_at" REAL NOT NULL)',
        'CREATE INDEX IF NOT EXISTS "workflows_status_queue_name_priority_run_at" '
        'ON "workflows" ("status", "queue", "name", "priority" DESC, "run_at")',
        'CREATE INDEX IF NOT EXISTS "workflows_status_queue_name_wake_at" ON "workflows" ("status", "queue", "name", "wake_at")',
        'CREATE INDEX IF NOT EXISTS "workflows_status_queue_concurrency_key" '
        'ON "workflows" ("status", "queue", "concurrency_key")',
        'CREATE INDEX IF NOT EXISTS "workflows_queue_started_at" ON "workflows" ("queue", "started_at")',
        'CREATE UNIQUE INDEX IF NOT EXISTS "workflows_queue_dedupe_key" ON "workflows" ("queue", "dedupe_key") '
        "WHERE dedupe_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING')",
        'CREATE TABLE IF NOT EXISTS "schedules" ("name" TEXT NOT NULL PRIMARY KEY, "workflow" TEXT NOT NULL, '
        '"cron" TEXT NOT NULL, "timezone" TEXT NOT NULL, "catchup" TEXT NOT NULL, "input" TEXT NOT NULL, '
        '"origin" TEXT NOT NULL, "paused" INTEGER NOT NULL, "next_at" REAL NOT NULL, "last_slot" REAL, '
        '"created_at" REAL NOT NULL, "updated_at" REAL NOT NULL)',
        'CREATE TABLE IF NOT EXISTS "roles" ("name" TEXT NOT NULL PRIMARY KEY, "holder" TEXT NOT NULL, '
        '"token" INTEGER NOT NULL, "expires_at" REAL NOT NULL, "renewed_at" REAL NOT NULL)',
        'DROP INDEX IF EXISTS "workflows_status_name_run_at"',
        'DROP INDEX IF EXISTS "workflows_status_name_wake_at"',
    ),
    5: (
        "ALTER TABLE workflows ADD COLUMN trace_context TEXT",
        "ALTER TABLE steps ADD COLUMN history TEXT",
        'CREATE INDEX IF NOT EXISTS "workflows_status_updated_at" ON "workflows" ("status", "updated_at")',
        'CREATE INDEX IF NOT EXISTS "workflows_name_created_at" ON "workflows" ("name", "created_at")',
    ),
}

_ADD_COLUMN = re.compile(r'^ALTER TABLE "?(\w+)"? ADD COLUMN "?(\w+)"?', re.IGNORECASE)


def to_run(db: Database, statements: Sequence[str]) -> list[str]:
    """``statements`` less each ``ADD COLUMN`` of a column its table already has.

    SQLite has no ``ADD COLUMN IF NOT EXISTS`` (PostgreSQL's migrations use it): a
    database whose version was set back without dropping every newer column migrates too.
    """
    kept = []
    for statement in statements:
        added = _ADD_COLUMN.match(statement)
        if added and added.group(2) in {column.name for column in db.get_columns(added.group(1))}:
            continue
        kept.append(statement)
    return kept


def create_statements(db: Database) -> tuple[str, ...]:
    """The statements ``create_tables`` runs for the current schema on ``db``, as text (``--dry-run``)."""
    statements: list[str] = []
    for model in bind(db).engine_tables:
        statements.append(db.get_sql_context().sql(model._schema._create_table(safe=True)).query()[0])
        statements.extend(db.get_sql_context().sql(index).query()[0] for index in model._schema._create_indexes(safe=True))
    return tuple(statements)
