"""Database backends: the store contract and its dialects.

``open_store(db, ...)`` is how every part of durable_workers gets a
:class:`Store`: a SQLite path (``sqlite.SqliteStore``) or a
``postgresql://`` URL (``postgres.PostgresStore``, imported only when used).
SQL and peewee live in this package alone. The records the operations
return (``durable_workers.records``) are re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from ..records import (
    TERMINAL,
    Claim,
    LeaseRecord,
    LedgerRecord,
    Status,
    StepRecord,
    StepStart,
    StepStatus,
    WorkerRecord,
    WorkflowRecord,
)
from .base import Failure
from .batch import NewWorkflow
from .contract import CONTRACT, SKELETON, Operation
from .retention import Collected
from .schema import SCHEMA_VERSION
from .sqlite import BUSY_TIMEOUT_MS, LOCK_RETRIES, SqliteStore
from .store import Store

#: URL schemes of the PostgreSQL dialect.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_url(db: str | os.PathLike[str]) -> bool:
    """True when ``db`` is a database URL (``scheme://…``), False for a SQLite file path."""
    return "://" in str(db)


def open_store(db: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at ``db``: a SQLite file path or a ``postgresql://user@host:port/dbname`` URL.

    Options are those of :class:`SqliteStore` or ``PostgresStore`` (which also
    takes ``pool_size``, and accepts and ignores ``synchronous``). Raises
    :class:`ConfigError` for a malformed URL, or one when psycopg is not
    installed, and whatever the dialect raises on opening
    (:class:`DatabaseError` with a one-line reason, :class:`DatabaseReplacedError`,
    :class:`StoreUnavailable`).
    """
    if is_url(db) and not str(db).startswith(POSTGRES_SCHEMES):
        raise ConfigError(
            f"unsupported database URL {db}: pass a SQLite file path or a postgresql://user@host:port/dbname URL"
        )
    if str(db).startswith(POSTGRES_SCHEMES):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(f"PostgreSQL needs psycopg: pip install 'durable_workers[postgres]' ({exc})") from None
        return PostgresStore(str(db), **options)
    options.pop("pool_size", None)
    return SqliteStore(db, **options)


__all__ = [
    "BUSY_TIMEOUT_MS",
    "CONTRACT",
    "Claim",
    "Collected",
    "Failure",
    "LOCK_RETRIES",
    "LeaseRecord",
    "LedgerRecord",
    "NewWorkflow",
    "Operation",
    "SCHEMA_VERSION",
    "SKELETON",
    "SqliteStore",
    "Status",
    "StepRecord",
    "StepStart",
    "StepStatus",
    "Store",
    "TERMINAL",
    "WorkerRecord",
    "WorkflowRecord",
    "is_url",
    "open_store",
]
