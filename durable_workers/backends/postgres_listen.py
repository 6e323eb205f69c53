"""The LISTEN side of the PostgreSQL dialect's wake-up hints (``PostgresStore.change_watch``).

A worker's idle loop asks ``changed()`` every few milliseconds; it drains the
notifications that arrived on a dedicated autocommit connection (not from the
store's pool: it must never be inside a transaction or handed to another
thread) without blocking. Notifications are hints: polling stays, and a lost
connection only makes the worker poll until it is back.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterable

import psycopg

from . import postgres_sql as q


class NotifyWatch:
    """``changed()``: a wake-up notification for one of ``names`` (any name when empty) arrived since the last call."""

    #: Seconds between reconnection attempts while the LISTEN connection is down.
    RECONNECT_S = 1.0

    def __init__(self, conninfo: str, names: Iterable[str], connect_timeout: int) -> None:
        self._conninfo, self._timeout = conninfo, connect_timeout
        self.names = frozenset(names)
        self._conn: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0
        self._listen()

    def _listen(self) -> None:
        self._retry_at = time.monotonic() + self.RECONNECT_S
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._timeout,
                                   application_name=f"durable_workers:listen:{os.getpid()}")  # fmt: skip
            conn.execute(f"LISTEN {q.WAKE_CHANNEL}")
            self._conn = conn
        except psycopg.Error:
            self._conn = None

    def changed(self) -> bool:
        if self._conn is None:
            if time.monotonic() < self._retry_at:
                return False
            self._listen()
            return True  # notifications may have been missed meanwhile: poll once
        try:
            payloads = [n.payload for n in self._conn.notifies(timeout=0)]
        except psycopg.Error:
            self.close()
            self._retry_at = time.monotonic() + self.RECONNECT_S
            return True
        return any(not self.names or payload in self.names for payload in payloads)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
