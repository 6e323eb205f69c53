"""The store contract, and the transaction skeleton every dialect fills in.

:class:`Store` is the only API the engine, worker, supervisor, client and CLI
see. Its operations are written once, against the store's own bound models
(``self.m``, see ``schema.bind``), in the area modules of this package
(``workflows``, ``claims``, ``steps``, ``workers``, ``ledger``). A dialect
(``sqlite.SqliteStore``, ``postgres.PostgresStore``) supplies the database object,
how a write transaction begins, how an error is classified, the clock
(:meth:`Store.now`) and the statements where the dialects differ (the claim's
runnable probe; fencing and row locks, see :meth:`Store._fence`).

What each operation reads, writes and raises is the table in :mod:`.contract`.
"""

from __future__ import annotations

import contextlib
import enum
import time
from typing import Any, Callable, ContextManager, Sequence, TypeVar

import peewee
from peewee import SQL, fn

from .. import clock as _clock
from ..errors import DatabaseError, LeaseLost, StoreUnavailable
from .schema import Models

T = TypeVar("T")

#: SQL text of the hot-path statements, keyed by (dialect, statement name); see Store._execute.
_STATEMENTS: dict[tuple[str, str], str] = {}




def _one_line(cause: BaseException) -> str:
    """An error's text on one line (libpq's messages carry hints on further lines)."""
    return " ".join(str(cause).split())


class Failure(enum.Enum):
    """How a dialect classifies a database error raised inside a transaction."""

    #: Locked by another writer: wait and run the whole body again, up to the store's patience.
    BUSY = "busy"
    #: Serialization failure or deadlock: the server rolled the transaction back, so any body
    #: runs again (up to the store's patience; PostgreSQL).
    CONFLICT = "conflict"
    #: The connection broke before COMMIT was sent: nothing was written; run any body again on a
    #: new connection (at most ``LOST_RETRIES`` times; PostgreSQL).
    LOST = "lost"
    #: The connection broke during COMMIT: the commit may or may not have happened. Run again only
    #: a body marked safe (``retry_safe`` in CONTRACT); otherwise StoreUnavailable (PostgreSQL).
    AMBIGUOUS = "ambiguous"
    #: The database is unreachable or damaged: drop the connection, raise StoreUnavailable.
    UNAVAILABLE = "unavailable"
    #: Anything else: a one-line DatabaseError (a bug or a foreign database, not an outage).
    INVALID = "invalid"


#: Shortest and longest pause between two tries of a busy transaction.
RETRY_PAUSE_MIN = 0.001
#: A write that waited this long (s) for its lock, or retried at all, counts as a lock wait.
LOCK_WAIT_NOTED_S = 0.01
#: Called with the seconds a write transaction waited for a lock held elsewhere (``metrics`` adds one).
lock_wait_hooks: list[Callable[[float], None]] = []
RETRY_PAUSE_MAX = 0.005
#: How many times a transaction whose connection broke is run again on a new connection.
LOST_RETRIES = 2


