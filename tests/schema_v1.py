"""A SQLite database of schema version 1, made from a current one (what the migration tests start from)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def downgrade_to_v1(path: Path) -> None:
    """Turn a fresh database back into schema v1: no v2 to v5 columns and tables, the v1 indexes."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for index in (
            "workflows_status_queue_name_wake_at", "workflows_parent_id", "workflows_waiting_for",
            "workflows_status_deadline_at", "workflows_status_queue_name_priority_run_at",
            "workflows_status_queue_concurrency_key", "workflows_queue_started_at", "workflows_queue_dedupe_key",
        ):  # fmt: skip
            con.execute(f'DROP INDEX "{index}"')
        for statement in ("DROP TABLE messages", "DROP TABLE events", "DROP TABLE queues"):
            con.execute(statement)
        for table, column in [
            ("workflows", "interruption"), ("workflows", "failed_step"), ("workflows", "wake_at"), ("workflows", "parent_id"),
            ("workflows", "deadline_at"), ("workflows", "waiting_for"), ("workflows", "queue"), ("workflows", "priority"),
            ("workflows", "concurrency_key"), ("workflows", "dedupe_key"), ("workflows", "started_at"),
            ("steps", "token"), ("steps", "seq"), ("steps", "interruptions"),
            ("leases", "renewed_mono"), ("workers", "host_id"), ("workers", "heartbeat_mono"), ("workers", "ttl"),
        ]:
            con.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        con.execute('DROP TABLE "meta"')
        con.execute('CREATE INDEX "workflows_name_status" ON "workflows" ("name", "status")')
        con.execute("PRAGMA user_version = 1")
    finally:
        con.close()
