"""The SQLite file under a store: its checks, its guarded database object, its per-file state.

Everything here is about one database file and knows no table but ``meta``:
the checks made before opening a path, the read-only URI, the peewee database
class whose new connections pass the file identity guard (``identity.py``),
the error texts, and :class:`SqliteFile`, the state that every store of this
process on the same file shares (the writer lock and the pinned identity).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import urllib.parse
import weakref
from pathlib import Path
from typing import Any, Protocol

import peewee
from peewee import SqliteDatabase
from playhouse.pool import PooledSqliteDatabase

from ..errors import DatabaseError
from .identity import NO_DB_ID, FileIdentity
from .pool import ReclaimingPool

#: Errors of the database file itself; mid-run they make the store unavailable, not a bug.
DAMAGED_MARKERS = ("not a database", "malformed", "disk i/o", "database or disk is full")


class ConnectionGuard(Protocol):
    """What the database asks before and after it opens a new connection (see ``SqliteStore._guard_identity``)."""

    def before_open(self) -> None:
        """Raise (an interrupt) instead of letting a connection be opened at the path."""

    def after_open(self, conn: sqlite3.Connection) -> None:
        """Raise (an interrupt) when the new connection is not on the expected database."""


class _GuardedSqliteDatabase(SqliteDatabase):
    """SQLite whose new connections pass ``guard`` (``None``: no check) before and after opening."""

    guard: ConnectionGuard | None = None

    def _connect(self) -> sqlite3.Connection:
        guard = self.guard
        if guard is not None:
            guard.before_open()  # before sqlite3.connect, which would create a deleted file anew
        conn = super()._connect()
        if guard is not None:
            try:
                guard.after_open(conn)
            except BaseException:
                conn.close()
                raise
        return conn


class GuardedPooledSqliteDatabase(ReclaimingPool, PooledSqliteDatabase, _GuardedSqliteDatabase):
    """One store's pool; only connections it opens anew (not reused ones) go through the guard.

    Pooled, with no size limit: a thread that closes its connection hands it to the next
    one; the connection of a thread that ended without closing it is closed before a new
    one is opened (see backends/pool.py), so connections do not pile up.
    """


class SqliteFile:
    """What every store of this process on one database file shares.

    ``writer``: one writer at a time per file in this process (threads queue
    here, in order, instead of polling SQLite against each other).
    ``identity``: the file the first store on the path pinned, checked by the
    later ones so that the process never mixes connections to two files.
    Kept only while some store on the path is alive (see :func:`shared_file`).
    The lock is re-entrant, but each store has its own connection: a write
    through one store from inside another store's write body on the same file
    would wait for its own thread's transaction (nothing does that; within one
    store a nested write is a savepoint).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.writer = threading.RLock()
        self.identity: FileIdentity | None = None


_FILES: "weakref.WeakValueDictionary[str, SqliteFile]" = weakref.WeakValueDictionary()
_FILES_LOCK = threading.Lock()


def shared_file(path: str) -> SqliteFile:
    """The :class:`SqliteFile` of the absolute ``path`` (a new one when no live store holds it)."""
    with _FILES_LOCK:
        found = _FILES.get(path)
        if found is None:
            found = _FILES[path] = SqliteFile(path)
        return found


def is_busy(exc: BaseException) -> bool:
    """SQLite reported a lock held elsewhere (``database is locked`` / ``busy``)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def root_cause(exc: BaseException) -> BaseException:
    """The first database error behind ``exc``.

    After SQLITE_FULL or an I/O error SQLite has already rolled the transaction
    back, so the rollback in peewee's ``atomic`` fails with "cannot rollback -
    no transaction is active"; the real cause is that error's ``__context__``.
    """
    seen = exc
    while isinstance(seen.__context__, (peewee.DatabaseError, sqlite3.Error)) and seen.__context__ is not seen:
        seen = seen.__context__
    return seen


def describe(path: str, exc: BaseException) -> DatabaseError:
    """A one-line DatabaseError for what opening or querying ``path`` raised."""
    text = str(exc)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return DatabaseError(f"{path} is not a durable_workers SQLite database ({text})")
    if "readonly" in lowered or "read-only" in lowered:
        return DatabaseError(f"database {path} is read-only; give this user write access to it and its folder")
    if "unable to open" in lowered:
        return DatabaseError(f"cannot open database {path}: check the path and its folder's permissions")
    return DatabaseError(f"database {path}: {text}")


def read_db_id(conn: sqlite3.Connection) -> str:
    """The ``db_id`` in ``meta`` read on a raw connection (``NO_DB_ID`` when there is none)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return NO_DB_ID
    return row[0] if row else NO_DB_ID


def readonly_uri(path_text: str) -> str:
    """SQLite URI that reads the file without ever writing to it or its folder.

    ``mode=ro`` still needs the WAL index (``-shm``); when it is missing and
    cannot be created (read-only folder) and no ``-wal`` holds unmerged
    commits, the file is read as ``immutable=1`` (no locks, no -shm).
    """
    path = Path(path_text).resolve()
    quoted = urllib.parse.quote(str(path))
    shm, wal = Path(f"{path}-shm"), Path(f"{path}-wal")
    if not shm.exists() and not wal.exists() and not os.access(path.parent, os.W_OK):
        return f"file:{quoted}?immutable=1"
    return f"file:{quoted}?mode=ro"


def check_path(path_text: str, *, create: bool, readonly: bool) -> None:
    """Raise DatabaseError (one line) when ``path_text`` cannot be opened as asked."""
    path = Path(path_text)
    if not path.parent.is_dir():
        raise DatabaseError(f"database folder {path.parent} does not exist; create it or pass --db PATH")
    if not path.exists():
        if not create:
            raise DatabaseError(f"no database at {path}; submit a workflow first or pass --db PATH")
        return
    if path.is_dir():
        raise DatabaseError(f"{path} is a folder, not a database file; pass --db PATH/durable.db")
    if readonly:
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        if wal.exists() and not shm.exists() and not os.access(path.parent, os.W_OK):
            raise DatabaseError(
                f"cannot read {path}: its write-ahead log {wal.name} needs {shm.name}, which this "
                f"user cannot create in {path.parent}; run the command as a user who can write there"
            )
        return
    if create and not stat.S_IMODE(path.stat().st_mode) & 0o222:
        raise DatabaseError(
            f"database {path} is read-only (mode {stat.S_IMODE(path.stat().st_mode):o}); "
            "make it writable or use a copy"
        )


def open_database(target: str, pragmas: dict[str, Any], poll_ms: int, *, uri: bool) -> GuardedPooledSqliteDatabase:
    """A new pooled database object of one store on ``target`` (nothing is connected yet)."""
    extra: dict[str, Any] = {"uri": True} if uri else {}
    return GuardedPooledSqliteDatabase(
        target,
        pragmas=pragmas,
        timeout=poll_ms / 1000.0,
        check_same_thread=False,
        max_connections=None,
        stale_timeout=None,
        **extra,
    )
