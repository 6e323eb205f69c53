"""The SQLite dialect of the store: one database file on one host.

Each write runs in one short ``BEGIN IMMEDIATE`` transaction (never a deferred
read that upgrades to a write), and a ``database is locked`` that survives
SQLite's own (short) busy timeout is retried by the store's transaction
skeleton with bounded, jittered polling, so it never reaches a workflow.
Writers of this process on one file queue on that file's lock
(``sqlite_file.SqliteFile``). Every write made on behalf of a workflow attempt
carries the attempt's ``worker_id`` and fencing ``token`` and checks them
against the lease row in the same transaction (``BEGIN IMMEDIATE`` serialises
writers, so the portable fencing of ``base.StoreBase._fence`` is safe here).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import uuid
from typing import Any, ContextManager, Sequence

import peewee
from peewee import SQL

from ..errors import DatabaseError, DatabaseReplacedError, StoreUnavailable
from .identity import FileIdentity
from ..records import Status
from .base import Failure
from .migrations import Migration, check_not_newer, pending, wanted_at_open
from .migrations.sqlite import MIGRATIONS, create_statements, to_run
from .queues import QueuePlan
from .schema import SCHEMA_VERSION, bind
from .sqlite_file import (
    DAMAGED_MARKERS,
    check_path,
    describe,
    is_busy,
    open_database,
    read_db_id,
    readonly_uri,
    root_cause,
    shared_file,
)
from .store import Store

#: SQLite's own wait for a lock, per statement, before it reports SQLITE_BUSY.
BUSY_TIMEOUT_MS = 10_000
#: Further retries of a whole transaction after SQLite gave up waiting.
LOCK_RETRIES = 12
#: How long SQLite itself waits for a lock before the store polls again (see StoreBase._run).
LOCK_POLL_MS = 10
#: A wait for the write lock at least this long counts as a database stall (see SqliteStore._stall_grace).
STALL_MIN = 0.1


class SqliteStore(Store):
    """The durable state of workflows, steps, leases and workers in one SQLite file.

    ``SqliteStore(path)`` opens (and, with ``create=True``, creates) the database.
    Raises :class:`DatabaseError` with a one-line reason when the file is
    missing, not SQLite, read-only, or of a newer schema version.
    ``lock_patience`` is how many seconds a transaction waits for a lock held
    elsewhere before it raises :class:`StoreUnavailable` (default
    ``busy_timeout_ms * (LOCK_RETRIES + 1)``, 130 s).
    ``auto_migrate=False`` leaves an empty or older schema as it is (``durable
    migrate`` then calls :meth:`migrate`); by default a writer creates or
    migrates it on open, under the write lock.
    ``readonly=True`` never writes to the file or its folder (SQLite
    ``mode=ro``, or ``immutable=1`` when the WAL index cannot be created):
    for read commands run by a user who may only read; it never creates.

    The store owns its pooled database object and its bound models: any number
    of stores, on one file or on several, read-only or not, live side by side
    in one process. Stores on the same file share its writer lock and its
    pinned file identity.
    """

    dialect = "sqlite"
    errors = (peewee.DatabaseError, sqlite3.OperationalError)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        create: bool = True,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        lock_patience: float | None = None,
        readonly: bool = False,
        auto_migrate: bool = True,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.readonly = readonly
        create = create and not readonly
        expected = self._expected_identity()
        check_path(self.path, create=create, readonly=readonly)
        # SQLite waits only LOCK_POLL_MS for a lock; the store then polls every few ms
        # until ``lock_patience`` s (default ``busy_timeout_ms * (LOCK_RETRIES + 1)``) have
        # passed. SQLite's own busy handler sleeps up to 100 ms between tries, so a long
        # waiter kept losing the lock to newcomers (seconds-long starvation, docs/reliability.md).
        self._patience = busy_timeout_ms / 1000.0 * (LOCK_RETRIES + 1) if lock_patience is None else lock_patience
        poll_ms = min(busy_timeout_ms, LOCK_POLL_MS)
        pragmas: dict[str, Any] = {
            "journal_mode": "wal",
            "synchronous": self.synchronous,
            "busy_timeout": poll_ms,
            "foreign_keys": 1,
        }
        target, uri = self.path, False
        if readonly:
            # No journal_mode change (a write) and no writes at all on these connections.
            pragmas = {"busy_timeout": poll_ms, "query_only": 1}
            target, uri = readonly_uri(self.path), True
        self.db = open_database(target, pragmas, poll_ms, uri=uri)
        self.m = bind(self.db)
        self._file = shared_file(os.path.abspath(self.path))
        self._writer = self._file.writer
        self._rng = random.Random()
        #: (wall time it ended, seconds) of the last wait for the write lock, see _note_wait.
        self._stall: tuple[float, float] = (0.0, 0.0)
        self.auto_migrate = auto_migrate
        try:
            if self.read(lambda: self._check_schema(create)):
                self.migrate()
        except StoreUnavailable as exc:
            self.close()
            raise describe(self.path, root_cause(exc.__cause__ or exc)) from exc
        except DatabaseError:
            self.close()
            raise
        self._guard_identity(expected)

    @property
    def wal_path(self) -> str | None:
        """The file whose size and mtime move on every commit (idle workers watch it for work)."""
        return self.path + "-wal"

    # ----------------------------------------------------------------- schema

    def _user_version(self) -> int:
        return int(self.db.execute_sql("PRAGMA user_version").fetchone()[0])

    def schema_version(self) -> int:
        """The database's schema version (0: no engine tables yet)."""
        return self.read(self._user_version)

    def _check_schema(self, create: bool) -> bool:
        """Refuse a newer or a foreign database; True when the schema is to be created or migrated now."""
        version = self._user_version()
        if version == 0 and set(self.db.get_tables()) - {"sqlite_sequence"}:
            raise DatabaseError(
                f"{self.path} is a SQLite database of another application; pass --db to a new file"
            )
        return wanted_at_open(version, self.path, create=create, auto_migrate=self.auto_migrate)

    def migrate(self, *, dry_run: bool = False) -> Migration:
        """Create or migrate the schema to ``SCHEMA_VERSION`` in one ``BEGIN IMMEDIATE`` transaction.

        Concurrent callers queue on the write lock; the later ones find the
        schema current. ``dry_run`` returns the statements without running them.
        Raises :class:`SchemaVersionError` for a newer database.
        """
        return self.write(lambda: self._migrate_locked(dry_run), safe=True)

    def _migrate_locked(self, dry_run: bool) -> Migration:
        version = self._user_version()
        check_not_newer(version, self.path)
        if version == SCHEMA_VERSION:
            return Migration(version, version)
        plan = Migration(version, SCHEMA_VERSION, pending(version, MIGRATIONS, create_statements(self.db)))
        if dry_run:
            return plan
        for statement in to_run(self.db, plan.statements):
            self.db.execute_sql(statement)
        self.m.DatabaseInfo.insert(key="db_id", value=uuid.uuid4().hex).on_conflict_ignore().execute()
        self.db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return plan

    # ----------------------------------------------------------------- database identity

    def _expected_identity(self) -> FileIdentity | None:
        """The file a parent process requires at this path (``EXPECT_DB_ENV``), checked before opening it.

        A worker started by a supervisor whose database was just replaced or
        deleted must not open (or create) whatever is at the path now.
        """
        expected = FileIdentity.expected_at(os.path.abspath(self.path))
        if expected is not None:
            expected.check_file()
        return expected

    def identity_env(self) -> dict[str, str]:
        """Environment for a child process: its store on this path refuses any file but this one.

        Empty before the identity is known. A child whose path names another
        file raises :class:`DatabaseReplacedError` from opening the store instead
        of opening or creating it.
        """
        guard = self.db.guard
        return guard.to_env() if isinstance(guard, FileIdentity) else {}

    def _guard_identity(self, expected: FileIdentity | None = None) -> None:
        """Pin which file this store opened, or check it against the one pinned by a live store on the path.

        The identity becomes the guard that every new connection of this
        store's pool passes. The first store of the process on a path pins it
        (in the path's shared ``SqliteFile``); a later one checks it, so the
        process never mixes connections to two files. ``expected`` (from
        ``_expected_identity``) must match too. Raises DatabaseReplacedError
        (after closing).
        """
        try:
            pinned = self._file.identity
            if pinned is not None:
                self.db.guard = pinned
                self.check_identity()
                return
            guard = FileIdentity.of_file(self._file.path, self.read(lambda: read_db_id(self.db.connection())), read_db_id)
            if expected is not None:
                expected.check_file()
                expected.check_db_id(guard.db_id)
            self._file.identity = self.db.guard = guard
        except (DatabaseError, OSError, StoreUnavailable) as exc:
            self.close()
            if isinstance(exc, OSError):
                raise DatabaseError(f"database {self.path}: {exc}") from exc
            raise

    def check_identity(self) -> None:
        """Check that the file at this store's path is still the database it opened.

        Compares the path's device + inode with those seen when it was opened,
        and the ``db_id`` in ``meta`` (read through this thread's connection).
        Cheap (a ``stat`` and one indexed read): workers run it on every
        heartbeat, the supervisor every reap interval. Raises
        :class:`DatabaseReplacedError` when the file was deleted, renamed over
        or rewritten with another database (and on every call after that);
        :class:`StoreUnavailable` when the database cannot be read at all.
        """
        guard = self.db.guard
        if not isinstance(guard, FileIdentity):
            return
        guard.check_file()
        if guard.db_id is None:
            return
        try:
            db_id = self.read(lambda: read_db_id(self.db.connection()))
        except StoreUnavailable:
            if guard.replaced is not None:
                raise DatabaseReplacedError(guard.replaced) from None
            raise
        guard.check_db_id(db_id)

    def abandon_replaced_file(self) -> None:
        """After :class:`DatabaseReplacedError`: empty the old file's write-ahead log, then close.

        SQLite keeps the ``-wal`` of a database file that was deleted or renamed
        over (it never deletes the log of a file that moved), and the next
        process to open the path would replay that log into whatever file is
        there now: the replacement would lose rows and show the old ones.
        Checkpointing through a connection still on the old file with
        ``wal_checkpoint(TRUNCATE)`` leaves nothing to replay. Run it as the
        last use of the store; it never raises (a busy log is left as it is).
        """
        try:
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # a new connection is refused by the guard
        except (peewee.DatabaseError, sqlite3.Error, StoreUnavailable):
            pass
        finally:
            self.close()

    # ----------------------------------------------------------------- transaction hooks

    def _begin(self) -> ContextManager[Any]:
        """``BEGIN IMMEDIATE`` (nested: a savepoint), entered holding the file's writer lock."""
        return self.db.atomic(lock_type="IMMEDIATE")

    def _classify(self, exc: BaseException) -> tuple[Failure, BaseException]:
        """Locked: BUSY. Another operational error (disk full, I/O, read-only file) or a damaged file: UNAVAILABLE."""
        cause = root_cause(exc)
        if isinstance(exc, (peewee.OperationalError, sqlite3.OperationalError)):
            return (Failure.BUSY if is_busy(cause) else Failure.UNAVAILABLE), cause
        if any(marker in str(cause).lower() for marker in DAMAGED_MARKERS):
            return Failure.UNAVAILABLE, cause
        return Failure.INVALID, cause

    def _describe(self, exc: BaseException) -> DatabaseError:
        return describe(self.path, exc)

    def _drop_connection(self) -> None:
        """Close this thread's connection after an error, so the next try starts afresh."""
        try:
            self.close()
        except (peewee.DatabaseError, sqlite3.Error):  # unusable: forget it rather than fail again
            self.db.dispose()

    def _note_wait(self, waited: float) -> None:
        """Remember a long wait for the write lock: the database was unavailable meanwhile."""
        if waited >= STALL_MIN:
            self._stall = (time.time(), waited)

    def _stall_grace(self, now: float, ttl: float) -> float:
        """Seconds by which lease expiry is extended after a recent database stall.

        While the write lock was held elsewhere (a long transaction, a backup,
        another process) no worker could renew its leases. For ``ttl`` seconds
        after a stall this store saw, a lease counts as expired only if it
        expired that much before now, so live holders' delayed heartbeats land
        before anyone takes their work.
        """
        ended, waited = self._stall
        return waited if 0.0 <= now - ended < ttl else 0.0

    def _stale_before(self, now: float, ttl: float) -> float:
        """Leases that expired before this instant are claimable (``now`` less any stall grace)."""
        return now - self._stall_grace(max(now, time.time()), ttl)

    def stall_grace(self, ttl: float, *, now: float | None = None) -> float:
        """Seconds this store saw the database's write lock stall recently (see ``_stall_grace``).

        A heartbeat may be that much late without its worker being frozen.
        """
        return self._stall_grace(self._clock(now), ttl)

    # ----------------------------------------------------------------- claim probe (dialect hook)

    def _runnable(self, names: Sequence[str], now: float, plan: QueuePlan, stale_before: float | None = None) -> str | None:
        """Id of a runnable workflow among ``names``: under the longest-expired lease, else the best due one.

        The stale probe walks only expired leases (``leases(expires_at)``), so
        RUNNING rows under live leases cost nothing. The due probe
        (``ClaimOps._best_due``) seeks ``workflows(status, queue, name,
        priority DESC, run_at)`` per open queue, served name and priority
        level, so its cost does not grow with rows of names this worker does
        not serve, of queues at their limit, or whose ``run_at`` is in the
        future. A due WAITING row competes by its ``wake_at``.
        """
        m = self.m
        names = list(names)
        stale_before = now if stale_before is None else stale_before
        closed = plan.closed_for_worker()
        # Driven from leases (CROSS JOIN fixes the loop order in SQLite): only expired leases
        # are visited, in expiry order, never the RUNNING rows that live workers hold.
        row = self._execute(
            f"runnable_stale/{len(names)}/{len(closed)}",
            lambda: m.Lease.select(m.Workflow.id)
            .join(m.Workflow, peewee.JOIN.CROSS)
            .where(
                (m.Workflow.id == m.Lease.workflow_id)
                & (m.Lease.expires_at < stale_before)
                & (m.Lease.worker_id.is_null(False))
                & (m.Workflow.status == Status.RUNNING.value)
                & (m.Workflow.name.in_(names))
                & (m.Workflow.queue.not_in(closed) if closed else SQL("1 = 1"))
            )
            .order_by(m.Lease.expires_at)
            .limit(1),
            [stale_before, Status.RUNNING.value, *names, *closed, 1],
        ).fetchone()
        if row is not None:
            return row[0]
        return self._best_due(names, now, plan)