class StoreBase:
    """The transaction skeleton and dialect hooks under every store (see ``Store``).

    A dialect subclass sets ``path``, ``db`` (its own database object, never
    shared), ``m`` (models bound to it), ``_patience`` and ``_rng``, and fills in
    the hooks below.
    """

    #: Dialect name, part of the statement cache key.
    dialect: str = ""
    #: Exceptions a transaction body may raise that the dialect classifies (``_classify``).
    errors: tuple[type[BaseException], ...] = (peewee.DatabaseError,)

    path: str
    db: peewee.Database
    m: Models
    readonly: bool
    _patience: float
    _rng: Any

    # ----------------------------------------------------------------- dialect hooks

    def now(self) -> float:
        """The store's clock (UNIX seconds) for leases, deadlines and wake times (a test's fake clock if installed)."""
        fake = _clock.installed
        return time.time() if fake is None else fake.now()

    def _clock(self, now: float | None) -> float:
        """``now`` when a caller gave one (tests, replays), else :meth:`now`."""
        return self.now() if now is None else now

    #: Entered before every write transaction begins (SQLite: the file's in-process writer lock).
    _writer: ContextManager[Any] = contextlib.nullcontext()

    def _begin(self) -> ContextManager[Any]:
        """Context manager: one write transaction, entered with ``_writer`` held."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> tuple[Failure, BaseException]:
        """How to handle ``exc`` (one of ``errors``), with the root cause to report."""
        raise NotImplementedError

    def _describe(self, exc: BaseException) -> DatabaseError:
        """A one-line DatabaseError for an INVALID failure."""
        return DatabaseError(f"database {self.path}: {exc}")

    def _note_wait(self, waited: float) -> None:
        """Called inside every write with the seconds it waited to begin (SQLite: stall grace)."""

    def _stale_before(self, now: float, ttl: float) -> float:
        """Leases that expired before this instant are claimable (``now``; SQLite: less any stall grace)."""
        return now

    def stall_grace(self, ttl: float, *, now: float | None = None) -> float:
        """Seconds this process saw the database's write lock stall recently (0: no stalls seen).

        A heartbeat may be that much late without its worker being frozen.
        """
        return 0.0

    def _drop_connection(self) -> None:
        """Close this thread's connection after an error, so the next try starts afresh."""
        try:
            self.close()
        except self.errors:  # unusable: forget it rather than fail again
            self.db.dispose()  # type: ignore[attr-defined]

    def _fence(self, workflow_id: str, worker_id: str, token: int, *, exclusive: bool = False) -> None:
        """Inside a write: raise LeaseLost unless ``worker_id`` holds the lease with ``token``.

        The portable form (a read of the lease row) is safe where writers are
        serialised (SQLite's ``BEGIN IMMEDIATE``); a dialect with concurrent
        writers must lock the lease row here instead (``exclusive``: the
        transaction goes on to update that row).
        """
        lease = self.m.Lease
        held = (
            lease.select(lease.token)
            .where((lease.workflow_id == workflow_id) & (lease.worker_id == worker_id))
            .scalar()
        )
        if held != token:
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")

    def _holds_lease(self, workflow_id: str, worker_id: str, token: int) -> Any:
        """Peewee condition for a one-statement fenced write: the lease is held with ``token``."""
        lease = self.m.Lease
        return fn.EXISTS(
            lease.select(SQL("1")).where(
                (lease.workflow_id == workflow_id) & (lease.worker_id == worker_id) & (lease.token == token)
            )
        )

    def _share_locked(self, query: Any) -> Any:
        """``query`` over the lease row locking it ``FOR SHARE`` (a fenced write's source; unchanged where writers are serialised)."""
        return query

    def _write_one(
        self, name: str, build: Callable[[], Any], params: Sequence[Any], *, confirm: Callable[[], int | None] | None = None
    ) -> int:
        """One hot-path statement (see :meth:`_execute`) as a write of its own; the rows it changed.

        Without ``confirm`` the statement must be safe to run again after an
        ambiguous commit; with it, as :meth:`write`'s ``confirm``.
        """
        rows: int = self.write(lambda: self._execute(name, build, params).rowcount, safe=confirm is None, confirm=confirm)
        return rows

    def _lock_lease(self, workflow_id: str) -> None:
        """Inside a write: lock the workflow's lease row, if any, before its workflow row (no-op where writers are serialised)."""

    def _lock_workflow(self, workflow_id: str) -> None:
        """Inside a write: lock the workflow row before reading its status (no-op where writers are serialised)."""

    def _notify(self, workflow_id: str) -> None:
        """Inside a write: tell listening workers that ``workflow_id`` may be runnable (delivered at commit; no-op without LISTEN)."""

    def _locking(self, query: Any) -> Any:
        """``query`` locking the rows it reads until the transaction ends (``FOR UPDATE``; unchanged where writers are serialised)."""
        return query

    def _greatest(self, a: Any, b: Any) -> Any:
        """Peewee expression: the larger of two values (SQLite's two-argument ``MAX``)."""
        return fn.MAX(a, b)

    # ----------------------------------------------------------------- transactions

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
        self.db.reclaim_orphans()  # type: ignore[attr-defined]  # threads that ended without closing theirs
        self.db.close_idle()

    @property
    def lock_patience(self) -> float:
        """Seconds one transaction waits for a lock held elsewhere before it raises :class:`StoreUnavailable`."""
        return self._patience

    def writable(self, within: float) -> bool:
        """True when this process can begin a write within ``within`` seconds (writes nothing).

        The supervisor asks before it kills a worker for a late heartbeat: when
        the database itself cannot be written, heartbeats are late everywhere
        and the worker is not frozen.
        """
        try:
            self._run(lambda: None, write=True, safe=True, patience=within)
        except StoreUnavailable:
            return False
        return True

    def write(self, body: Callable[[], T], *, safe: bool = False, confirm: Callable[[], T | None] | None = None) -> T:
        """Run ``body`` inside one write transaction (retried while the database is busy).

        ``safe`` marks a body that may run again after an ambiguous commit (see
        Failure.AMBIGUOUS). ``confirm``, for a body that is not, is asked after an
        ambiguous commit (on a new connection): the body's result if its commit
        is found, else ``None`` and the body runs again.
        """
        return self._run(body, write=True, safe=safe, confirm=confirm)

    def read(self, body: Callable[[], T]) -> T:
        """Run a read-only ``body`` (no transaction is begun; readers never block writers)."""
        return self._run(body, write=False, safe=True)

    def _run(
        self,
        body: Callable[[], T],
        *,
        write: bool,
        safe: bool,
        patience: float | None = None,
        confirm: Callable[[], T | None] | None = None,
    ) -> T:
        """Run ``body`` (in a write transaction when ``write``), classifying what goes wrong.

        BUSY and CONFLICT: pause a few jittered milliseconds and try again, so
        every waiter keeps asking often and none starves behind newcomers; past
        ``self._patience`` s, :class:`StoreUnavailable`. LOST: again on a new
        connection, at most ``LOST_RETRIES`` times; AMBIGUOUS likewise when
        ``safe``, else ``confirm`` decides (its result, or run again), else
        :class:`StoreUnavailable`. UNAVAILABLE: :class:`StoreUnavailable` carrying the real
        cause. INVALID: a one-line :class:`DatabaseError`.
        """
        asked = time.monotonic()
        pause = RETRY_PAUSE_MIN
        lost = 0
        while True:
            try:
                if write:
                    with self._writer, self._begin():
                        waited = time.monotonic() - asked
                        self._note_wait(waited)
                        if waited >= LOCK_WAIT_NOTED_S or pause > RETRY_PAUSE_MIN:
                            for hook in lock_wait_hooks:
                                hook(waited)
                        return body()
                return body()
            except self.errors as exc:
                failure, cause = self._classify(exc)
                if failure is Failure.INVALID:
                    raise self._describe(exc) from exc
                if failure in (Failure.LOST, Failure.AMBIGUOUS):
                    self._drop_connection()
                    lost += 1
                    unsafe = failure is Failure.AMBIGUOUS and not safe and confirm is None
                    if lost > LOST_RETRIES or unsafe:
                        raise StoreUnavailable(f"database {self.path}: {_one_line(cause)}", cause=_one_line(cause)) from exc
                    if failure is Failure.AMBIGUOUS and not safe and confirm is not None:
                        found = self._run(confirm, write=False, safe=True)
                        if found is not None:
                            return found
                    continue
                if failure is Failure.UNAVAILABLE:
                    self._drop_connection()
                    raise StoreUnavailable(f"database {self.path}: {_one_line(cause)}", cause=_one_line(cause)) from exc
                waited = time.monotonic() - asked
                if waited >= (self._patience if patience is None else patience):
                    raise StoreUnavailable(
                        f"database {self.path} stayed locked for {waited:.0f} s", cause="database is locked"
                    ) from exc
                time.sleep(pause * (0.5 + self._rng.random()))
                pause = min(pause * 2, RETRY_PAUSE_MAX)

    def _execute(self, name: str, build: Callable[[], Any], params: Sequence[Any]) -> Any:
        """Run a peewee-built statement whose SQL is compiled once per process and dialect.

        ``build()`` returns the peewee query for the current values and
        ``params`` lists those values in the order peewee binds them. The first
        call compiles the query and checks that the two agree (AssertionError
        otherwise); later calls skip query building (the hot path: claim, step
        start/complete, heartbeat). Returns the cursor.
        """
        key = (self.dialect, name)
        sql = _STATEMENTS.get(key)
        if sql is None:
            sql, bound = build().sql()
            if list(bound) != list(params):
                raise AssertionError(f"statement {name!r}: peewee binds {bound!r}, the store passes {list(params)!r}")
            _STATEMENTS[key] = sql
        return self.db.execute_sql(sql, params)

    def compiled(self, name: str) -> str | None:
        """The SQL text this dialect compiled for hot-path statement ``name`` (None before first use)."""
        return _STATEMENTS.get((self.dialect, name))
