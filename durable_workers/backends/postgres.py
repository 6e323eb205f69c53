"""The PostgreSQL dialect of the store: one database shared by workers on any number of hosts.

Transactions run in READ COMMITTED (asserted at connect), one short transaction
per operation (the one-statement fenced writes: that statement in autocommit),
on connections from the store's own pool (one per thread).
Writers run concurrently, so where SQLite relies on ``BEGIN IMMEDIATE`` this
dialect takes row locks:

* claims probe with ``FOR UPDATE SKIP LOCKED LIMIT 1`` (per served name), so two
  claimers never take the same workflow and never wait for each other;
* every fenced write locks the lease row by ``(workflow_id, worker_id, token)``
  (``FOR SHARE``) in its first statement, so a concurrent claim (which updates
  that row) either waits for the write and then sees it, or commits first and
  the write finds no lease (``LeaseLost``); an ``EXISTS`` test without the lock
  lets a stale write land after a new claim;
* operations that need the lease and the workflow row lock them in that order.

Time (leases, deadlines, wake times) is the database's clock
(``statement_timestamp()``), never the client's. Errors are classified by
SQLSTATE (``postgres_sql``): deadlocks and serialization failures are re-run,
lock timeouts polled like SQLite's busy database, lost connections re-run on a
new connection (and, when lost during COMMIT, only bodies safe to repeat), the
rest of the outages raise ``StoreUnavailable``; for a TTL after one, leases get a grace of the
outage's length (``outage``), so live holders renew or hand back before anyone takes them.
The schema is created or migrated under a transaction-scoped advisory lock, so concurrent first starts
do not race. Submit, retry and release send a NOTIFY (the workflow's name) that
an idle worker's ``change_watch`` hears; polling stays the fallback.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import peewee
import psycopg
from peewee import SQL, fn
from playhouse.pool import MaxConnectionsExceeded
from playhouse.postgres_ext import PooledPsycopg3Database

from .. import clock as _clock
from ..config import CLOCK_RESYNC_S, DEFAULT_POOL_SIZE
from ..errors import ConfigError, DatabaseError, DatabaseReplacedError, LeaseLost, StoreUnavailable
from ..records import Status
from . import postgres_sql as q
from .base import Failure
from .outage import OutageGrace
from .pool import ReclaimingPool
from .postgres_chaos import PgChaos
from .postgres_listen import NotifyWatch
from .queues import QueuePlan
from .migrations.postgres import PgSchema
from .schema import bind
from .store import Store

#: Seconds a thread waits for a free pooled connection before the store reports the database busy.
POOL_WAIT_S = 10
#: Seconds an idle pooled connection is kept before it is reopened.
POOL_STALE_S = 300
#: Seconds to wait for a connection to the server.
CONNECT_TIMEOUT_S = 10
#: A statement waiting this long for a row lock fails with 55P03 (polled as BUSY, up to the patience).
LOCK_TIMEOUT_MS = 2_000
#: The server ends a session idle inside a transaction this long (a frozen process drops its locks).
IDLE_TXN_TIMEOUT_MS = 30_000
#: Seconds a transaction keeps retrying a locked row or a conflict before StoreUnavailable.
LOCK_PATIENCE_S = 30.0


def _root(exc: BaseException) -> BaseException:
    """The driver's exception under peewee's wrappers (``orig``, possibly wrapped twice), else ``exc``."""
    root = exc
    while getattr(root, "orig", None) is not None:
        root = root.orig  # type: ignore[attr-defined]
    if root is exc and isinstance(exc.__context__, psycopg.Error):
        root = exc.__context__
    return root


class PgDatabase(ReclaimingPool, PooledPsycopg3Database):
    """peewee's pooled psycopg 3 database with ``FloatField`` as DOUBLE PRECISION (REAL is float4).

    A connection whose thread ended is reclaimed (see backends/pool.py), so ``pool_size``
    bounds the threads using the store at once, not the threads that ever used it.
    """

    field_types = {**PooledPsycopg3Database.field_types, "FLOAT": "DOUBLE PRECISION"}


class PostgresStore(PgChaos, OutageGrace, PgSchema, Store):
    """The durable state of workflows, steps, leases and workers in one PostgreSQL database.

    ``PostgresStore("postgresql://user@host:port/dbname")`` connects, checks the
    isolation level and creates (or migrates) the schema under an advisory
    lock. Raises :class:`ConfigError` for a malformed URL and
    :class:`DatabaseError` with a one-line reason when the server refuses the
    connection, the database or role does not exist, the schema is newer than
    this code, or (``create=False``/``readonly=True``) the schema is missing.
    ``pool_size`` bounds the connections (one per live thread); ``lock_patience`` is
    how many seconds a transaction retries a locked row or a conflict before
    :class:`StoreUnavailable`. ``readonly=True`` opens read-only sessions.
    ``synchronous`` is accepted for the SQLite dialect's sake and ignored.
    ``auto_migrate=False`` leaves an empty or older schema for :meth:`migrate`.
    ``listen=False`` (or ``?listen=off`` in the URL) gives idle workers no
    LISTEN connection: they find new work by polling alone.
    """

    dialect = "postgresql"
    errors = (peewee.DatabaseError, peewee.InterfaceError, psycopg.Error, MaxConnectionsExceeded)

    def __init__(
        self,
        url: str,
        *,
        pool_size: int | None = None,
        create: bool = True,
        readonly: bool = False,
        lock_patience: float | None = None,
        synchronous: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        auto_migrate: bool = True,
        listen: bool = True,
    ) -> None:
        conninfo, own, self.path = q.split_url(str(url))
        self.listen = q.flag(own["listen"], "listen", self.path) if "listen" in own else listen
        try:
            size = int(own.get("pool_size") or pool_size or DEFAULT_POOL_SIZE)
        except ValueError:
            size = 0
        if size < 1:
            raise ConfigError(f"pool_size must be a whole number of at least 1 in {self.path}") from None
        self.readonly, self.auto_migrate, self.pool_size = readonly, auto_migrate, size
        self._patience = LOCK_PATIENCE_S if lock_patience is None else lock_patience
        self._rng = random.Random()
        self._clock_sample: tuple[float, float] | None = None
        self._state = threading.local()
        options = f"-c lock_timeout={LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout={IDLE_TXN_TIMEOUT_MS}"
        if readonly:
            options += " -c default_transaction_read_only=on"
        self.db = PgDatabase(
            conninfo, max_connections=size, stale_timeout=POOL_STALE_S, timeout=POOL_WAIT_S,
            connect_timeout=max(1, int(connect_timeout)), application_name=f"durable_workers:{os.getpid()}",
            options=options,
        )  # fmt: skip
        self.m = bind(self.db)
        self._conninfo, self._connect_timeout = conninfo, max(1, int(connect_timeout))
        try:
            self._connect()
            self._db_id: str | None = None
            if self.read(lambda: self._check_schema(create and not readonly)):
                self.migrate()
            if self.read(self._schema_version):
                self._db_id = self.read(self._read_db_id)
        except (DatabaseError, ConfigError):
            self.close()
            raise
        except StoreUnavailable as exc:
            self.close()
            raise DatabaseError(f"database {self.path}: {exc.cause}") from exc

    # ----------------------------------------------------------------- opening

    def _connect(self) -> None:
        """Open this thread's connection; a refused one is a one-line DatabaseError (F10: no SQLSTATE)."""
        try:
            self.db.connect(reuse_if_open=True)
        except (peewee.DatabaseError, peewee.InterfaceError, psycopg.Error) as exc:
            root = _root(exc)
            if isinstance(root, psycopg.ProgrammingError):  # libpq rejected the URL itself
                raise ConfigError(f"bad database URL {self.path}: {q.connect_reason(root)}") from None
            raise DatabaseError(f"cannot connect to {self.path}: {q.connect_reason(root)}") from None
        level = self.db.execute_sql("SHOW transaction_isolation").fetchone()[0]
        if level != "read committed":
            raise DatabaseError(f"database {self.path}: default_transaction_isolation is {level!r}; read committed is required")

    def _read_db_id(self) -> str | None:
        row = self.db.execute_sql("SELECT value FROM meta WHERE key = %s", (q.DB_ID_KEY,)).fetchone()
        return row[0] if row is not None else None

    def check_identity(self) -> None:
        """Raise :class:`DatabaseReplacedError` when the database's ``meta.db_id`` is not the one read at open.

        A database dropped and created again under the same name gets a new id.
        Raises :class:`StoreUnavailable` when it cannot be read.
        """
        try:
            db_id = self.read(self._read_db_id)
        except DatabaseError as exc:  # the meta table is gone: not this database any more
            raise DatabaseReplacedError(f"database {self.path} was replaced ({exc})") from None
        if db_id != self._db_id:
            raise DatabaseReplacedError(f"database {self.path} was replaced: its db_id changed")

    # ----------------------------------------------------------------- transaction hooks

    def now(self) -> float:
        """The database's clock (UNIX seconds): every host's leases, deadlines and wake times on one clock.

        Read from the server (``statement_timestamp()``) at most every
        ``CLOCK_RESYNC_S`` seconds and carried forward on this process's
        monotonic clock in between, so an operation does not pay a round trip
        for it. The error is at most half the read's round trip plus the
        monotonic drift over one resync, far below any TTL; a jump of the
        server's clock is picked up at the next read, one of this host's is
        never seen. A fake clock installed by a test (``durable_workers.clock``) wins.
        """
        fake = _clock.installed
        if fake is not None:
            return fake.now()
        sample = self._clock_sample
        mono = time.monotonic()
        if sample is None or mono - sample[1] >= CLOCK_RESYNC_S:
            sample = self._read_clock()
        return sample[0] + (mono - sample[1])

    def _read_clock(self) -> tuple[float, float]:
        """``(database time, monotonic time of the same instant)``, freshly read; kept for :meth:`now`."""
        def read() -> float:
            return float(self.db.execute_sql(q.CLOCK).fetchone()[0])

        asked = time.monotonic()
        value = read() if self.db.in_transaction() else self.read(read)
        answered = time.monotonic()
        self._clock_sample = sample = (value, (asked + answered) / 2)
        return sample

    @contextlib.contextmanager
    def _begin(self) -> Iterator[None]:
        """One READ COMMITTED transaction (nested: a savepoint); notes when COMMIT is under way."""
        outermost = not self.db.in_transaction()
        self._state.commit_failed = False
        txn = self.db.atomic()
        txn.__enter__()
        try:
            yield
        except BaseException:
            txn.__exit__(*sys.exc_info())
            raise
        try:
            txn.__exit__(None, None, None)
        except BaseException:
            self._state.commit_failed = outermost  # read by _classify: the COMMIT's fate is unknown
            raise

    def _classify(self, exc: BaseException) -> tuple[Failure, BaseException]:
        """By SQLSTATE (``postgres_sql``); a closed connection is LOST, or AMBIGUOUS during COMMIT."""
        root = _root(exc)
        state = getattr(root, "sqlstate", None) or ""
        if isinstance(exc, MaxConnectionsExceeded):
            return Failure.BUSY, exc
        if state in q.CONFLICT_STATES:
            return Failure.CONFLICT, root
        if state in q.BUSY_STATES:
            return Failure.BUSY, root
        if state == "25006" and self.readonly:
            return Failure.INVALID, root
        if state in q.UNAVAILABLE_STATES or state.startswith(q.UNAVAILABLE_CLASSES):
            return Failure.UNAVAILABLE, root
        lost = state in q.LOST_STATES or state.startswith(q.LOST_CLASSES)
        if not state and isinstance(root, (psycopg.OperationalError, psycopg.InterfaceError, peewee.InterfaceError)):
            lost = True  # connection closed or refused: psycopg gives no SQLSTATE
        if lost:
            return (Failure.AMBIGUOUS if getattr(self._state, "commit_failed", False) else Failure.LOST), root
        return Failure.INVALID, root

    def _describe(self, exc: BaseException) -> DatabaseError:
        root = _root(exc)
        return DatabaseError(f"database {self.path}: {' '.join(str(root).split())}")

    # ----------------------------------------------------------------- locks (dialect hooks)

    def _fence(self, workflow_id: str, worker_id: str, token: int, *, exclusive: bool = False) -> None:
        """Lock the lease row held with ``token`` (FOR SHARE, or FOR NO KEY UPDATE when it is updated next); else LeaseLost."""
        lock = "FOR NO KEY UPDATE" if exclusive else "FOR SHARE"
        row = self.db.execute_sql(
            f"SELECT token FROM leases WHERE workflow_id = %s AND worker_id = %s AND token = %s {lock}",
            (workflow_id, worker_id, token),
        ).fetchone()
        if row is None:
            raise LeaseLost(f"workflow {workflow_id}: lease token {token} is no longer held")

    def _holds_lease(self, workflow_id: str, worker_id: str, token: int) -> Any:
        """``EXISTS`` over the lease row locked ``FOR SHARE``: an InitPlan that locks it before the write.

        Uncorrelated and locking, the subquery runs once, first; it waits for a
        concurrent claim's update of the row and then re-checks the token.
        """
        lease = self.m.Lease
        return fn.EXISTS(
            lease.select(SQL("1"))
            .where((lease.workflow_id == workflow_id) & (lease.worker_id == worker_id) & (lease.token == token))
            .for_update("FOR SHARE")
        )

    def _share_locked(self, query: Any) -> Any:
        return query.for_update("FOR SHARE")

    def _write_one(
        self, name: str, build: Callable[[], Any], params: Sequence[Any], *, confirm: Callable[[], int | None] | None = None
    ) -> int:
        """In autocommit, one round trip: the statement is its own transaction, its fence locking the lease row first.

        A reply lost leaves its commit unknown (AMBIGUOUS). Inside an open transaction: a nested write.
        """
        if self.db.in_transaction():
            return super()._write_one(name, build, params, confirm=confirm)

        def body() -> int:
            self._state.commit_failed = True  # read by _classify until the reply is in
            rows: int = self._execute(name, build, params).rowcount
            self._state.commit_failed = False
            return rows

        return self._run(body, write=False, safe=confirm is None, confirm=confirm)

    def _lock_lease(self, workflow_id: str) -> None:
        self.db.execute_sql("SELECT 1 FROM leases WHERE workflow_id = %s FOR NO KEY UPDATE", (workflow_id,))

    def _lock_workflow(self, workflow_id: str) -> None:
        self.db.execute_sql("SELECT 1 FROM workflows WHERE id = %s FOR NO KEY UPDATE", (workflow_id,))

    def _locking(self, query: Any) -> Any:
        return query.for_update("FOR NO KEY UPDATE") if self.db.in_transaction() else query

    def _greatest(self, a: Any, b: Any) -> Any:
        return fn.GREATEST(a, b)

    def _notify(self, workflow_id: str) -> None:
        self.db.execute_sql(q.NOTIFY, (workflow_id,))

    def change_watch(self, names: Iterable[str] = ()) -> NotifyWatch | None:
        """A LISTEN connection of its own (not pooled, autocommit) that reports wake-ups for ``names``.

        ``None`` when the store was opened with ``listen`` off (idle workers poll).

        Submit, retry and release send one inside their transaction (delivered
        at commit). Never raises: while the connection is down, ``changed()``
        says True now and then (the worker then polls) and reconnects.
        """
        if not self.listen:
            return None
        return NotifyWatch(self._conninfo, names, self._connect_timeout)

    # ----------------------------------------------------------------- claim probe (dialect hook)

    def _runnable(self, names: Sequence[str], now: float, plan: QueuePlan, stale_before: float | None = None) -> str | None:
        """Id of a runnable workflow among ``names``: under the longest-expired lease, else the best due one.

        Inside a transaction the row is locked ``FOR UPDATE SKIP LOCKED``: a row
        another claimer is taking is skipped, never waited for. The due probe
        (``ClaimOps._best_due``) seeks ``workflows_queue_pending`` per open
        queue, served name and priority level, and ``workflows_queue_waiting``;
        the highest priority, then the earliest due, wins.
        """
        m = self.m
        names = list(names)
        stale_before = now if stale_before is None else stale_before
        locking = self.db.in_transaction()
        closed = plan.closed_for_worker()

        def stale() -> Any:
            where = (
                (m.Lease.expires_at < stale_before)
                & (m.Lease.worker_id.is_null(False))
                & (m.Workflow.status == Status.RUNNING.value)
                & (m.Workflow.name.in_(names))
            )
            if closed:
                where &= m.Workflow.queue.not_in(closed)
            query = (
                m.Lease.select(m.Workflow.id)
                .join(m.Workflow, on=(m.Workflow.id == m.Lease.workflow_id))
                .where(where)
                .order_by(m.Lease.expires_at)
                .limit(1)
            )
            return query.for_update("FOR UPDATE", of=(m.Lease, m.Workflow), skip_locked=True) if locking else query

        lock = "/lock" if locking else ""
        params = [stale_before, Status.RUNNING.value, *names, *closed, 1]
        row = self._execute(f"runnable_stale/{len(names)}/{len(closed)}{lock}", stale, params).fetchone()
        if row is not None:
            return row[0]
        return self._best_due(names, now, plan, lock=locking)

    _writers_serialised = False  # concurrent claimers: a limited queue is re-counted under its row lock

    def _lock_queue(self, name: str, *, wait: bool) -> bool:
        """Lock the queue's row (``FOR UPDATE``; ``wait=False``: ``SKIP LOCKED``); True if this transaction holds it."""
        m = self.m
        query = m.Queue.select(m.Queue.name).where(m.Queue.name == name).for_update("FOR UPDATE", skip_locked=not wait)
        return query.tuples().first() is not None
