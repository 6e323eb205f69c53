"""Tables, as peewee models, and the one way to bind them to a database.

The classes here are unbound (no ``Meta.database``): a store calls
:func:`bind` with its own database and gets per-database subclasses, so two
stores in one process never share, or re-point, a binding. No logic lives
here; queries are in the store's operation modules.

Times are UNIX epoch seconds (REAL). JSON columns hold text produced by
``json.dumps``. Column names are part of the public contract (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peewee import (
    AutoField,
    CompositeKey,
    Database,
    FloatField,
    IntegerField,
    Model,
    SQL,
    TextField,
)

from ..records import ACTIVE, DEFAULT_QUEUE, Status

#: Bumped whenever the schema changes, with a forward migration per dialect (``migrations/``).
#: 2: workflows.interruption/failed_step, steps.seq/token/interruptions, leases.renewed_mono,
#:    workers.host_id/heartbeat_mono/ttl, the meta table; index workflows(status, name, run_at)
#:    replaces workflows(name, status).
#: 3: workflows.wake_at (WAITING) and parent_id, the messages and events tables; index
#:    workflows(status, name, wake_at) for the claim's due-WAITING probe.
#: 4: workflows.deadline_at and waiting_for; indexes on parent, waiting_for and deadline.
#: 5: queues: workflows.queue/priority/concurrency_key/dedupe_key/started_at and the ``queues``
#:    table; the claim's probes are per (queue, name), in priority then due order; the
#:    ``schedules`` and ``roles`` tables (cron schedules and the scheduler lease).
#: 6: workflows.trace_context (the submitter's W3C trace context, see ``TracedWorkflow``); the
#:    dashboard's indexes workflows(status, updated_at) and workflows(name, created_at);
#:    steps.history (the earlier attempts of a step, for the dashboard's timeline).
SCHEMA_VERSION = 6


class BaseModel(Model):
    """The unbound base of every table: no database (see :func:`bind`)."""

    class Meta:
        legacy_table_names = False


class Workflow(BaseModel):
    """One workflow: its input, status, outcome and claim count (``workflows``)."""

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
    crash_at = TextField(null=True)  # demo fault injection: "STEP:before|returned|after"
    interruption = TextField(null=True)  # why the last attempt was abandoned (store outage, timeout, ...)
    failed_step = TextField(null=True)  # key of the step whose failure ended the workflow, if one did
    wake_at = FloatField(null=True)  # a WAITING workflow is runnable again from this time on
    parent_id = TextField(null=True)  # the workflow that started this one as a child, if one did
    deadline_at = FloatField(null=True)  # past this time the workflow ends CANCELLED ("deadline exceeded")
    waiting_for = TextField(null=True)  # what a WAITING workflow waits for: sleep, message:TOPIC, child:ID
    queue = TextField(default=DEFAULT_QUEUE, constraints=[SQL(f"DEFAULT '{DEFAULT_QUEUE}'")])  # its queue's limits apply
    priority = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])  # higher is claimed first within its queue
    concurrency_key = TextField(null=True)  # the queue's per_key_concurrency counts RUNNING rows per key
    dedupe_key = TextField(null=True)  # unique among the queue's unfinished workflows
    started_at = FloatField(null=True)  # its first claim (a queue's rate counts these)

    class Meta:
        table_name = "workflows"
        indexes = (
            (("status", "created_at"), False),
            # The claim's due-WAITING probe: one range scan per (queue, served name) in wake order.
            (("status", "queue", "name", "wake_at"), False),
            # A queue's RUNNING count, overall and per concurrency key (the claim's limits).
            (("status", "queue", "concurrency_key"), False),
            # A queue's starts in the rate window.
            (("queue", "started_at"), False),
            # A parent's children (cancel cascade, status).
            (("parent_id",), False),
            # Who waits on a child (a parent, or a fork of it): woken when it ends.
            (("waiting_for",), False),
            # The deadline sweep: per unfinished status, rows in deadline order.
            (("status", "deadline_at"), False),
            # The dashboard: workflows ended per minute, and a name filter paged by creation time.
            (("status", "updated_at"), False),
            (("name", "created_at"), False),
        )


# The claim's pending probe: one range scan per (queue, served name), in priority then due
# order (SqliteStore._runnable); rows of other names or of a queue at its limit are never visited.
Workflow.add_index(Workflow.status, Workflow.queue, Workflow.name, Workflow.priority.desc(), Workflow.run_at)
# Deduplication: one unfinished workflow per (queue, dedupe_key).
Workflow.add_index(
    Workflow.index(Workflow.queue, Workflow.dedupe_key, unique=True).where(
        Workflow.dedupe_key.is_null(False) & Workflow.status.in_(sorted(ACTIVE))
    )
)


class TracedWorkflow(Workflow):
    """``workflows`` with schema 6's ``trace_context`` column: the submitter's W3C trace context (JSON).

    Kept out of :class:`Workflow` so the rows every read returns (``WorkflowRecord``)
    never carry it: only a traced submit writes it and only a traced attempt reads
    it (:mod:`durable_workers.tracing`). The SQLite schema is created from this model.
    """

    trace_context = TextField(null=True)

    class Meta:
        table_name = "workflows"


class Queue(BaseModel):
    """A queue's limits, as its app declares them (``queues``); NULL is unlimited.

    A submit to a queue writes its row if none exists (no limits), so the claim
    knows every queue that holds work.
    """

    name = TextField(primary_key=True)
    concurrency = IntegerField(null=True)  # RUNNING workflows of the queue, fleet-wide
    worker_concurrency = IntegerField(null=True)  # RUNNING workflows of the queue per worker
    rate_limit = IntegerField(null=True)  # first starts per rate_period seconds (sliding window)
    rate_period = FloatField(null=True)
    per_key_concurrency = IntegerField(null=True)  # RUNNING workflows per concurrency_key
    updated_at = FloatField()

    class Meta:
        table_name = "queues"


class Schedule(BaseModel):
    """A cron schedule: each slot submits one workflow ``NAME@<slot, ISO UTC>`` (``schedules``)."""

    name = TextField(primary_key=True)
    workflow = TextField()  # the workflow name each slot submits
    cron = TextField()  # 5 fields, or 6 with seconds last (croniter)
    timezone = TextField()  # IANA name the cron fields are read in
    catchup = TextField()  # latest | all | none: what happens to slots missed while no scheduler ran
    input = TextField()  # JSON object each slot's workflow gets
    origin = TextField()  # app (declared by @workflow(schedule=)) | cli (added at run time)
    paused = IntegerField(default=0)
    next_at = FloatField()  # the first slot not yet fired
    last_slot = FloatField(null=True)  # the latest slot fired
    created_at = FloatField()
    updated_at = FloatField()

    class Meta:
        table_name = "schedules"


class Role(BaseModel):
    """A fleet-wide role one process at a time holds, like a lease (``roles``; ``scheduler``)."""

    name = TextField(primary_key=True)
    holder = TextField()
    token = IntegerField()  # bumped at every change of holder
    expires_at = FloatField()
    renewed_at = FloatField()

    class Meta:
        table_name = "roles"


class Step(BaseModel):
    """One recorded step of a workflow, keyed by (workflow_id, step_key) (``steps``)."""

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
    # Earlier attempts, one line each "STARTED FINISHED|- STATUS WORKER" (schema 6; see records.step_attempts).
    history = TextField(null=True)

    class Meta:
        table_name = "steps"
        primary_key = CompositeKey("workflow_id", "step_key")
        indexes = ((("status", "deadline"), False),)


class Lease(BaseModel):
    """Who holds a workflow's attempt, with its fencing token and expiry (``leases``)."""

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
    """One worker process: host identity, pid, heartbeat, the names it serves (``workers``)."""

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


