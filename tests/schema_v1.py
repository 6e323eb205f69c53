"""A SQLite database of schema version 1, made from a current one (what the migration tests start from)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def downgrade_to_v1(path: Path) -> None:
    """Turn a fresh database back into schema v1: no v2, v3 or v4 columns and tables, the v1 indexes."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for index in ("workflows_status_name_wake_at", "workflows_parent_id", "workflows_waiting_for", "workflows_status_deadline_at"):
            con.execute(f'DROP INDEX "{index}"')
        for statement in ("DROP TABLE messages", "DROP TABLE events"):
            con.execute(statement)
        for table, column in [
            ("workflows", "interruption"), ("workflows", "failed_step"), ("workflows", "wake_at"), ("workflows", "parent_id"),
            ("workflows", "deadline_at"), ("workflows", "waiting_for"),
            ("steps", "token"), ("steps", "seq"), ("steps", "interruptions"),
            ("leases", "renewed_mono"), ("workers", "host_id"), ("workers", "heartbeat_mono"), ("workers", "ttl"),
        ]:
            con.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        con.execute('DROP TABLE "meta"')
        con.execute('DROP INDEX "workflows_status_name_run_at"')
        con.execute('CREATE INDEX "workflows_name_status" ON "workflows" ("name", "status")')
        con.execute("PRAGMA user_version = 1")
    finally:
        con.close()
