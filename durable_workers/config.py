"""Where the database and the workflow app come from.

Precedence for each setting: explicit argument (``--db``/``--app`` flags),
environment (``DURABLE_DB``, ``DURABLE_APP``, ``DURABLE_SYNCHRONOUS``,
``DURABLE_LOCK_PATIENCE``, ``DURABLE_POOL_SIZE``, ``DURABLE_RETENTION``,
``DURABLE_LOG_FORMAT``), the ``[tool.durable]`` table of ``pyproject.toml``
in the current directory, then the defaults below.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_DB = "durable.db"
DEFAULT_APP = "examples"
DEFAULT_SYNCHRONOUS = "NORMAL"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

#: Log levels the commands accept (``--log-level``, any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Log formats of the long-running commands (``--log-format``): text lines, or one JSON object per line.
LOG_FORMATS = ("text", "json")
#: Log format unless ``--log-format`` / ``DURABLE_LOG_FORMAT`` / ``[tool.durable] log_format`` say otherwise.
DEFAULT_LOG_FORMAT = "text"
#: Shortest lease lifetime a worker accepts: it heartbeats every ttl/3 seconds, one write each.
MIN_TTL = 0.5
#: Longest duration any option accepts (one day): longer waits overflow the thread timers.
MAX_SECONDS = 86_400.0
#: PostgreSQL connections in a store's pool unless ``--pool-size`` / ``DURABLE_POOL_SIZE`` / ``?pool_size=`` say otherwise.
DEFAULT_POOL_SIZE = 8
#: Seconds a PostgreSQL store extrapolates the database clock on its monotonic clock before reading it again.
CLOCK_RESYNC_S = 1.0
#: Longest host identity accepted by ``--host-id`` / ``DURABLE_HOST_ID`` (characters).
MAX_HOST_ID_LENGTH = 128
#: Workflows ``durable status`` lists by default.
DEFAULT_STATUS_LIMIT = 20
#: ``wake_at`` of a workflow waiting for a message with no timeout (year 9999): only a send makes it due.
NO_TIMEOUT_WAKE_AT = 253_402_300_799.0
#: How often a foreground ``durable run`` re-reads the wake time of its WAITING workflow (a send moves it).
RUN_POLL_S = 0.5
#: Seconds per unit of a duration such as ``30d``, ``12h``, ``15m`` or ``90s`` (:func:`parse_duration`).
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
#: Terminal workflows ``durable gc`` deletes unless ``--status`` says otherwise.
GC_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")
#: Workflows ``durable gc`` deletes per write transaction (the write lock is released between two).
GC_BATCH = 500
#: Bounds of the supervisor's retention sweep interval (a quarter of the retention, within these).
GC_INTERVAL_MIN, GC_INTERVAL_MAX = 1.0, 3600.0
#: Seconds old a schedule slot may be when a scheduler first sees it and still count as on time
#: (older ones were missed: their schedule's ``catchup`` decides).
SCHEDULE_GRACE = 60.0
#: Missed slots a ``catchup="all"`` schedule fires per scheduler turn (the rest in the next turns).
CATCHUP_MAX = 1000
#: The ``roles`` row whose holder fires schedules and runs retention; it lasts one
#: ``durable-supervisor --ttl`` past its last renewal, like a workflow lease.
SCHEDULER_ROLE = "scheduler"
#: Seconds between two turns of a supervisor's scheduler thread (renew the lease, fire due slots).
SCHEDULER_INTERVAL = 1.0
#: Characters of an input or result ``durable status ID`` shows unless ``--full``.
PREVIEW_CHARS = 400
#: Address ``durable-supervisor --metrics-port`` listens on unless ``--metrics-host`` says otherwise.
DEFAULT_METRICS_HOST = "127.0.0.1"
#: Seconds ``/healthz`` and ``/readyz`` wait for the store's answer before they report 503.
HEALTH_TIMEOUT_S = 2.0
#: /healthz fails once the supervisor loop has not turned for this many store lock patiences plus
#: HUNG_LOOP_SLACK_S, and never sooner than HUNG_LOOP_MIN_S: long past what one turn's waits for
#: the database (a few writes, a write probe, a reconnect, the error backoff) add up to.
HUNG_LOOP_PATIENCES = 3.0
HUNG_LOOP_SLACK_S = 30.0
HUNG_LOOP_MIN_S = 120.0


@dataclass(frozen=True)
class Config:
    """Resolved settings shared by every command and process."""

    db: str = DEFAULT_DB
    app: str = DEFAULT_APP
    synchronous: str = DEFAULT_SYNCHRONOUS
    #: Seconds a transaction waits for a lock held elsewhere before ``StoreUnavailable``;
    #: None = the store's own default (``backends.sqlite.BUSY_TIMEOUT_MS * (LOCK_RETRIES + 1)``).
    lock_patience: float | None = None
    #: PostgreSQL connections in each process's pool (one per thread); None = ``DEFAULT_POOL_SIZE``. SQLite ignores it.
    pool_size: int | None = None
    #: Seconds a terminal workflow is kept before the supervisor's sweep deletes it; None = kept forever.
    retention: float | None = None
    #: ``text`` (the default) or ``json``: how the long-running commands write their logs (``durable_workers.logs``).
    log_format: str = DEFAULT_LOG_FORMAT

    def with_overrides(self, **values: Any) -> "Config":
        """Return a copy with the non-``None`` values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _pyproject_table(cwd: Path) -> dict[str, Any]:
    path = cwd / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read [tool.durable] from {path}: {exc}") from exc
    table = data.get("tool", {}).get("durable", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.durable] in {path} must be a table")
    return table