class Message(BaseModel):
    """A message sent to a workflow on a topic, until a step consumes it (``messages``)."""

    id = TextField(primary_key=True)
    workflow_id = TextField()
    topic = TextField(default="")
    payload = TextField(null=True)
    key = TextField(null=True)  # idempotency key of the send, if it gave one
    created_at = FloatField()
    consumed_by_step = TextField(null=True)

    class Meta:
        table_name = "messages"
        indexes = ((("workflow_id", "topic", "created_at"), False), (("workflow_id", "key"), True))


class Event(BaseModel):
    """A key/value a workflow publishes for others to read (``events``)."""

    workflow_id = TextField()
    key = TextField()
    value = TextField(null=True)
    updated_at = FloatField()

    class Meta:
        table_name = "events"
        primary_key = CompositeKey("workflow_id", "key")


class DatabaseInfo(BaseModel):
    """Facts about the database itself (``db_id``: a random id written at creation)."""

    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "meta"


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


#: The engine's tables as created (``workflows`` with every column: ``TracedWorkflow``; the chaos
#: ledger is created on demand, see ``Ledger``).
ALL_MODELS: tuple[type[BaseModel], ...] = (
    TracedWorkflow, Step, Lease, Worker, Message, Event, DatabaseInfo, Queue, Schedule, Role
)  # fmt: skip


