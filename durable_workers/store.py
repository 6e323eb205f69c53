"""Every query and transaction of durable_workers.

The engine, worker, supervisor and client call the named functions of
:class:`Store`; nothing else touches SQL. Each write runs in one short
``BEGIN IMMEDIATE`` transaction (never a deferred read that upgrades to a
write), and a ``database is locked`` that survives SQLite's own busy timeout is
retried here with bounded, jittered backoff, so it never reaches a workflow.

Every write made on behalf of a workflow attempt carries the attempt's
``worker_id`` and fencing ``token`` and checks them against the lease row in
the same transaction: a mismatch raises :class:`~durable_workers.errors.LeaseLost`
and nothing is written.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import random
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import peewee
from peewee import SQL, Value, fn

from .codec import error_message, summarize_error
from .identity import NO_DB_ID, FileIdentity
from .liveness import host_identity, hostname, process_alive, process_start_time
from .errors import (
    DatabaseError,
    DatabaseReplacedError,
    InvalidStateError,
    LeaseLost,
    SchemaVersionError,
    StoreUnavailable,
    WorkflowAborted,
    WorkflowNotFound,
)
from .models import (
    ALL_MODELS,
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseInfo,
    Lease,
    Ledger,
    Status,
    Step,
    StepStatus,
    Worker,
    Workflow,
    database,
)

T = TypeVar("T")

#: SQLite's own wait for a lock, per statement, before it reports SQLITE_BUSY.
BUSY_TIMEOUT_MS = 10_000
#: Further retries of a whole transaction after SQLite gave up waiting.
LOCK_RETRIES = 12
#: How long SQLite itself waits for a lock before the store polls again (see Store._run).
LOCK_POLL_MS = 10
#: Longest pause between two polls for a lock.
LOCK_POLL_MAX = 0.005
#: A wait for the write lock at least this long counts as a database stall (see Store._stall_grace).
STALL_MIN = 0.1

#: One writer at a time per process (see Store._run).
_WRITER = threading.RLock()
#: (path, pragmas) the process-wide database was initialised with.
_OPENED: tuple[str, tuple[tuple[str, Any], ...]] | None = None

#: SQL text of the hot-path statements, compiled once per process by Store._execute.
_STATEMENTS: dict[str, str] = {}

TERMINAL = (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class WorkflowRecord:
    """One row of ``workflows``."""

    id: str
    name: str
    input: dict[str, Any]
    status: str
    result: Any
    error: str | None
    attempts: int
    run_at: float
    created_at: float
    updated_at: float
    crash_at: str | None
    interruption: str | None = None
    failed_step: str | None = None
    #: Columns whose stored JSON does not decode (``input`` must be an object); shown, never run.
    corrupt: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Workflow) -> "WorkflowRecord":
        return cls.from_values(row.__data__)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "WorkflowRecord":
        """Build from a column-name mapping (JSON columns still encoded).

        A column that does not decode is named in ``corrupt`` (its value is
        ``{}`` for the input, ``None`` for the result) instead of raising, so a
        corrupt row can be shown and failed rather than wedging every read.
        """
        data = dict(values)
        corrupt = []
        try:
            data["input"] = json.loads(data["input"]) if data.get("input") else {}
            if not isinstance(data["input"], dict):
                raise ValueError("not an object")
        except (TypeError, ValueError):
            data["input"] = {}
            corrupt.append("input")
        try:
            data["result"] = json.loads(data["result"]) if data.get("result") is not None else None
        except (TypeError, ValueError):
            data["result"] = None
            corrupt.append("result")
        return cls(**data, corrupt=tuple(corrupt))


@dataclass(frozen=True)
class StepRecord:
    """One row of ``steps``. ``output`` and ``error`` are the stored JSON text."""

    workflow_id: str
    step_key: str
    name: str
    scope: str
    position: int
    status: str
    output: str | None
    error: str | None
    attempts: int
    deadline: float | None
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    token: int | None = None
    seq: int = 0
    interruptions: int = 0

    @classmethod
    def from_row(cls, row: Step) -> "StepRecord":
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> "StepRecord":
        """Build from a ``SELECT`` of every ``steps`` column, in model order."""
        return cls(**dict(zip(_STEP_COLUMNS, row)))


@dataclass(frozen=True)
class WorkerRecord:
    """One row of ``workers``."""

    id: str
    host: str
    pid: int
    proc_started_at: float
    started_at: float
    heartbeat_at: float
    state: str
    names: tuple[str, ...]
    concurrency: int
    supervisor_pid: int | None
    host_id: str = ""
    heartbeat_mono: float | None = None
    ttl: float | None = None

    @classmethod
    def from_row(cls, row: Worker) -> "WorkerRecord":
        values = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        values["names"] = tuple(json.loads(row.names or "[]"))
        return cls(**values)


@dataclass(frozen=True)
class LeaseRecord:
    """One row of ``leases``; ``worker_id`` is ``None`` once released."""

    workflow_id: str
    worker_id: str | None
    token: int
    expires_at: float | None
    heartbeat_at: float | None
    renewed_mono: float | None = None

    @classmethod
    def from_row(cls, row: Lease) -> "LeaseRecord":
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


_WORKFLOW_COLUMNS = tuple(f.name for f in Workflow._meta.sorted_fields)
_STEP_COLUMNS = tuple(f.name for f in Step._meta.sorted_fields)


@dataclass(frozen=True)
class Claim:
    """A workflow this worker now owns, with everything needed to run it."""

    workflow: WorkflowRecord
    token: int
    steps: tuple[StepRecord, ...]


@dataclass(frozen=True)
class StepStart:
    """What ``start_step`` decided: the attempt number now running."""

    attempts: int
    previous_error: str | None


# --------------------------------------------------------------------------- helpers


def _holds_lease(workflow_id: str, worker_id: str, token: int) -> Any:
    """Peewee condition: the lease of ``workflow_id`` is held by ``worker_id`` with ``token``."""
    return fn.EXISTS(
        Lease.select(SQL("1")).where(
            (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id) & (Lease.token == token)
        )
    )


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _root_cause(exc: BaseException) -> BaseException:
    """The first database error behind ``exc``.

    After SQLITE_FULL or an I/O error SQLite has already rolled the transaction
    back, so the rollback in peewee's ``atomic`` fails with "cannot rollback -
    no transaction is active"; the real cause is that error's ``__context__``.
    """
    seen = exc
    while isinstance(seen.__context__, (peewee.DatabaseError, sqlite3.Error)) and seen.__context__ is not seen:
        seen = seen.__context__
    return seen


#: Errors of the database file itself; mid-run they make the store unavailable, not a bug.
_DAMAGED_MARKERS = ("not a database", "malformed", "disk i/o", "database or disk is full")


def _describe(path: str, exc: BaseException) -> DatabaseError:
    text = str(exc)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return DatabaseError(f"{path} is not a durable_workers SQLite database ({text})")
    if "readonly" in lowered or "read-only" in lowered:
        return DatabaseError(f"database {path} is read-only; give this user write access to it and its folder")
    if "unable to open" in lowered:
        return DatabaseError(f"cannot open database {path}: check the path and its folder's permissions")
    return DatabaseError(f"database {path}: {text}")


def _read_db_id(conn: sqlite3.Connection) -> str:
    """The ``db_id`` in ``meta`` read on a raw connection (``NO_DB_ID`` when there is none)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return NO_DB_ID
    return row[0] if row else NO_DB_ID


# --------------------------------------------------------------------------- store


