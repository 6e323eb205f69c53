"""The PostgreSQL store's operations for the chaos experiment: its ledger table and the writers' lock fault."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from . import postgres_sql as q


class PgChaos:
    """Mixin of ``PostgresStore``: ``ledger_create`` and ``hold_write_lock``."""

    db: Any
    write: Any

    def ledger_create(self) -> None:
        """Create the ``chaos_ledger`` table if it is missing (under the schema lock: starters may race)."""

        def body() -> None:
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (q.SCHEMA_LOCK_KEY,))
            self.db.execute_sql(q.CREATE_LEDGER)
            self.db.execute_sql(q.CREATE_LEDGER_INDEX)

        self.write(body, safe=True)

    def hold_write_lock(self, seconds: float, on_locked: Callable[[float], None] | None = None) -> float:
        """Lock the engine tables against every writer (not readers) for ``seconds``; return when it was taken.

        The chaos experiment's lock fault: writers meanwhile hit ``lock_timeout``
        and poll, then raise :class:`StoreUnavailable` past their patience.
        """

        def body() -> float:
            self.db.execute_sql(q.LOCK_WRITERS)
            locked_at = time.time()
            if on_locked is not None:
                on_locked(locked_at)
            threading.Event().wait(seconds)
            return locked_at

        return self.write(body)

