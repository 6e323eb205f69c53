"""Forward migrations of the PostgreSQL schema (the version lives in ``meta.schema_version``).

``MIGRATIONS[v]`` takes a database from version ``v`` to ``v + 1``. The
PostgreSQL history starts at version 2 (``postgres_sql.CREATE`` makes an empty
database current), so there are none yet; the next schema change adds
``MIGRATIONS[2]`` here and ``MIGRATIONS[2]`` in ``sqlite.py``.
"""

from __future__ import annotations

#: ``from_version -> statements`` (one transaction per run, under the advisory lock).
MIGRATIONS: dict[int, tuple[str, ...]] = {}
