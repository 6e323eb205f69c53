"""Tables, as peewee models. No logic lives here; queries are in ``store.py``.

Times are UNIX epoch seconds (REAL). JSON columns hold text produced by
``json.dumps``. Column names are part of the public contract (docs/architecture.md).
"""

from __future__ import annotations

import sqlite3
from enum import Enum
from typing import Any, Protocol

from peewee import (
    AutoField,
    CompositeKey,
    FloatField,
    IntegerField,
    Model,
    SQL,
    SqliteDatabase,
    TextField,
)
from playhouse.pool import PooledSqliteDatabase

#: Bumped whenever the schema changes; stored in ``PRAGMA user_version``.
#: 2: workflows.interruption/failed_step, steps.seq/token/interruptions, leases.renewed_mono,
#:    workers.host_id/heartbeat_mono/ttl, the meta table; index workflows(status, name, run_at)
#:    replaces workflows(name, status).
SCHEMA_VERSION = 2


class ConnectionGuard(Protocol):
    """What the database asks before and after it opens a new connection (see ``Store._guard_identity``)."""

    def before_open(self) -> None:
        """Raise (an interrupt) instead of letting a connection be opened at the path."""

    def after_open(self, conn: sqlite3.Connection) -> None:
        """Raise (an interrupt) when the new connection is not on the expected database."""


class _GuardedSqliteDatabase(SqliteDatabase):
    """SQLite whose new connections pass ``guard`` (``None``: no check) before and after opening."""

    guard: ConnectionGuard | None = None

    def init(self, database: Any, **kwargs: Any) -> None:
        self.guard = None  # another file (or the same one anew): its opener installs a guard
        super().init(database, **kwargs)

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


class GuardedPooledSqliteDatabase(PooledSqliteDatabase, _GuardedSqliteDatabase):
    """The pool; only connections it opens anew (not reused ones) go through the guard."""


#: The process-wide database, initialised later by ``Store`` (peewee deferred init).
#: Pooled: a thread that ends hands its connection to the next one (parallel
#: branches would otherwise open a connection each); no size limit.
database = GuardedPooledSqliteDatabase(None, max_connections=None, stale_timeout=None)


class Status(str, Enum):
    """Status of a workflow."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(str, Enum):
    """Status of a step row."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Workflow(BaseModel):
    id = TextField(primary_key=True)
    name = TextField()
    input = TextField(default="{}")
    status = TextField(default=Status.PENDING.value)
    result = TextField(null=True)
    error = TextField(null=True)
    attempts = IntegerField(default=0)
    run_at = FloatField()
    created_at = FloatField()
    updated_at = FloatField()
    crash_at = TextField(null=True)  # demo fault injection: "STEP:before|after"
    interruption = TextField(null=True)  # why the last attempt was abandoned (store outage, timeout, ...)
    failed_step = TextField(null=True)  # key of the step whose failure ended the workflow, if one did

    class Meta:
        table_name = "workflows"
        indexes = (
            (("status", "created_at"), False),
            # The claim's pending probe: one range scan per served name, in due order
            # (Store._runnable); rows of other names and future run_at are never visited.
            (("status", "name", "run_at"), False),
        )


class Step(BaseModel):
    workflow_id = TextField()
    step_key = TextField()
    name = TextField()
    scope = TextField(default="")
    position = IntegerField()
    status = TextField()
    output = TextField(null=True)
    error = TextField(null=True)
    attempts = IntegerField(default=0)
    deadline = FloatField(null=True)
    started_at = FloatField(null=True)
    finished_at = FloatField(null=True)
    worker_id = TextField(null=True)
    token = IntegerField(null=True)  # lease token of the attempt that started it last
    seq = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])  # order of first recording within the workflow (1, 2, ...)
    interruptions = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])  # starts ended by a drain or forced stop (not crashes)

    class Meta:
        table_name = "steps"
        primary_key = CompositeKey("workflow_id", "step_key")
        indexes = ((("status", "deadline"), False),)


class Lease(BaseModel):
    workflow_id = TextField(primary_key=True)
    worker_id = TextField(null=True)
    token = IntegerField(default=0)
    expires_at = FloatField(null=True)
    heartbeat_at = FloatField(null=True)
    renewed_mono = FloatField(null=True)  # holder host's monotonic clock at the last renewal

    class Meta:
        table_name = "leases"
        indexes = (
            (("worker_id",), False),
            (("expires_at",), False),
        )


class Worker(BaseModel):
    id = TextField(primary_key=True)
    host = TextField()
    pid = IntegerField()
    proc_started_at = FloatField()
    started_at = FloatField()
    heartbeat_at = FloatField()
    state = TextField(default="running")
    names = TextField(default="[]")  # JSON list of workflow names it can run
    concurrency = IntegerField(default=1)
    supervisor_pid = IntegerField(null=True)
    host_id = TextField(default="", constraints=[SQL("DEFAULT ''")])  # boot id + PID namespace (or DURABLE_HOST_ID), see liveness.py
    heartbeat_mono = FloatField(null=True)  # the host's monotonic clock at the last heartbeat
    ttl = FloatField(null=True)  # the worker's lease TTL (a heartbeat is due every ttl / 3)

    class Meta:
        table_name = "workers"


class DatabaseInfo(BaseModel):
    """Facts about the database itself (``db_id``: a random id written at creation)."""

    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "meta"


ALL_MODELS = (Workflow, Step, Lease, Worker, DatabaseInfo)

#: Forward migrations: ``version -> statements`` that take a database from that version to the next.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE workflows ADD COLUMN interruption TEXT",
        "ALTER TABLE workflows ADD COLUMN failed_step TEXT",
        "ALTER TABLE steps ADD COLUMN token INTEGER",
        "ALTER TABLE steps ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE steps ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE leases ADD COLUMN renewed_mono REAL",
        "ALTER TABLE workers ADD COLUMN host_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE workers ADD COLUMN heartbeat_mono REAL",
        "ALTER TABLE workers ADD COLUMN ttl REAL",
        'CREATE TABLE IF NOT EXISTS "meta" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL)',
        'CREATE INDEX IF NOT EXISTS "workflows_status_name_run_at" ON "workflows" ("status", "name", "run_at")',
        'DROP INDEX IF EXISTS "workflows_name_status"',
    ),
}


# --------------------------------------------------------------------------- chaos experiment


class Ledger(BaseModel):
    """Side-effect ledger of the chaos experiment's check workflows (``durable chaos``).

    Not part of the engine schema: created on demand by ``Store.ledger_create``
    in the experiment's own database. One row per execution of a step function
    (``step_key`` starting with ``@`` marks a workflow attempt beginning), with
    what the step returned and what the database said when the row was written.
    """

    id = AutoField()
    workflow_id = TextField()
    step_key = TextField()
    pid = IntegerField()
    worker_id = TextField(null=True)
    token = IntegerField(null=True)  # fencing token of the attempt that ran the step
    attempt = IntegerField(null=True)  # workflows.attempts of that attempt
    value = TextField(null=True)  # JSON the step function returned
    at = FloatField()
    lease_token = IntegerField(null=True)  # leases.token when the row was written
    step_status = TextField(null=True)  # steps.status of this step when the row was written

    class Meta:
        table_name = "chaos_ledger"
        indexes = ((("workflow_id", "step_key"), False),)
