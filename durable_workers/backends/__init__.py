"""Database backends: the store contract and its dialects.

``open_store(db, ...)`` is how every part of durable_workers gets a
:class:`Store`: today a SQLite path (``sqlite.SqliteStore``); a
``postgresql://`` URL is recognised and refused until that dialect is built.
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
from .base import CONTRACT, SKELETON, Failure, Operation
from .schema import SCHEMA_VERSION
from .sqlite import BUSY_TIMEOUT_MS, LOCK_RETRIES, SqliteStore
from .store import Store

#: URL schemes of the PostgreSQL dialect (not built yet).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(db: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at ``db``: a SQLite file path (options: those of :class:`SqliteStore`).

    Raises :class:`ConfigError` for a PostgreSQL URL ("not built yet"), and
    whatever the dialect raises on opening (:class:`DatabaseError` with a
    one-line reason, :class:`DatabaseReplacedError`, :class:`StoreUnavailable`).
    """
    if str(db).startswith(POSTGRES_SCHEMES):
        raise ConfigError(f"PostgreSQL support is not built yet; pass a SQLite file path as --db (got {db})")
    return SqliteStore(db, **options)


__all__ = [
    "BUSY_TIMEOUT_MS",
    "CONTRACT",
    "Claim",
    "Failure",
    "LOCK_RETRIES",
    "LeaseRecord",
    "LedgerRecord",
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
    "open_store",
]