@dataclass(frozen=True)
class Models:
    """The tables bound to one database: what a store's queries use (``store.m.Workflow``, ...)."""

    Workflow: Any
    Step: Any
    Lease: Any
    Worker: Any
    Message: Any
    Event: Any
    DatabaseInfo: Any
    Queue: Any
    Schedule: Any
    Role: Any
    Ledger: Any
    #: ``workflows`` with its ``trace_context`` column (:class:`TracedWorkflow`).
    TracedWorkflow: Any
    #: Column names of ``workflows`` and ``steps`` in model order (what ``SELECT *`` returns).
    workflow_columns: tuple[str, ...] = ()
    step_columns: tuple[str, ...] = ()

    @property
    def engine_tables(self) -> list[Any]:
        """The bound engine tables, in ``ALL_MODELS`` order (for ``create_tables``)."""
        return [getattr(self, model.__name__) for model in ALL_MODELS]


def _bound(model: type[BaseModel], db: Database) -> Any:
    """A subclass of ``model`` bound to ``db``, with the same table, columns, keys and indexes.

    peewee copies fields, ``indexes`` and ``primary_key`` to a subclass but not
    ``table_name`` (it would derive one from the class name), and an inherited
    ``CompositeKey`` would lose its composite flag; both are therefore restated.
    """
    meta: dict[str, Any] = {"database": db, "table_name": model._meta.table_name}
    if model._meta.composite_key:
        meta["primary_key"] = CompositeKey(*model._meta.primary_key.field_names)
    return type(model.__name__, (model,), {"Meta": type("Meta", (), meta), "__module__": __name__})


def _columns(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(f.name for f in model._meta.sorted_fields)


def bind(db: Database) -> Models:
    """Per-database subclasses of every table, bound to ``db`` (the shared classes stay unbound).

    Never fails for a database object; nothing is opened until a query runs.
    """
    return Models(
        workflow_columns=_columns(Workflow),
        step_columns=_columns(Step),
        Workflow=_bound(Workflow, db),
        Step=_bound(Step, db),
        Lease=_bound(Lease, db),
        Worker=_bound(Worker, db),
        Message=_bound(Message, db),
        Event=_bound(Event, db),
        DatabaseInfo=_bound(DatabaseInfo, db),
        Queue=_bound(Queue, db),
        Schedule=_bound(Schedule, db),
        Role=_bound(Role, db),
        Ledger=_bound(Ledger, db),
        TracedWorkflow=_bound(TracedWorkflow, db),
    )