def _patience(text: Any, source: str) -> float | None:
    """``text`` (from ``source``) as a lock patience in seconds; None when unset."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{source} must be a number of seconds above 0, got {text!r}")
    return value


def _pool_size(text: Any, source: str) -> int | None:
    """``text`` (from ``source``) as a pool size of at least 1; None when unset."""
    if text is None or text == "":
        return None
    try:
        value = int(str(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{source} must be a whole number of connections of at least 1, got {text!r}")
    return value


def parse_duration(text: Any, source: str) -> float:
    """``text`` such as ``30d``, ``12h``, ``15m``, ``90s`` (or a plain number of seconds) in seconds.

    Raises :class:`ConfigError` naming ``source`` unless it is a positive duration.
    """
    raw = str(text).strip().lower()
    unit = DURATION_UNITS.get(raw[-1:], None) if raw else None
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{source} must be a duration such as 30d, 12h, 15m or 90s, got {text!r}")
    return value


def _retention(text: Any, source: str) -> float | None:
    """``text`` (from ``source``) as a retention in seconds; None when unset."""
    return None if text is None or text == "" else parse_duration(text, source)


def _log_format(text: Any, source: str) -> str | None:
    """``text`` (from ``source``) as one of ``LOG_FORMATS`` (any case); None when unset."""
    if text is None or text == "":
        return None
    value = str(text).strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{source} must be one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def load_config(
    db: str | None = None,
    app: str | None = None,
    synchronous: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    lock_patience: float | None = None,
    pool_size: int | None = None,
    retention: str | None = None,
    log_format: str | None = None,
) -> Config:
    """Resolve the configuration from arguments, environment and pyproject.toml.

    Raises :class:`ConfigError` (one line) for an unknown ``synchronous`` mode
    a lock patience that is not a positive number of seconds, a pool size below 1,
    a retention that is not a duration (:func:`parse_duration`), or a log format
    not in ``LOG_FORMATS``.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    table = _pyproject_table(base)
    config = Config().with_overrides(
        db=table.get("db"), app=table.get("app"), synchronous=table.get("synchronous"),
        lock_patience=_patience(table.get("lock_patience"), "[tool.durable] lock_patience"),
        pool_size=_pool_size(table.get("pool_size"), "[tool.durable] pool_size"),
        retention=_retention(table.get("retention"), "[tool.durable] retention"),
        log_format=_log_format(table.get("log_format"), "[tool.durable] log_format"),
    )  # fmt: skip
    config = config.with_overrides(
        db=os.environ.get("DURABLE_DB") or None,
        app=os.environ.get("DURABLE_APP") or None,
        synchronous=os.environ.get("DURABLE_SYNCHRONOUS") or None,
        lock_patience=_patience(os.environ.get("DURABLE_LOCK_PATIENCE"), "DURABLE_LOCK_PATIENCE"),
        pool_size=_pool_size(os.environ.get("DURABLE_POOL_SIZE"), "DURABLE_POOL_SIZE"),
        retention=_retention(os.environ.get("DURABLE_RETENTION"), "DURABLE_RETENTION"),
        log_format=_log_format(os.environ.get("DURABLE_LOG_FORMAT"), "DURABLE_LOG_FORMAT"),
    )
    config = config.with_overrides(
        db=db, app=app, synchronous=synchronous, lock_patience=_patience(lock_patience, "lock_patience"),
        pool_size=_pool_size(pool_size, "--pool-size"), retention=_retention(retention, "--retention"),
        log_format=_log_format(log_format, "--log-format"),
    )
    mode = config.synchronous.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ConfigError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {config.synchronous!r}"
        )
    if "://" in config.db:  # a database URL: the backend decides (backends.open_store)
        return replace(config, synchronous=mode)
    db_path = Path(config.db)
    if not db_path.is_absolute():
        db_path = base / db_path
    return replace(config, db=str(db_path), synchronous=mode)
