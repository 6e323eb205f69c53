"""SQL text and error tables of the PostgreSQL dialect (``postgres.PostgresStore``).

The schema is written out here rather than derived from the models with
``create_tables``: peewee maps ``FloatField`` to ``REAL`` (float4) on
PostgreSQL, which rounds epoch seconds by up to a minute, and the claim's
indexes are partial indexes SQLite's schema does not have. The column order of
every table is the models' (``schema.py``). No logic lives here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError

#: Key of the transaction-scoped advisory lock every schema creation or migration holds ("durable").
SCHEMA_LOCK_KEY = 0x64757261626C65
#: The ``meta`` keys the dialect keeps: the schema version, the database's random id.
VERSION_KEY = "schema_version"
DB_ID_KEY = "db_id"
#: Tables of the engine schema (a database holding some of them but no version is another application's).
ENGINE_TABLES = ("workflows", "steps", "leases", "workers", "messages", "events", "meta")

#: Tables of the durable primitives (messages, events), in CREATE and in the migration to 3.
PRIMITIVE_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS messages (
        id text PRIMARY KEY, workflow_id text NOT NULL, topic text NOT NULL DEFAULT '', payload text, key text,
        created_at double precision NOT NULL, consumed_by_step text)""",
    "CREATE INDEX IF NOT EXISTS messages_workflow_topic ON messages (workflow_id, topic, created_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_workflow_key ON messages (workflow_id, key) WHERE key IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS events (
        workflow_id text NOT NULL, key text NOT NULL, value text, updated_at double precision NOT NULL,
        PRIMARY KEY (workflow_id, key))""",
)

#: Indexes of schema version 4 (in CREATE and in the migration to 4): a parent's children, the deadline sweep.
V4_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS workflows_parent ON workflows (parent_id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS workflows_waiting_for ON workflows (waiting_for) WHERE status = 'WAITING'",
    "CREATE INDEX IF NOT EXISTS workflows_deadline ON workflows (deadline_at) "
    "WHERE deadline_at IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING')",
)

#: Schema version 5 (in CREATE and in the migration to 5): the queue limits table, the claim's indexes, schedules and roles.
V5_QUEUES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS queues (
        name text PRIMARY KEY, concurrency integer, worker_concurrency integer, rate_limit integer,
        rate_period double precision, per_key_concurrency integer, updated_at double precision NOT NULL)""",
    # The claim's pending probe: per (queue, served name), PENDING rows in priority then due order.
    "CREATE INDEX IF NOT EXISTS workflows_queue_pending ON workflows (queue, name, priority DESC, run_at) "
    "WHERE status = 'PENDING'",
    # The claim's due-WAITING probe: per (queue, served name), WAITING rows in wake order.
    "CREATE INDEX IF NOT EXISTS workflows_queue_waiting ON workflows (queue, name, wake_at) WHERE status = 'WAITING'",
    # A queue's RUNNING count, overall and per concurrency key.
    "CREATE INDEX IF NOT EXISTS workflows_queue_running ON workflows (queue, concurrency_key) WHERE status = 'RUNNING'",
    # A queue's first starts, for its rate window.
    "CREATE INDEX IF NOT EXISTS workflows_queue_started ON workflows (queue, started_at) WHERE started_at IS NOT NULL",
    # Cron schedules and fleet-wide roles (the scheduler lease).
    """CREATE TABLE IF NOT EXISTS schedules (
        name text PRIMARY KEY, workflow text NOT NULL, cron text NOT NULL, timezone text NOT NULL,
        catchup text NOT NULL, input text NOT NULL, origin text NOT NULL, paused integer NOT NULL,
        next_at double precision NOT NULL, last_slot double precision, created_at double precision NOT NULL,
        updated_at double precision NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS roles (
        name text PRIMARY KEY, holder text NOT NULL, token integer NOT NULL, expires_at double precision NOT NULL,
        renewed_at double precision NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS workflows_queue_dedupe ON workflows (queue, dedupe_key) "
    "WHERE dedupe_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING')",
)

#: Indexes of schema version 6 (in CREATE and in the migration to 6): the dashboard's, at a million rows.
V6_INDEXES: tuple[str, ...] = (
    # Workflows ended per minute (the overview), per status in end order.
    "CREATE INDEX IF NOT EXISTS workflows_status_updated_at ON workflows (status, updated_at)",
    # A name filter of the workflow list, paged by creation time.
    "CREATE INDEX IF NOT EXISTS workflows_name_created_at ON workflows (name, created_at)",
)

#: An empty database becomes the current schema version (6) with these statements, in one transaction.
CREATE: tuple[str, ...] = (
    """CREATE TABLE workflows (
        id text PRIMARY KEY, name text NOT NULL, input text NOT NULL DEFAULT '{}',
        status text NOT NULL DEFAULT 'PENDING', result text, error text,
        attempts integer NOT NULL DEFAULT 0, run_at double precision NOT NULL,
        created_at double precision NOT NULL, updated_at double precision NOT NULL,
        crash_at text, interruption text, failed_step text, wake_at double precision, parent_id text,
        deadline_at double precision, waiting_for text, queue text NOT NULL DEFAULT 'default',
        priority integer NOT NULL DEFAULT 0, concurrency_key text, dedupe_key text, started_at double precision,
        trace_context text)""",
    "CREATE INDEX workflows_status_created_at ON workflows (status, created_at)",
    *V4_INDEXES,
    *V5_QUEUES,
    *V6_INDEXES,
    """CREATE TABLE steps (
        workflow_id text NOT NULL, step_key text NOT NULL, name text NOT NULL, scope text NOT NULL DEFAULT '',
        position integer NOT NULL, status text NOT NULL, output text, error text,
        attempts integer NOT NULL DEFAULT 0, deadline double precision, started_at double precision,
        finished_at double precision, worker_id text, token integer,
        seq integer NOT NULL DEFAULT 0, interruptions integer NOT NULL DEFAULT 0, history text,
        PRIMARY KEY (workflow_id, step_key))""",
    "CREATE INDEX steps_timed ON steps (deadline) WHERE status = 'RUNNING' AND deadline IS NOT NULL",
    """CREATE TABLE leases (
        workflow_id text PRIMARY KEY, worker_id text, token integer NOT NULL DEFAULT 0,
        expires_at double precision, heartbeat_at double precision, renewed_mono double precision)""",
    "CREATE INDEX leases_worker_id ON leases (worker_id) WHERE worker_id IS NOT NULL",
    # The claim's stale probe: held leases in expiry order.
    "CREATE INDEX leases_held_expiry ON leases (expires_at) WHERE worker_id IS NOT NULL",
    """CREATE TABLE workers (
        id text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL,
        proc_started_at double precision NOT NULL, started_at double precision NOT NULL,
        heartbeat_at double precision NOT NULL, state text NOT NULL DEFAULT 'running',
        names text NOT NULL DEFAULT '[]', concurrency integer NOT NULL DEFAULT 1, supervisor_pid integer,
        host_id text NOT NULL DEFAULT '', heartbeat_mono double precision, ttl double precision)""",
    *PRIMITIVE_TABLES,
    "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
)

#: The chaos experiment's ledger (``Store.ledger_create``), created on demand.
CREATE_LEDGER = """CREATE TABLE IF NOT EXISTS chaos_ledger (
    id bigserial PRIMARY KEY, workflow_id text NOT NULL, step_key text NOT NULL, pid integer NOT NULL,
    worker_id text, token integer, attempt integer, value text, at double precision NOT NULL,
    lease_token integer, step_status text)"""
CREATE_LEDGER_INDEX = "CREATE INDEX IF NOT EXISTS chaos_ledger_workflow_step ON chaos_ledger (workflow_id, step_key)"

#: The database clock in epoch seconds, fixed per statement (``extract`` gives numeric on PG 14+).
CLOCK = "SELECT extract(epoch from statement_timestamp())::float8"
#: The LISTEN/NOTIFY channel of wake-up hints; the payload is the workflow name (what a worker filters on).
WAKE_CHANNEL = "durable_wake"
NOTIFY = f"SELECT pg_notify('{WAKE_CHANNEL}', name) FROM workflows WHERE id = %s"
#: The chaos lock fault: every writer of the engine tables waits while this is held (readers do not).
LOCK_WRITERS = "LOCK TABLE workflows, steps, leases, workers IN SHARE ROW EXCLUSIVE MODE"

# ----------------------------------------------------------------------------- SQLSTATE classes

#: Serialization failure, deadlock: the server rolled the transaction back; run it again.
CONFLICT_STATES = frozenset({"40001", "40P01"})
#: Our ``lock_timeout`` fired, or a statement was cancelled: wait and try again, up to the patience.
BUSY_STATES = frozenset({"55P03", "57014"})
#: The connection is gone (or about to be): a new one may work.
LOST_STATES = frozenset({"25P03", "57P01", "57P02", "57P03"})
LOST_CLASSES = ("08",)
#: The database cannot serve us now: an interrupt, never a workflow failure.
UNAVAILABLE_STATES = frozenset({"53100", "53200", "53300", "58030", "XX001", "XX002", "25006", "42P01"})
UNAVAILABLE_CLASSES = ("53",)

# ----------------------------------------------------------------------------- URLs

#: URL schemes this dialect opens.
SCHEMES = ("postgresql://", "postgres://")
#: Query keys of a database URL that are the store's options, not libpq's.
STORE_KEYS = ("pool_size", "listen")


def split_url(url: str) -> tuple[str, dict[str, str], str]:
    """``(conninfo URL for libpq, the store's own query options, the URL to show in messages)``.

    The shown URL has no password. Raises :class:`ConfigError` (one line) for a
    URL that is not a PostgreSQL URL, cannot be parsed, or whose port is not a number.
    """
    if not url.startswith(SCHEMES):
        raise ConfigError(f"not a PostgreSQL URL (postgresql://user@host:port/dbname): {url}")
    try:
        parts = urlsplit("postgresql://" + url.split("://", 1)[1])
    except ValueError as exc:  # an unbalanced "[" of an IPv6 host, say
        raise ConfigError(f"malformed database URL ({exc}): expected postgresql://user@host:port/dbname") from None
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"bad port in database URL {_shown(parts.netloc, parts.path)}") from None
    if not parts.path.strip("/"):
        raise ConfigError(f"database URL names no database (postgresql://user@host:port/dbname): {_shown(parts.netloc, '')}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in STORE_KEYS}
    rest = urlencode([(key, value) for key, value in query if key not in STORE_KEYS])
    conninfo = urlunsplit(parts._replace(query=rest))
    return conninfo, own, _shown(parts.netloc, parts.path)


def _shown(netloc: str, path: str) -> str:
    """``postgresql://user@host:port/db`` with any password left out."""
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return f"postgresql://{netloc}{path}"


def flag(value: str, key: str, shown: str) -> bool:
    """A yes/no URL option (``on``/``off``, ``true``/``false``, ``1``/``0``); else a one-line ConfigError."""
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{key} must be on or off in {shown}, not {value!r}")


def connect_reason(exc: BaseException) -> str:
    """One line saying why a connection could not be made (psycopg gives no SQLSTATE for these).

    libpq reports ``connection to server at "h", port p failed: <reason>`` with
    hints on further lines; the reason (``Connection refused``, ``database "x"
    does not exist``, ``role "x" does not exist``, ...) is what a user needs.
    """
    text = " ".join(str(exc).split("\n")[0].split())
    reason = text.rsplit("failed: ", 1)[-1]
    for prefix in ("FATAL: ", "FATAL:  "):
        reason = reason.removeprefix(prefix)
    return reason.strip() or type(exc).__name__
