"""The fleet tests' own access to their database, on either backend (used by fleet_support).

A database is a ``--db`` target: a SQLite file path (read with sqlite3) or a ``postgresql://``
URL (read with psycopg). SQL is written once, with sqlite3's ``?`` placeholders.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterable, Union
from urllib.parse import urlsplit

import psutil

#: What ``--db`` takes: a SQLite file path or a ``postgresql://`` URL.
DbTarget = Union[Path, str]
#: Seconds a test's own PostgreSQL connection waits for the server.
PG_CONNECT_TIMEOUT_S = 10


def is_url(db: DbTarget) -> bool:
    """True when ``db`` is a database URL (PostgreSQL), False for a SQLite file path."""
    return "://" in str(db)


def pg_placeholders(sql: str) -> str:
    """``sql`` written with sqlite3's ``?`` placeholders, in psycopg's ``%s`` style.

    The one place the two styles meet: a literal ``%`` is doubled; a ``?`` is always a
    placeholder (the tests' SQL has none inside string literals).
    """
    return sql.replace("%", "%%").replace("?", "%s")


def query(db: DbTarget, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Run one read (or write) on the test's database with a fresh connection; rows as dicts.

    ``sql`` uses ``?`` placeholders on both backends. Raises the driver's error (sqlite3's or
    psycopg's); ``MISSING_TABLE`` lists those meaning "the schema is not created yet".
    """
    if is_url(db):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(str(db), row_factory=dict_row, connect_timeout=PG_CONNECT_TIMEOUT_S) as conn:
            cursor = conn.execute(pg_placeholders(sql), tuple(params))  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(sql, tuple(params))]
        con.commit()
        return rows
    finally:
        con.close()


def _missing_table_errors() -> tuple[type[BaseException], ...]:
    try:
        from psycopg.errors import UndefinedTable
    except ImportError:  # pragma: no cover - psycopg is a test dependency
        return (sqlite3.OperationalError,)
    return (sqlite3.OperationalError, UndefinedTable)


#: What ``query`` raises on a database whose tables are not created yet (either backend).
MISSING_TABLE = _missing_table_errors()


def db_exists(db: DbTarget) -> bool:
    """True once the database exists: the SQLite file is there (a test's URL always exists)."""
    return is_url(db) or Path(db).exists()


def cli_cwd(db: DbTarget) -> Path:
    """A working directory for a CLI subprocess on ``db``: the SQLite file's folder, or for a
    URL the temporary folder (no pyproject.toml there: ``--db``/``--app`` must be honoured)."""
    return Path(tempfile.gettempdir()) if is_url(db) else Path(db).parent


def can_write(db: DbTarget, timeout: float = 2.0) -> bool:
    """True if this test can take the SQLite database's write lock within ``timeout`` seconds."""
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=timeout, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def pg_in_transaction(proc: psutil.Process, url: str) -> bool:
    """True if one of ``proc``'s connections to the server of ``url`` has a transaction open.

    Its sessions are found by their client ports (``pg_stat_activity.client_port``).
    """
    server = urlsplit(url).port
    ports = [c.laddr.port for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == server]
    if not ports:
        return False
    marks = ",".join("?" * len(ports))
    open_ = query(
        url,
        f"SELECT COUNT(*) AS n FROM pg_stat_activity WHERE client_port IN ({marks}) AND xact_start IS NOT NULL",
        ports,
    )
    return open_[0]["n"] > 0


def holds_no_transaction(proc: psutil.Process, db: DbTarget, patience: float = 2.0) -> bool:
    """True if ``proc`` (stopped) cannot be blocking other writers of ``db``: on SQLite it does
    not hold the write lock (this test could take it within ``patience`` seconds); on PostgreSQL
    none of its sessions is inside a transaction."""
    return not pg_in_transaction(proc, str(db)) if is_url(db) else can_write(db, timeout=patience)