class Store:
    """The durable state of workflows, steps, leases and workers in one SQLite file.

    ``Store(path)`` opens (and, with ``create=True``, creates) the database.
    Raises :class:`DatabaseError` with a one-line reason when the file is
    missing, not SQLite, read-only, or of a newer schema version.
    ``lock_patience`` is how many seconds a transaction waits for a lock held
    elsewhere before it raises :class:`StoreUnavailable` (default
    ``busy_timeout_ms * (LOCK_RETRIES + 1)``, 130 s).
    ``readonly=True`` never writes to the file or its folder (SQLite
    ``mode=ro``, or ``immutable=1`` when the WAL index cannot be created):
    for read commands run by a user who may only read; it never creates.

    One connection per thread, from a pool: threads that end should call
    :meth:`close` to hand theirs back. Only one database file is open per
    process (peewee's deferred database); opening another, or the same one
    read-only after read-write (or back), closes the pool.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        create: bool = True,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        lock_patience: float | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.readonly = readonly
        create = create and not readonly
        expected = self._expected_identity()
        self._check_path(create)
        # SQLite waits only LOCK_POLL_MS for a lock; Store._run then polls every few ms
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
        target, connect = self.path, {}
        if readonly:
            # No journal_mode change (a write) and no writes at all on these connections.
            pragmas = {"busy_timeout": poll_ms, "query_only": 1}
            target, connect = self._readonly_uri(), {"uri": True}
        global _OPENED
        if _OPENED != (target, tuple(pragmas.items())):
            if not database.deferred:
                database.close_all()  # pooled connections to another file or with other pragmas
            database.init(target, pragmas=pragmas, timeout=poll_ms / 1000.0, check_same_thread=False, **connect)
            _OPENED = (target, tuple(pragmas.items()))
        self.db = database
        self._rng = random.Random()
        #: (wall time it ended, seconds) of the last wait for the write lock, see _note_wait.
        self._stall: tuple[float, float] = (0.0, 0.0)
        try:
            self._run(lambda: self._prepare_schema(create), write=False)
        except StoreUnavailable as exc:
            self.close()
            raise _describe(self.path, _root_cause(exc.__cause__ or exc)) from exc
        except DatabaseError:
            self.close()
            raise
        self._guard_identity(expected)

    # ----------------------------------------------------------------- lifecycle

    def _readonly_uri(self) -> str:
        """SQLite URI that reads the file without ever writing to it or its folder.

        ``mode=ro`` still needs the WAL index (``-shm``); when it is missing and
        cannot be created (read-only folder) and no ``-wal`` holds unmerged
        commits, the file is read as ``immutable=1`` (no locks, no -shm).
        """
        path = Path(self.path).resolve()
        quoted = urllib.parse.quote(str(path))
        shm, wal = Path(f"{path}-shm"), Path(f"{path}-wal")
        if not shm.exists() and not wal.exists() and not os.access(path.parent, os.W_OK):
            return f"file:{quoted}?immutable=1"
        return f"file:{quoted}?mode=ro"

    def _check_path(self, create: bool) -> None:
        path = Path(self.path)
        if not path.parent.is_dir():
            raise DatabaseError(
                f"database folder {path.parent} does not exist; create it or pass --db PATH"
            )
        if not path.exists():
            if not create:
                raise DatabaseError(
                    f"no database at {path}; submit a workflow first or pass --db PATH"
                )
            return
        if path.is_dir():
            raise DatabaseError(f"{path} is a folder, not a database file; pass --db PATH/durable.db")
        if self.readonly:
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

    def _prepare_schema(self, create: bool) -> None:
        version = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database {self.path} has schema version {version}, newer than this "
                f"durable_workers understands ({SCHEMA_VERSION}); upgrade durable_workers"
            )
        if version == SCHEMA_VERSION:
            return
        tables = set(self.db.get_tables())
        if version == 0 and tables - {"sqlite_sequence"}:
            raise DatabaseError(
                f"{self.path} is a SQLite database of another application; pass --db to a new file"
            )
        if not create:
            if version == 0:
                raise DatabaseError(f"{self.path} has no durable_workers tables yet; submit a workflow first")
            return  # an older schema is read as it is; the next writer migrates it
        with self.db.atomic(lock_type="IMMEDIATE"):
            version = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                self.db.create_tables(ALL_MODELS)
                DatabaseInfo.insert(key="db_id", value=uuid.uuid4().hex).execute()
            else:
                for step_version in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[step_version]:
                        self.db.execute_sql(statement)
                DatabaseInfo.insert(key="db_id", value=uuid.uuid4().hex).on_conflict_ignore().execute()
            self.db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close this thread's connection (safe to call when none is open)."""
        if not self.db.is_closed():
            self.db.close()

    def close_idle(self) -> None:
        """Close this thread's connection and every idle pooled one (at the end of a command).

        The last connection to close checkpoints the WAL and removes the
        ``-wal`` and ``-shm`` files; relying on garbage collection at exit does not
        always get there.
        """
        self.close()
        self.db.close_idle()

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
        """Environment for a child process: its Store on this path refuses any file but this one.

        Empty before the identity is known. A child whose path names another
        file raises :class:`DatabaseReplacedError` from ``Store()`` instead of
        opening or creating it.
        """
        guard = database.guard
        return guard.to_env() if isinstance(guard, FileIdentity) else {}

    def _guard_identity(self, expected: FileIdentity | None = None) -> None:
        """Remember which file this process opened, or check that it is still the one remembered.

        The first Store on a path (per initialisation of the process-wide
        database) installs the guard that every new pooled connection passes;
        a later Store on the same path checks it, so it never mixes
        connections to two files. ``expected`` (from ``_expected_identity``)
        must match too. Raises DatabaseReplacedError (after closing).
        """
        try:
            guard = database.guard
            path = os.path.abspath(self.path)
            if isinstance(guard, FileIdentity) and guard.path == path:
                self.check_identity()
                return
            guard = FileIdentity.of_file(path, self.read(lambda: _read_db_id(self.db.connection())), _read_db_id)
            if expected is not None:
                expected.check_file()
                expected.check_db_id(guard.db_id)
            database.guard = guard
        except (DatabaseError, OSError, StoreUnavailable) as exc:
            self.close()
            if isinstance(exc, OSError):
                raise DatabaseError(f"database {self.path}: {exc}") from exc
            raise

    def check_identity(self) -> None:
        """Check that the file at this Store's path is still the database this process opened.

        Compares the path's device + inode with those seen when it was opened,
        and the ``db_id`` in ``meta`` (read through this thread's connection).
        Cheap (a ``stat`` and one indexed read): workers run it on every
        heartbeat, the supervisor every reap interval. Raises
        :class:`DatabaseReplacedError` when the file was deleted, renamed over
        or rewritten with another database (and on every call after that);
        :class:`StoreUnavailable` when the database cannot be read at all.
        """
        guard = database.guard
        if not isinstance(guard, FileIdentity):
            return
        guard.check_file()
        if guard.db_id is None:
            return
        try:
            db_id = self.read(lambda: _read_db_id(self.db.connection()))
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

    # ----------------------------------------------------------------- transactions

    def _run(self, body: Callable[[], T], *, write: bool, patience: float | None = None) -> T:
        """Run ``body`` in a transaction, retrying ``database is locked``.

        SQLite waits ``LOCK_POLL_MS`` per try; between tries the store pauses a
        few jittered milliseconds, so every waiter keeps asking often and none
        starves behind newcomers. Past ``self._patience`` s, and at once for
        every other operational error (disk full, I/O error, read-only file),
        :class:`StoreUnavailable` carrying the real cause.
        """
        asked = time.monotonic()
        pause = 0.001
        while True:
            try:
                if write:
                    # Threads of this process queue here, in order, instead of
                    # polling SQLite against each other.
                    with _WRITER, self.db.atomic(lock_type="IMMEDIATE"):
                        self._note_wait(time.monotonic() - asked)
                        return body()
                return body()
            except (peewee.OperationalError, sqlite3.OperationalError) as exc:
                cause = _root_cause(exc)
                if not _is_busy(cause):
                    self._drop_connection()
                    raise StoreUnavailable(f"database {self.path}: {cause}", cause=str(cause)) from exc
                waited = time.monotonic() - asked
                if waited >= (self._patience if patience is None else patience):
                    raise StoreUnavailable(
                        f"database {self.path} stayed locked for {waited:.0f} s", cause="database is locked"
                    ) from exc
                time.sleep(pause * (0.5 + self._rng.random()))
                pause = min(pause * 2, LOCK_POLL_MAX)
            except peewee.DatabaseError as exc:
                cause = _root_cause(exc)
                if any(marker in str(cause).lower() for marker in _DAMAGED_MARKERS):
                    self._drop_connection()
                    raise StoreUnavailable(f"database {self.path}: {cause}", cause=str(cause)) from exc
                raise _describe(self.path, exc) from exc

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
        after a stall this process saw, a lease counts as expired only if it
        expired that much before now, so live holders' delayed heartbeats land
        before anyone takes their work.
        """
        ended, waited = self._stall
        return waited if 0.0 <= now - ended < ttl else 0.0

    def _stale_before(self, now: float, ttl: float) -> float:
        """Leases that expired before this instant are claimable (``now`` less any stall grace)."""
        return now - self._stall_grace(max(now, time.time()), ttl)

    def write(self, body: Callable[[], T]) -> T:
        """Run ``body`` inside one ``BEGIN IMMEDIATE`` transaction (with lock retries)."""
        return self._run(body, write=True)

    def read(self, body: Callable[[], T]) -> T:
        """Run a read-only ``body`` (WAL readers never block writers)."""
        return self._run(body, write=False)

    def _fence(self, workflow_id: str, worker_id: str, token: int) -> None:
        held = (
            Lease.select(Lease.token)
            .where((Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id))
            .scalar()
        )
        if held != token:
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")

    def _execute(self, name: str, build: Callable[[], Any], params: Sequence[Any]) -> Any:
        """Run a peewee-built statement whose SQL is compiled once per process.

        ``build()`` returns the peewee query for the current values and
        ``params`` lists those values in the order peewee binds them. The first
        call compiles the query and checks that the two agree; later calls skip
        query building (the hot path: claim, step start/complete, heartbeat).
        Returns the cursor.
        """
        sql = _STATEMENTS.get(name)
        if sql is None:
            sql, bound = build().sql()
            if list(bound) != list(params):
                raise AssertionError(f"statement {name!r}: peewee binds {bound!r}, the store passes {list(params)!r}")
            _STATEMENTS[name] = sql
        return self.db.execute_sql(sql, params)

    # ----------------------------------------------------------------- workflows

    def submit(
        self,
        workflow_id: str,
        name: str,
        input_json: str,
        *,
        run_at: float | None = None,
        crash_at: str | None = None,
        now: float | None = None,
    ) -> tuple[WorkflowRecord, bool]:
        """Insert a PENDING workflow unless the id exists; return (row, created)."""
        now = time.time() if now is None else now

        def body() -> tuple[WorkflowRecord, bool]:
            row = Workflow.get_or_none(Workflow.id == workflow_id)
            if row is not None:
                return WorkflowRecord.from_row(row), False
            Workflow.insert(
                id=workflow_id,
                name=name,
                input=input_json,
                status=Status.PENDING.value,
                attempts=0,
                run_at=now if run_at is None else run_at,
                created_at=now,
                updated_at=now,
                crash_at=crash_at,
            ).execute()
            return WorkflowRecord.from_row(Workflow.get_by_id(workflow_id)), True

        return self.write(body)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The workflow with this id; raises :class:`WorkflowNotFound`."""

        def body() -> WorkflowRecord:
            row = Workflow.get_or_none(Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            return WorkflowRecord.from_row(row)

        return self.read(body)

    def list_workflows(self, status: str | None = None, limit: int = 50) -> list[WorkflowRecord]:
        """The newest workflows first, optionally of one status."""

        def body() -> list[WorkflowRecord]:
            query = Workflow.select().order_by(Workflow.created_at.desc(), Workflow.id.desc())
            if status:
                query = query.where(Workflow.status == status)
            return [WorkflowRecord.from_row(row) for row in query.limit(limit)]

        return self.read(body)

    def count_by_status(self) -> dict[str, int]:
        """Number of workflows per status (every status present, zero included)."""

        def body() -> dict[str, int]:
            counts = {s.value: 0 for s in Status}
            query = Workflow.select(Workflow.status, fn.COUNT(Workflow.id)).group_by(Workflow.status)
            for status, count in query.tuples():
                counts[status] = count
            return counts

        return self.read(body)

    def pending_names(self) -> dict[str, int]:
        """PENDING workflow counts by workflow name."""

        def body() -> dict[str, int]:
            query = (
                Workflow.select(Workflow.name, fn.COUNT(Workflow.id))
                .where(Workflow.status == Status.PENDING.value)
                .group_by(Workflow.name)
            )
            return dict(query.tuples())

        return self.read(body)

    def cancel(self, workflow_id: str, *, now: float | None = None) -> WorkflowRecord:
        """Mark a PENDING or RUNNING workflow CANCELLED and fence out its owner."""
        now = time.time() if now is None else now

        def body() -> WorkflowRecord:
            row = Workflow.get_or_none(Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status in TERMINAL:
                raise InvalidStateError(
                    f"workflow {workflow_id} is already {row.status}; nothing to cancel"
                )
            Workflow.update(status=Status.CANCELLED.value, error="cancelled", updated_at=now).where(
                Workflow.id == workflow_id
            ).execute()
            self._release_lease(workflow_id, bump=True)
            self._clear_step_deadlines(workflow_id)
            return WorkflowRecord.from_row(Workflow.get_by_id(workflow_id))

        return self.write(body)

    def retry(self, workflow_id: str, *, now: float | None = None) -> WorkflowRecord:
        """Make a FAILED or CANCELLED workflow PENDING again.

        Everything recorded before the step failure that ended the workflow
        (``workflows.failed_step``) is kept, failures the workflow caught
        included, so the run takes the same branches; that failure and every
        step first recorded after it are dropped and run afresh. When no step
        failure ended it, every recorded step is kept. Unfinished steps start
        again at attempt 1.
        """
        now = time.time() if now is None else now

        def body() -> WorkflowRecord:
            row = Workflow.get_or_none(Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status not in (Status.FAILED.value, Status.CANCELLED.value):
                raise InvalidStateError(
                    f"workflow {workflow_id} is {row.status}; only FAILED or CANCELLED workflows can be retried"
                )
            self._forget_ending_failure(workflow_id, row.failed_step)
            Workflow.update(
                status=Status.PENDING.value,
                error=None,
                failed_step=None,
                result=None,
                attempts=0,
                run_at=now,
                updated_at=now,
                crash_at=None,
            ).where(Workflow.id == workflow_id).execute()
            return WorkflowRecord.from_row(Workflow.get_by_id(workflow_id))

        return self.write(body)

    def _forget_ending_failure(self, workflow_id: str, failed_step: str | None) -> None:
        """Drop the step whose failure ended the workflow and every step first recorded after it.

        When no step failure ended it (its own exception, a cancel, an
        integrity error), every recorded result and caught failure stays; only
        unfinished steps start again at attempt 1.
        """
        ending = None
        if failed_step is not None:
            ending = (
                Step.select(Step.seq)
                .where((Step.workflow_id == workflow_id) & (Step.step_key == failed_step))
                .scalar()
            )
        if ending:
            Step.delete().where((Step.workflow_id == workflow_id) & (Step.seq >= ending)).execute()
        elif failed_step is not None:  # rows recorded before schema 2 carry no sequence
            Step.delete().where(
                (Step.workflow_id == workflow_id) & (Step.status != StepStatus.COMPLETED.value)
            ).execute()
        Step.update(attempts=0, interruptions=0, deadline=None).where(
            (Step.workflow_id == workflow_id) & (Step.status == StepStatus.RUNNING.value)
        ).execute()

    # ----------------------------------------------------------------- claim and lease

    def _runnable(self, names: Sequence[str], now: float, stale_before: float | None = None) -> str | None:
        """Id of a runnable workflow among ``names``: under the longest-expired lease, else the PENDING one due first.

        The stale probe walks only expired leases (``leases(expires_at)``), so
        RUNNING rows under live leases cost nothing. The pending probe is one range scan of ``workflows(status, name, run_at)``
        per name (first row only) and the earliest of those heads, so its cost
        does not grow with PENDING rows of names this worker does not serve, nor
        with rows whose ``run_at`` is in the future. PENDING work is therefore
        taken in due order (``run_at``; for a workflow submitted to run now that is
        its creation time), not strictly by ``created_at``.
        """
        names = list(names)
        stale_before = now if stale_before is None else stale_before
        running, pending = Status.RUNNING.value, Status.PENDING.value
        # Driven from leases (CROSS JOIN fixes the loop order in SQLite): only expired leases
        # are visited, in expiry order, never the RUNNING rows that live workers hold.
        row = self._execute(
            f"runnable_stale/{len(names)}",
            lambda: Lease.select(Workflow.id)
            .join(Workflow, peewee.JOIN.CROSS)
            .where(
                (Workflow.id == Lease.workflow_id)
                & (Lease.expires_at < stale_before)
                & (Lease.worker_id.is_null(False))
                & (Workflow.status == running)
                & (Workflow.name.in_(names))
            )
            .order_by(Lease.expires_at)
            .limit(1),
            [stale_before, running, *names, 1],
        ).fetchone()
        if row is not None:
            return row[0]

        def due_first() -> peewee.Select:
            heads = [
                peewee.Select(
                    [
                        Workflow.select(Workflow.id, Workflow.run_at)
                        .where((Workflow.status == pending) & (Workflow.name == name) & (Workflow.run_at <= now))
                        .order_by(Workflow.run_at)
                        .limit(1)
                        .alias(f"head{i}")
                    ],
                    [SQL("*")],
                )
                for i, name in enumerate(names)
            ]
            union = functools.reduce(operator.add, heads)  # UNION ALL
            # SQLite returns the bare column (id) of the row that gives MIN(run_at).
            return peewee.Select([union.alias("heads")], [SQL("id"), fn.MIN(SQL("run_at"))]).bind(self.db)

        row = self._execute(
            f"runnable_pending/{len(names)}",
            due_first,
            [value for name in names for value in (pending, name, now, 1)],
        ).fetchone()
        return row[0] if row is not None else None

    def _take(
        self, workflow_id: str, worker_id: str, ttl: float, now: float, max_claims: int, *, real_time: bool = False
    ) -> Claim | None:
        # The lease runs from when the lock was obtained: ``now`` may be from before a long
        # wait for it, and a lease dated from then could be born expired (and taken at once).
        held_from = max(now, time.time()) if real_time else now
        running = Status.RUNNING.value
        self._execute(
            "take_workflow",
            lambda: Workflow.update(status=running, attempts=Workflow.attempts + 1, updated_at=now).where(
                Workflow.id == workflow_id
            ),
            [running, 1, now, workflow_id],
        )
        values = dict(
            zip(
                _WORKFLOW_COLUMNS,
                self._execute(
                    "get_workflow", lambda: Workflow.select().where(Workflow.id == workflow_id), [workflow_id]
                ).fetchone(),
            )
        )
        if values["attempts"] > max_claims:
            message = (
                f"workflow was claimed {values['attempts'] - 1} times without finishing "
                f"(max_claims={max_claims}); inspect it with `durable status {workflow_id}`"
            )
            Workflow.update(
                status=Status.FAILED.value, error=message, updated_at=now, attempts=values["attempts"] - 1
            ).where(Workflow.id == workflow_id).execute()
            self._release_lease(workflow_id, bump=True)
            self._clear_step_deadlines(workflow_id)
            return None
        expires = held_from + ttl
        mono = time.monotonic()
        self._execute(
            "take_lease",
            lambda: Lease.insert(
                workflow_id=workflow_id,
                worker_id=worker_id,
                token=1,
                expires_at=expires,
                heartbeat_at=held_from,
                renewed_mono=mono,
            ).on_conflict(
                conflict_target=[Lease.workflow_id],
                update={
                    Lease.worker_id: worker_id,
                    Lease.token: Lease.token + 1,
                    Lease.expires_at: expires,
                    Lease.heartbeat_at: held_from,
                    Lease.renewed_mono: mono,
                },
            ),
            [workflow_id, worker_id, 1, expires, held_from, mono, worker_id, 1, expires, held_from, mono],
        )
        token = self._execute(
            "lease_token", lambda: Lease.select(Lease.token).where(Lease.workflow_id == workflow_id), [workflow_id]
        ).fetchone()[0]
        steps = self._execute(
            "claim_steps",
            lambda: Step.select().where(Step.workflow_id == workflow_id).order_by(Step.scope, Step.position),
            [workflow_id],
        ).fetchall()
        return Claim(
            workflow=WorkflowRecord.from_values(values),
            token=token,
            steps=tuple(StepRecord.from_tuple(row) for row in steps),
        )

    def _vouch_for_live_holder(self, workflow_id: str, ttl: float, now: float) -> bool:
        """Extend an expired-looking lease whose holder provably lives; True if it did.

        Leases expire by the wall clock, which can jump. A holder on this host
        whose process is alive (PID + create time) and that renewed this very
        lease less than its TTL ago on the host's monotonic clock is
        heartbeating: its lease is extended as its next heartbeat would, instead
        of being taken from under it. A holder that stopped renewing (its attempt
        ended, it is frozen, or it died) gets no such extension.
        """
        row = self._execute(
            "lease_holder",
            lambda: Lease.select(
                Lease.renewed_mono, Worker.host_id, Worker.pid, Worker.proc_started_at, Worker.ttl
            )
            .join(Worker, on=(Worker.id == Lease.worker_id))
            .where((Lease.workflow_id == workflow_id) & Worker.state.in_(["running", "draining"])),
            [workflow_id, "running", "draining"],
        ).fetchone()
        if row is None or row[0] is None or row[1] != host_identity():
            return False
        renewed_mono, _, pid, proc_started_at, holder_ttl = row
        holder_ttl = holder_ttl or ttl
        if time.monotonic() - renewed_mono >= holder_ttl or not process_alive(pid, proc_started_at):
            return False
        Lease.update(expires_at=max(now, time.time()) + holder_ttl).where(Lease.workflow_id == workflow_id).execute()
        return True

    def claim_next(
        self,
        worker_id: str,
        names: Sequence[str],
        *,
        ttl: float,
        max_claims: int = 20,
        now: float | None = None,
    ) -> Claim | None:
        """Claim the oldest runnable workflow among ``names`` for ``worker_id``.

        Runnable means PENDING with ``run_at <= now``, or RUNNING under an
        expired lease. Returns ``None`` when there is nothing to do. A workflow
        claimed more than ``max_claims`` times is failed instead of returned.
        """
        if not names:
            return None
        real_time = now is None
        now = time.time() if now is None else now

        # Probe without the write lock: an idle worker never takes it just to find nothing.
        if self.read(lambda: self._runnable(names, now, self._stale_before(now, ttl))) is None:
            return None

        def body() -> Claim | None:
            # After any wait for the lock, so that a stall just seen extends every lease.
            stale_before = self._stale_before(now, ttl)
            while True:
                workflow_id = self._runnable(names, now, stale_before)
                if workflow_id is None:
                    return None
                if self._vouch_for_live_holder(workflow_id, ttl, now):
                    continue
                claim = self._take(workflow_id, worker_id, ttl, now, max_claims, real_time=real_time)
                if claim is not None:
                    return claim

        return self.write(body)

    def claim_workflow(
        self,
        workflow_id: str,
        worker_id: str,
        *,
        ttl: float,
        max_claims: int = 20,
        now: float | None = None,
    ) -> Claim | None:
        """Claim one given workflow if it is runnable now.

        Returns ``None`` when the workflow is already finished (COMPLETED,
        FAILED, CANCELLED). Raises :class:`InvalidStateError` when another live
        lease holds it.
        """
        real_time = now is None
        now = time.time() if now is None else now

        def body() -> Claim | None:
            row = Workflow.get_or_none(Workflow.id == workflow_id)
            if row is None:
                raise WorkflowNotFound(f"no workflow with id {workflow_id!r}")
            if row.status in TERMINAL:
                return None
            lease = Lease.get_or_none(Lease.workflow_id == workflow_id)
            if (
                row.status == Status.RUNNING.value
                and lease is not None
                and lease.worker_id is not None
                and lease.worker_id != worker_id
                and (lease.expires_at or 0) >= now
            ):
                raise InvalidStateError(
                    f"workflow {workflow_id} is running on worker {lease.worker_id}; "
                    "wait for it or stop that worker"
                )
            return self._take(workflow_id, worker_id, ttl, now, max_claims, real_time=real_time)

        return self.write(body)

    def _release_lease(self, workflow_id: str, *, bump: bool = False) -> None:
        update: dict[Any, Any] = {Lease.worker_id: None, Lease.expires_at: None}
        if bump:
            update[Lease.token] = Lease.token + 1
        Lease.update(update).where(Lease.workflow_id == workflow_id).execute()

    def release(
        self,
        workflow_id: str,
        worker_id: str,
        token: int,
        *,
        reason: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Give a workflow back: PENDING again, claim not counted.

        Used for a drain and an attempt the store interrupted; ``reason`` is kept in ``workflows.interruption``. Fenced:
        returns ``False`` (writing nothing) when the lease is no longer held.
        Step rows this attempt started and never ended (``finished_at`` unset)
        count the start as an interruption, not a crash, and lose their
        deadline. Safe to retry: a second call finds the lease released.
        """
        now = time.time() if now is None else now

        def body() -> bool:
            try:
                self._fence(workflow_id, worker_id, token)
            except LeaseLost:
                return False
            Workflow.update(
                status=Status.PENDING.value,
                attempts=fn.MAX(Workflow.attempts - 1, 0),
                updated_at=now,
                run_at=now,
                crash_at=None,
                interruption=reason,
            ).where((Workflow.id == workflow_id) & (Workflow.status == Status.RUNNING.value)).execute()
            Step.update(interruptions=Step.interruptions + 1, deadline=None).where(
                (Step.workflow_id == workflow_id)
                & (Step.token == token)
                & (Step.status == StepStatus.RUNNING.value)
                & Step.finished_at.is_null()
            ).execute()
            self._release_lease(workflow_id)
            return True

        return self.write(body)

    def get_lease(self, workflow_id: str) -> LeaseRecord | None:
        """The lease row of a workflow, if it was ever claimed."""

        def body() -> LeaseRecord | None:
            row = Lease.get_or_none(Lease.workflow_id == workflow_id)
            return LeaseRecord.from_row(row) if row is not None else None

        return self.read(body)

    # ----------------------------------------------------------------- steps

    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        """Every recorded step of a workflow, by scope then position."""

        def body() -> list[StepRecord]:
            query = Step.select().where(Step.workflow_id == workflow_id).order_by(Step.scope, Step.position)
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def load_step_table(self, workflow_id: str) -> list[StepRecord]:
        """Recorded steps in the order they were first started (for display)."""

        def body() -> list[StepRecord]:
            query = Step.select().where(Step.workflow_id == workflow_id).order_by(
                Step.started_at, Step.scope, Step.position
            )
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def start_step(
        self,
        workflow_id: str,
        step_key: str,
        *,
        name: str,
        scope: str,
        position: int,
        worker_id: str,
        token: int,
        max_attempts: int,
        seq: int = 0,
        timeout: float | None = None,
        new: bool = False,
        now: float | None = None,
    ) -> StepStart:
        """Record that an attempt of a step starts (fenced); return its attempt number.

        ``new`` says the caller knows of no row for this step (the common case:
        one fenced ``INSERT``); otherwise the existing row's attempts are checked.
        ``seq`` orders the step's first recording within the workflow. The row
        remembers the lease ``token`` of the attempt that started it.

        A step whose row shows ``max_attempts`` starts already (crashed attempts
        count, interruptions by drains or forced stops do not) is not started:
        it and its workflow are marked FAILED and :class:`WorkflowAborted` is raised.
        """
        now = time.time() if now is None else now
        deadline = now + timeout if timeout else None
        if new and self._insert_step(workflow_id, step_key, name, scope, position, seq, worker_id, token, deadline, now):
            return StepStart(1, None)
        # Not inserted: the lease is lost, or a row exists after all; the general path decides.

        def body() -> StepStart | str:
            self._fence(workflow_id, worker_id, token)
            row = Step.get_or_none((Step.workflow_id == workflow_id) & (Step.step_key == step_key))
            if row is None:
                Step.insert(
                    workflow_id=workflow_id,
                    step_key=step_key,
                    name=name,
                    scope=scope,
                    position=position,
                    seq=seq,
                    status=StepStatus.RUNNING.value,
                    attempts=1,
                    deadline=deadline,
                    started_at=now,
                    worker_id=worker_id,
                    token=token,
                ).execute()
                return StepStart(1, None)
            if row.attempts - row.interruptions >= max_attempts:
                message = self._poison(workflow_id, step_key, row, max_attempts, now)
                # Returned, not raised: raising here would roll the FAILED marks back
                # and leave the workflow RUNNING under a lease its worker keeps renewing.
                return message
            Step.update(
                status=StepStatus.RUNNING.value,
                attempts=Step.attempts + 1,
                deadline=deadline,
                started_at=now,
                finished_at=None,
                worker_id=worker_id,
                token=token,
            ).where((Step.workflow_id == workflow_id) & (Step.step_key == step_key)).execute()
            return StepStart(row.attempts + 1, row.error)

        started = self.write(body)
        if isinstance(started, str):
            raise WorkflowAborted(started)
        return started

    def _insert_step(
        self,
        workflow_id: str,
        step_key: str,
        name: str,
        scope: str,
        position: int,
        seq: int,
        worker_id: str,
        token: int,
        deadline: float | None,
        now: float,
    ) -> bool:
        """One fenced ``INSERT`` of a new RUNNING step row; False if not inserted."""
        running = StepStatus.RUNNING.value
        return self.write(
            lambda: self._execute(
                "start_new_step",
                lambda: Step.insert_from(
                    Lease.select(
                        Value(workflow_id), Value(step_key), Value(name), Value(scope), Value(position),
                        Value(seq), Value(running), Value(1), Value(deadline), Value(now), Value(worker_id),
                        Value(token),
                    ).where(
                        (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id) & (Lease.token == token)
                    ),
                    [
                        Step.workflow_id, Step.step_key, Step.name, Step.scope, Step.position, Step.seq,
                        Step.status, Step.attempts, Step.deadline, Step.started_at, Step.worker_id, Step.token,
                    ],
                ).on_conflict_ignore(),
                [workflow_id, step_key, name, scope, position, seq, running, 1, deadline, now, worker_id, token,
                 workflow_id, worker_id, token],
            ).rowcount
        ) == 1

    def _poison(self, workflow_id: str, step_key: str, row: Step, max_attempts: int, now: float) -> str:
        """Mark a step that used up its attempts, and its workflow, FAILED; return the reason."""
        crashes = row.attempts - row.interruptions
        if row.error:
            message = (
                f"step {step_key} failed {crashes} attempts (max_attempts={max_attempts}); "
                f"last error: {summarize_error(row.error)}"
            )
        else:
            message = (
                f"step {step_key} crashed the worker {crashes} times "
                f"(max_attempts={max_attempts}); it was not started again"
            )
        error = error_message("durable_workers.errors.WorkflowAborted", message)
        Step.update(status=StepStatus.FAILED.value, error=error, finished_at=now, deadline=None).where(
            (Step.workflow_id == workflow_id) & (Step.step_key == step_key)
        ).execute()
        self._finish(workflow_id, Status.FAILED, None, message, now, failed_step=step_key)
        return message

    def complete_step(
        self,
        workflow_id: str,
        step_key: str,
        output_json: str,
        *,
        worker_id: str,
        token: int,
        now: float | None = None,
    ) -> None:
        """Record a step's result (fenced)."""
        now = time.time() if now is None else now
        completed = StepStatus.COMPLETED.value
        self._fenced_write(
            workflow_id,
            "complete_step",
            lambda: Step.update(
                status=completed, output=output_json, error=None, deadline=None, finished_at=now, worker_id=worker_id
            ).where((Step.workflow_id == workflow_id) & (Step.step_key == step_key) & _holds_lease(workflow_id, worker_id, token)),
            [completed, output_json, None, None, now, worker_id, workflow_id, step_key, workflow_id, worker_id, token],
        )

    def fail_step(
        self,
        workflow_id: str,
        step_key: str,
        error_json: str,
        *,
        final: bool,
        worker_id: str,
        token: int,
        overran: bool = False,
        now: float | None = None,
    ) -> None:
        """Record a step attempt's error (fenced); ``final`` marks the step FAILED.

        ``overran`` (a timed-out execution that may still be running, retries
        left) keeps the row's deadline, so the supervisor kills that worker
        after the grace if it has not exited by then.
        """
        now = time.time() if now is None else now
        status = StepStatus.FAILED.value if final else StepStatus.RUNNING.value
        where = lambda: (Step.workflow_id == workflow_id) & (Step.step_key == step_key) & _holds_lease(  # noqa: E731
            workflow_id, worker_id, token
        )
        if overran and not final:
            self._fenced_write(
                workflow_id,
                "fail_step_overran",
                lambda: Step.update(status=status, error=error_json, finished_at=now).where(where()),
                [status, error_json, now, workflow_id, step_key, workflow_id, worker_id, token],
            )
            return
        self._fenced_write(
            workflow_id,
            "fail_step",
            lambda: Step.update(status=status, error=error_json, deadline=None, finished_at=now).where(where()),
            [status, error_json, None, now, workflow_id, step_key, workflow_id, worker_id, token],
        )

    def note_interruption(self, workflow_id: str, worker_id: str, token: int, reason: str) -> None:
        """Record why this attempt gives up without an outcome (fenced; ``workflows.interruption``)."""
        self._fenced_write(
            workflow_id,
            "note_interruption",
            lambda: Workflow.update(interruption=reason).where(
                (Workflow.id == workflow_id) & _holds_lease(workflow_id, worker_id, token)
            ),
            [reason, workflow_id, workflow_id, worker_id, token],
        )

    def _fenced_write(self, workflow_id: str, name: str, build: Callable[[], Any], params: Sequence[Any]) -> None:
        """One fenced statement in its own transaction; no row changed means the lease is lost."""
        if self.write(lambda: self._execute(name, build, params).rowcount) == 0:
            raise LeaseLost(f"workflow {workflow_id}: the lease is no longer held")

    def note_step_timeout(
        self,
        workflow_id: str,
        step_key: str,
        *,
        worker_id: str | None,
        token: int | None = None,
        overrun: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Record on a RUNNING step that its worker was killed for overrunning its timeout.

        Written by the supervisor (not fenced): the step stays RUNNING and its
        next start counts the killed attempt. ``overrun`` is the seconds the
        supervisor saw it run (its own monotonic clock); without it, the wall
        clock since ``started_at``. Nothing is written, and ``False`` returned,
        unless the row is still RUNNING under ``worker_id`` and that worker
        still holds the workflow's lease (with ``token``, when given and the
        row records one): a later attempt or a cancel leaves it alone.
        """
        now = time.time() if now is None else now

        def body() -> bool:
            row = Step.get_or_none((Step.workflow_id == workflow_id) & (Step.step_key == step_key))
            if row is None or row.status != StepStatus.RUNNING.value or row.worker_id != worker_id:
                return False
            lease = Lease.get_or_none(Lease.workflow_id == workflow_id)
            if lease is None or lease.worker_id != worker_id:
                return False
            if token is not None and row.token is not None and row.token != token:
                return False
            ran = overrun if overrun is not None else now - (row.started_at or now)
            error = json.dumps(
                {
                    "type": "durable_workers.errors.StepTimeoutError",
                    "message": f"step {step_key} ran {ran:.1f}s, past its timeout; its worker was killed",
                    "args": None,
                }
            )
            Step.update(error=error, deadline=None).where(
                (Step.workflow_id == workflow_id) & (Step.step_key == step_key)
            ).execute()
            return True

        return self.write(body)

    def _clear_step_deadlines(self, workflow_id: str, worker_id: str | None = None) -> None:
        """Inside a write: no RUNNING step of the workflow (of ``worker_id``'s attempts) has a deadline now."""
        condition = (Step.workflow_id == workflow_id) & (Step.status == StepStatus.RUNNING.value)
        if worker_id is not None:
            condition &= Step.worker_id == worker_id
        Step.update(deadline=None).where(condition & Step.deadline.is_null(False)).execute()

    def _finish(
        self, workflow_id: str, status: Status, result_json: str | None, error: str | None, now: float,
        failed_step: str | None = None,
    ) -> None:  # fmt: skip
        Workflow.update(
            status=status.value, result=result_json, error=error, failed_step=failed_step, updated_at=now
        ).where(Workflow.id == workflow_id).execute()
        self._release_lease(workflow_id)

    def finish_workflow(
        self,
        workflow_id: str,
        status: Status,
        *,
        result_json: str | None = None,
        error: str | None = None,
        failed_step: str | None = None,
        worker_id: str,
        token: int,
        now: float | None = None,
    ) -> None:
        """Record a workflow's end (COMPLETED or FAILED) and release its lease (fenced).

        ``failed_step`` names the step whose failure ended the workflow, if one
        did (what :meth:`retry` drops).
        """
        now = time.time() if now is None else now

        def body() -> bool:
            released = self._execute(
                "release_held_lease",
                lambda: Lease.update(worker_id=None, expires_at=None).where(
                    (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id) & (Lease.token == token)
                ),
                [None, None, workflow_id, worker_id, token],
            ).rowcount
            if not released:
                return False
            self._execute(
                "finish_workflow",
                lambda: Workflow.update(
                    status=status.value, result=result_json, error=error, failed_step=failed_step, updated_at=now
                ).where(Workflow.id == workflow_id),
                [status.value, result_json, error, now, failed_step, workflow_id],
            )
            return True

        if not self.write(body):
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")

    # ----------------------------------------------------------------- workers

    def register_worker(
        self,
        worker_id: str,
        *,
        names: Iterable[str],
        concurrency: int = 1,
        supervisor_pid: int | None = None,
        pid: int | None = None,
        ttl: float | None = None,
        now: float | None = None,
    ) -> WorkerRecord:
        """Insert this process's worker row (host identity, pid, psutil create time, TTL)."""
        now = time.time() if now is None else now
        pid = os.getpid() if pid is None else pid

        def body() -> WorkerRecord:
            Worker.replace(
                id=worker_id,
                host=hostname(),
                pid=pid,
                proc_started_at=process_start_time(pid),
                started_at=now,
                heartbeat_at=now,
                state="running",
                names=json.dumps(sorted(set(names))),
                concurrency=concurrency,
                supervisor_pid=supervisor_pid,
                host_id=host_identity(),
                heartbeat_mono=time.monotonic(),
                ttl=ttl,
            ).execute()
            return WorkerRecord.from_row(Worker.get_by_id(worker_id))

        return self.write(body)

    def heartbeat(
        self,
        worker_id: str,
        *,
        ttl: float,
        leases: Iterable[tuple[str, int]] = (),
        state: str | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Renew the worker row and exactly the ``(workflow_id, token)`` leases given.

        Returns the workflow ids whose lease was not renewed because this
        worker no longer holds it with that token (the attempt must stop:
        :class:`LeaseLost`). A lease of an attempt that already ended is never
        renewed, so it expires even while the process lives. The new expiry
        counts from when the write lock was obtained, not from when the
        renewal was asked for (it may have waited for the lock). Safe to retry.
        """
        pairs = list(leases)

        def body() -> list[str]:
            at = time.time() if now is None else now
            if state is not None:
                Worker.update(state=state).where(Worker.id == worker_id).execute()
            mono = time.monotonic()
            self._execute(
                "beat_worker",
                lambda: Worker.update(heartbeat_at=at, heartbeat_mono=mono).where(Worker.id == worker_id),
                [at, mono, worker_id],
            )
            expires = at + ttl
            lost = []
            for workflow_id, token in pairs:
                renewed = self._execute(
                    "beat_lease",
                    lambda: Lease.update(expires_at=expires, heartbeat_at=at, renewed_mono=mono).where(
                        (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id) & (Lease.token == token)
                    ),
                    [expires, at, mono, workflow_id, worker_id, token],
                ).rowcount
                if not renewed:
                    lost.append(workflow_id)
            return lost

        return self.write(body)

    def set_worker_state(self, worker_id: str, state: str) -> None:
        """Record a worker's lifecycle state (running, draining, stopped, dead)."""
        self.write(lambda: Worker.update(state=state).where(Worker.id == worker_id).execute())

    def expire_worker(self, worker_id: str, *, state: str = "dead", keep: Iterable[str] = ()) -> list[str]:
        """Mark a worker gone and make its leases immediately reclaimable.

        The deadlines of the RUNNING steps it held are cleared (their attempts
        are over). Leases of the workflows in ``keep`` are left to expire by
        their TTL (a worker that exits with a timed-out step's thread still
        alive: only once the process is gone may the retry start). Returns the
        ids of the workflows whose lease was expired.
        """
        kept = set(keep)

        def body() -> list[str]:
            Worker.update(state=state).where(Worker.id == worker_id).execute()
            held = [
                row.workflow_id
                for row in Lease.select(Lease.workflow_id).where(Lease.worker_id == worker_id)
                if row.workflow_id not in kept
            ]
            for workflow_id in held:
                Lease.update(expires_at=0).where(
                    (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id)
                ).execute()
                self._clear_step_deadlines(workflow_id, worker_id)  # its attempts are over
            return held

        return self.write(body)

    def list_workers(self, *, alive_only: bool = False) -> list[WorkerRecord]:
        """Worker rows, newest first."""

        def body() -> list[WorkerRecord]:
            query = Worker.select().order_by(Worker.started_at.desc())
            if alive_only:
                query = query.where(Worker.state.in_(["running", "draining"]))
            return [WorkerRecord.from_row(row) for row in query]

        return self.read(body)

    def get_worker(self, worker_id: str) -> WorkerRecord | None:
        """The row of a worker, or ``None`` if it never registered."""

        def body() -> WorkerRecord | None:
            row = Worker.get_or_none(Worker.id == worker_id)
            return WorkerRecord.from_row(row) if row is not None else None

        return self.read(body)

    def leases_by_worker(self) -> dict[str, list[LeaseRecord]]:
        """Held leases grouped by worker id."""

        def body() -> dict[str, list[LeaseRecord]]:
            held: dict[str, list[LeaseRecord]] = {}
            for row in Lease.select().where(Lease.worker_id.is_null(False)):
                held.setdefault(row.worker_id, []).append(LeaseRecord.from_row(row))
            return held

        return self.read(body)

    def timed_steps(self, *, overdue_at: float | None = None) -> list[StepRecord]:
        """RUNNING steps with a deadline whose attempt still holds the workflow's lease.

        Held means the lease's ``worker_id`` is the step row's, and its token is
        the row's (a row that records no token matches on ``worker_id`` only).
        With ``overdue_at``, only the steps whose deadline is before it.
        """

        def body() -> list[StepRecord]:
            condition = (
                (Step.status == StepStatus.RUNNING.value)
                & Step.deadline.is_null(False)
                & (Lease.worker_id == Step.worker_id)
                & (Step.token.is_null() | (Step.token == Lease.token))
            )
            if overdue_at is not None:
                condition &= Step.deadline < overdue_at
            query = Step.select(Step).join(Lease, on=(Lease.workflow_id == Step.workflow_id)).where(condition)
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def overdue_steps(self, *, now: float | None = None) -> list[StepRecord]:
        """RUNNING steps past their deadline (wall clock) whose attempt still holds the lease."""
        return self.timed_steps(overdue_at=time.time() if now is None else now)

    def interrupt_workers(self, worker_ids: Sequence[str], *, now: float | None = None) -> list[str]:
        """Record a forced stop of these workers, just before they are SIGKILLed.

        In one transaction, for every lease they hold: the RUNNING step of that
        attempt (same worker, same token or no token recorded) gets
        ``interruptions += 1`` and no deadline, so its next start does not count
        this one against ``max_attempts``; the workflow's claim is uncounted
        (``attempts - 1``, as :meth:`release` does; the next claim counts it
        again); the lease expires at once (``expires_at = 0``), so any worker
        can claim the workflow, and its next claim's new token fences the
        killed workers out. Returns the workflow ids. Raises
        ``StoreUnavailable`` like any write.
        """
        now = time.time() if now is None else now
        ids = list(worker_ids)
        if not ids:
            return []

        def body() -> list[str]:
            held = list(Lease.select(Lease.workflow_id, Lease.worker_id, Lease.token).where(Lease.worker_id.in_(ids)).tuples())
            for workflow_id, worker_id, token in held:
                Step.update(interruptions=Step.interruptions + 1, deadline=None).where(
                    (Step.workflow_id == workflow_id)
                    & (Step.status == StepStatus.RUNNING.value)
                    & (Step.worker_id == worker_id)
                    & (Step.token.is_null() | (Step.token == token))
                ).execute()
                Workflow.update(attempts=fn.MAX(Workflow.attempts - 1, 0), updated_at=now).where(
                    (Workflow.id == workflow_id) & (Workflow.status == Status.RUNNING.value)
                ).execute()
                Lease.update(expires_at=0).where(
                    (Lease.workflow_id == workflow_id) & (Lease.worker_id == worker_id)
                ).execute()
            return [workflow_id for workflow_id, _, _ in held]

        return self.write(body)

    def prune_workers(self, *, older_than: float, now: float | None = None) -> int:
        """Delete ``dead`` and ``stopped`` worker rows whose last heartbeat is older than ``older_than`` s.

        Live-looking rows (running, draining) are kept whatever their age: the
        reaper decides about those. Returns the number of rows deleted.
        """
        cutoff = (time.time() if now is None else now) - older_than
        return self.write(
            lambda: Worker.delete()
            .where(Worker.state.in_(["dead", "stopped"]) & (Worker.heartbeat_at < cutoff))
            .execute()
        )

    def writable(self, within: float) -> bool:
        """True when this process can take the write lock within ``within`` seconds (writes nothing).

        The supervisor asks before it kills a worker for a late heartbeat: when
        the database itself cannot be written, heartbeats are late everywhere
        and the worker is not frozen.
        """
        try:
            self._run(lambda: None, write=True, patience=within)
        except StoreUnavailable:
            return False
        return True

    def stall_grace(self, ttl: float, *, now: float | None = None) -> float:
        """Seconds this process saw the database's write lock stall recently (see ``_stall_grace``).

        A heartbeat may be that much late without its worker being frozen.
        """
        return self._stall_grace(time.time() if now is None else now, ttl)

    # ----------------------------------------------------------------- chaos experiment
    # Used only by ``durable chaos`` (durable_workers/chaos/, checkflows.py) and its
    # stress tests: the side-effect ledger its check workflows append to, the
    # read-outs of its verdict, and its lock fault. The engine never calls these.

    def ledger_create(self) -> None:
        """Create the ``chaos_ledger`` table if it is missing."""
        self.write(lambda: self.db.create_tables([Ledger], safe=True))

    def ledger_append(
        self,
        workflow_id: str,
        step_key: str,
        *,
        value_json: str | None,
        worker_id: str | None,
        token: int | None,
        attempt: int | None,
    ) -> None:
        """Append one execution by this process to the ledger, in its own transaction (a side effect).

        Deliberately not fenced: it stands for an external system. It records the
        lease token and the step's status as they are when the row is written, so
        that executions by fenced workers and of already COMPLETED steps show.
        """

        def body() -> None:
            lease_token = Lease.select(Lease.token).where(Lease.workflow_id == workflow_id).scalar()
            step_status = (
                Step.select(Step.status)
                .where((Step.workflow_id == workflow_id) & (Step.step_key == step_key))
                .scalar()
            )
            Ledger.insert(
                workflow_id=workflow_id,
                step_key=step_key,
                pid=os.getpid(),
                worker_id=worker_id,
                token=token,
                attempt=attempt,
                value=value_json,
                at=time.time(),
                lease_token=lease_token,
                step_status=step_status,
            ).execute()

        self.write(body)

    def ledger_rows(self) -> list["LedgerRecord"]:
        """Every ledger row, in the order written."""

        def body() -> list[LedgerRecord]:
            return [LedgerRecord.from_row(row) for row in Ledger.select().order_by(Ledger.id)]

        return self.read(body)

    def ledger_executions(self, workflow_id: str, step_key: str) -> int:
        """How many executions of step ``step_key`` of ``workflow_id`` the ledger holds (0 if none)."""
        return self.read(
            lambda: Ledger.select()
            .where((Ledger.workflow_id == workflow_id) & (Ledger.step_key == step_key))
            .count()
        )

    def ledger_counts(self) -> dict[tuple[str, str], int]:
        """Executions per ``(workflow_id, step_key)`` (attempt markers ``@...`` left out)."""

        def body() -> dict[tuple[str, str], int]:
            query = (
                Ledger.select(Ledger.workflow_id, Ledger.step_key, fn.COUNT(Ledger.id))
                .where(~Ledger.step_key.startswith("@"))
                .group_by(Ledger.workflow_id, Ledger.step_key)
            )
            return {(wf, key): count for wf, key, count in query.tuples()}

        return self.read(body)

    def workflows_named(self, names: Sequence[str]) -> list[WorkflowRecord]:
        """Every workflow with one of these names, oldest first."""

        def body() -> list[WorkflowRecord]:
            query = Workflow.select().where(Workflow.name.in_(list(names))).order_by(Workflow.created_at)
            return [WorkflowRecord.from_row(row) for row in query]

        return self.read(body)

    def steps_of_workflows_named(self, names: Sequence[str]) -> list[StepRecord]:
        """Every step row of the workflows with one of these names."""

        def body() -> list[StepRecord]:
            query = (
                Step.select(Step)
                .join(Workflow, on=(Workflow.id == Step.workflow_id))
                .where(Workflow.name.in_(list(names)))
            )
            return [StepRecord.from_row(row) for row in query]

        return self.read(body)

    def status_counts_by_name(self) -> dict[str, dict[str, int]]:
        """``{name: {status: count}}`` over all workflows."""

        def body() -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            query = Workflow.select(Workflow.name, Workflow.status, fn.COUNT(Workflow.id)).group_by(
                Workflow.name, Workflow.status
            )
            for name, status, count in query.tuples():
                counts.setdefault(name, {})[status] = count
            return counts

        return self.read(body)

    def workflow_ids(self) -> list[str]:
        """The id of every workflow row (duplicates would show twice)."""
        return self.read(lambda: [row[0] for row in Workflow.select(Workflow.id).tuples()])

    def hold_write_lock(self, seconds: float, on_locked: Callable[[float], None] | None = None) -> float:
        """Hold the database's write lock (``BEGIN IMMEDIATE``) for ``seconds``; return when it was taken.

        The chaos experiment's lock fault: every other writer waits meanwhile.
        """

        def body() -> float:
            Worker.select(fn.COUNT(Worker.id)).scalar()
            locked_at = time.time()
            if on_locked is not None:
                on_locked(locked_at)
            threading.Event().wait(seconds)
            return locked_at

        return self.write(body)


@dataclass(frozen=True)
class LedgerRecord:
    """One row of the chaos experiment's ``chaos_ledger``."""

    id: int
    workflow_id: str
    step_key: str
    pid: int
    worker_id: str | None
    token: int | None
    attempt: int | None
    value: str | None
    at: float
    lease_token: int | None
    step_status: str | None

    @classmethod
    def from_row(cls, row: Ledger) -> "LedgerRecord":
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


__all__ = [
    "Claim",
    "LeaseRecord",
    "LedgerRecord",
    "Store",
    "StepRecord",
    "StepStart",
    "WorkerRecord",
    "WorkflowRecord",
    "summarize_error",
]
