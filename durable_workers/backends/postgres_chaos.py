"""The PostgreSQL store's operations for the chaos experiment: its ledger table and the writers' lock fault."""

from __future__ import annotations

from typing import Any

from . import postgres_sql as q


class PgChaos:
    """Mixin of ``PostgresStore``: ``ledger_create`` and the lock of ``hold_write_lock``."""

    db: Any
    write: Any

    def ledger_create(self) -> None:
        """Create the ``chaos_ledger`` table if it is missing (under the schema lock: starters may race)."""

        def body() -> None:
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (q.SCHEMA_LOCK_KEY,))
            self.db.execute_sql(q.CREATE_LEDGER)
            self.db.execute_sql(q.CREATE_LEDGER_INDEX)

        self.write(body, safe=True)

    def _lock_writers(self) -> None:
        """Lock the engine tables against every writer, not readers (``LOCK TABLE ... SHARE ROW EXCLUSIVE``)."""
        self.db.execute_sql(q.LOCK_WRITERS)
