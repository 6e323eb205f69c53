"""Forward migrations of the PostgreSQL schema and the store's schema methods (``PgSchema``).

The version lives in ``meta.schema_version``.

``MIGRATIONS[v]`` takes a database from version ``v`` to ``v + 1``. The
PostgreSQL history starts at version 2 (``postgres_sql.CREATE`` makes an empty
database current); each schema change adds one entry here and the same
version's entry in ``sqlite.py``.
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

from ...errors import DatabaseError
from .. import postgres_sql as q
from ..schema import SCHEMA_VERSION
from . import Migration, check_not_newer, pending, wanted_at_open

#: ``from_version -> statements`` (one transaction per run, under the advisory lock).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (  # v3: WAITING and its wake time, the parent link, messages and events
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS wake_at double precision",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS parent_id text",
        "CREATE INDEX IF NOT EXISTS workflows_waiting_due ON workflows (name, wake_at) WHERE status = 'WAITING'",
        *q.PRIMITIVE_TABLES,
    ),
    3: (  # v4: workflow deadlines, what a WAITING workflow waits for, the children index
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS deadline_at double precision",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS waiting_for text",
        *q.V4_INDEXES,
    ),
    4: (  # v5: queues with limits, priorities, concurrency and dedupe keys, first start times
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT 'default'",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS concurrency_key text",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS dedupe_key text",
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS started_at double precision",
        *q.V5_QUEUES,
        "DROP INDEX IF EXISTS workflows_pending_due",
        "DROP INDEX IF EXISTS workflows_waiting_due",
    ),
    5: (  # v6: the submitter's trace context, the dashboard's indexes, a step's earlier attempts
        "ALTER TABLE workflows ADD COLUMN IF NOT EXISTS trace_context text",
        "ALTER TABLE steps ADD COLUMN IF NOT EXISTS history text",
        *q.V6_INDEXES,
    ),
}


class PgSchema:
    """``PostgresStore``'s schema methods: read the version, create or migrate under the advisory lock."""

    db: Any
    path: str
    auto_migrate: bool
    _db_id: str | None
    read: Any
    write: Any
    _read_db_id: Any

    def _tables(self, names: Sequence[str]) -> int:
        """How many of these tables exist, read from the catalog with this statement's snapshot.

        Not ``to_regclass``: it answers from the backend's catalog cache, which
        an advisory lock wait does not refresh, so a starter that waited for the
        creator still saw no ``meta`` table.
        """
        count: int = self.db.execute_sql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(%s)", (list(names),)
        ).fetchone()[0]
        return count

    def _schema_version(self) -> int:
        if not self._tables(["meta"]):
            return 0
        row = self.db.execute_sql("SELECT value FROM meta WHERE key = %s", (q.VERSION_KEY,)).fetchone()
        return int(row[0]) if row is not None else 0

    def schema_version(self) -> int:
        """The database's schema version (0: no engine tables yet)."""
        return self.read(self._schema_version)

    def _check_schema(self, create: bool) -> bool:
        """Refuse a newer database; True when the schema is to be created or migrated now."""
        return wanted_at_open(self._schema_version(), self.path, create=create, auto_migrate=self.auto_migrate)

    def migrate(self, *, dry_run: bool = False) -> Migration:
        """Create or migrate the schema to ``SCHEMA_VERSION`` in one transaction under the advisory lock.

        Concurrent callers wait for the lock; the later ones find the schema
        current. ``dry_run`` returns the statements without running them.
        Raises :class:`SchemaVersionError` for a newer database.
        """
        done = self.write(lambda: self._migrate_locked(dry_run), safe=True)
        if done.changed and not dry_run:
            self._db_id = self.read(self._read_db_id)
        return done

    def _migrate_locked(self, dry_run: bool) -> Migration:
        self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (q.SCHEMA_LOCK_KEY,))
        version = self._schema_version()  # a concurrent starter may have done it meanwhile
        check_not_newer(version, self.path)
        if version == SCHEMA_VERSION:
            return Migration(version, version)
        if version == 0 and self._tables(q.ENGINE_TABLES):
            raise DatabaseError(f"{self.path} holds tables of another application; pass --db to a new database")
        plan = Migration(version, SCHEMA_VERSION, pending(version, MIGRATIONS, q.CREATE))
        if dry_run:
            return plan
        for statement in plan.statements:
            self.db.execute_sql(statement)
        upsert = "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO "
        self.db.execute_sql(upsert + "UPDATE SET value = EXCLUDED.value", (q.VERSION_KEY, str(SCHEMA_VERSION)))
        self.db.execute_sql(upsert + "NOTHING", (q.DB_ID_KEY, uuid.uuid4().hex))
        return plan

