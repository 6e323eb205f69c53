"""Frozen records of the store's rows, and the status enums.

What every store operation returns (``Store`` in ``backends/``); plain values
with no database attached, safe to hand across threads. Built from a row's
column mapping, never from a peewee model, so this module knows no SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Sequence


class Status(str, Enum):
    """Status of a workflow."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # suspended until ``wake_at`` (no lease, no slot); runnable again when due
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(str, Enum):
    """Status of a step row."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


#: Workflow statuses no attempt leaves again (``retry`` aside).
TERMINAL = (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value)
#: The unfinished statuses (a dedupe key is unique among these).
ACTIVE = (Status.PENDING.value, Status.RUNNING.value, Status.WAITING.value)
#: The queue of a workflow submitted without one (never limited unless an app declares limits for it).
DEFAULT_QUEUE = "default"
#: ``workflows.error`` of a workflow its deadline ended (CANCELLED).
DEADLINE_EXCEEDED = "deadline exceeded"


def _fields(cls: type, row: Any) -> dict[str, Any]:
    """The dataclass fields of ``cls`` read off a row object's attributes."""
    return {name: getattr(row, name) for name in cls.__dataclass_fields__}  # type: ignore[attr-defined]



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
    #: When a WAITING workflow becomes runnable again (epoch seconds).
    wake_at: float | None = None
    #: The workflow that started this one as a child, if one did.
    parent_id: str | None = None
    #: Past this time (epoch seconds) the workflow ends CANCELLED, "deadline exceeded".
    deadline_at: float | None = None
    #: What a WAITING workflow waits for: ``sleep``, ``message:TOPIC`` or ``child:ID`` (None: not recorded).
    waiting_for: str | None = None
    #: Its queue (whose limits apply), priority (higher first), concurrency and dedupe keys.
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    concurrency_key: str | None = None
    dedupe_key: str | None = None
    #: Its first claim (epoch seconds; None: never started).
    started_at: float | None = None
    #: Columns whose stored JSON does not decode (``input`` must be an object); shown, never run.
    corrupt: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> "WorkflowRecord":
        """Build from a model instance of ``workflows`` (its ``__data__`` mapping)."""
        return cls.from_values(row.__data__)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "WorkflowRecord":
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
    history: str | None = None  # earlier attempts (see :func:`step_attempts`)

    @classmethod
    def from_row(cls, row: Any) -> "StepRecord":
        """Build from a model instance of ``steps``."""
        return cls(**_fields(cls, row))

    @classmethod
    def from_tuple(cls, row: Sequence[Any], columns: Sequence[str]) -> "StepRecord":
        """Build from a ``SELECT`` of every ``steps`` column; ``columns`` names them in order."""
        return cls(**dict(zip(columns, row)))


#: Earlier attempts a step row keeps in ``history`` (the oldest are dropped past this).
STEP_HISTORY_LIMIT = 50


@dataclass(frozen=True)
class StepAttempt:
    """One attempt of a step: when it started and ended (None: it never did: crashed or interrupted), how, where."""

    started_at: float
    finished_at: float | None
    status: str
    worker_id: str | None


def attempt_history(row: Any) -> str | None:
    """``row``'s ``history`` with its current attempt appended (the value for a restart of the step)."""
    if row.started_at is None:
        return row.history  # type: ignore[no-any-return]
    ended = "-" if row.finished_at is None else repr(float(row.finished_at))
    status = row.status
    if status == StepStatus.RUNNING.value and row.finished_at is not None:
        status = StepStatus.FAILED.value  # a failure with retries left keeps the row RUNNING until its retry
    line = f"{float(row.started_at)!r} {ended} {status} {row.worker_id or '-'}"
    lines = (row.history or "").splitlines()[-(STEP_HISTORY_LIMIT - 1):] + [line]
    return "\n".join(lines)


def step_attempts(step: StepRecord) -> list[StepAttempt]:
    """Every attempt of ``step`` still known, oldest first: its ``history`` lines, then the current one."""
    found = []
    for line in (step.history or "").splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4:
            continue  # not written by attempt_history: skipped, never fatal for a display
        try:
            started, ended = float(parts[0]), None if parts[1] == "-" else float(parts[1])
        except ValueError:
            continue
        found.append(StepAttempt(started, ended, parts[2], None if parts[3] == "-" else parts[3]))
    if step.started_at is not None:
        waiting_retry = step.status == StepStatus.RUNNING.value and step.finished_at is not None
        status = StepStatus.FAILED.value if waiting_retry else step.status  # failed, its retry not started yet
        found.append(StepAttempt(step.started_at, step.finished_at, status, step.worker_id))
    return found


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
    def from_row(cls, row: Any) -> "WorkerRecord":
        """Build from a model instance of ``workers`` (``names`` decoded from its JSON list)."""
        values = _fields(cls, row)
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
    def from_row(cls, row: Any) -> "LeaseRecord":
        """Build from a model instance of ``leases``."""
        return cls(**_fields(cls, row))


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


@dataclass(frozen=True)
class ScheduleRecord:
    """One row of ``schedules``: a cron schedule and where its firing stands (``input`` decoded)."""

    name: str
    workflow: str
    cron: str
    timezone: str = "UTC"
    catchup: str = "latest"
    input: dict[str, Any] = field(default_factory=dict)
    #: ``app`` (declared by ``@workflow(schedule=)``, kept in step with the app) or ``cli`` (added at run time).
    origin: str = "cli"
    paused: bool = False
    #: The first slot not fired yet (UNIX time).
    next_at: float = 0.0
    last_slot: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> "ScheduleRecord":
        """Build from a model instance of ``schedules`` (a corrupt input reads as ``{}``)."""
        values = _fields(cls, row)
        try:
            values["input"] = json.loads(row.input)
        except (TypeError, ValueError):
            values["input"] = {}
        values["input"] = values["input"] if isinstance(values["input"], dict) else {}
        values["paused"] = bool(row.paused)
        return cls(**values)

    def defines_same(self, other: "ScheduleRecord") -> bool:
        """Whether both describe the same schedule (workflow, cron, timezone, catchup, input)."""
        keys = ("workflow", "cron", "timezone", "catchup", "input")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass(frozen=True)
class RoleRecord:
    """One row of ``roles``: who holds a fleet-wide role (the scheduler lease) and until when."""

    name: str
    holder: str
    token: int
    expires_at: float
    renewed_at: float

    @classmethod
    def from_row(cls, row: Any) -> "RoleRecord":
        """Build from a model instance of ``roles``."""
        return cls(**_fields(cls, row))


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
    def from_row(cls, row: Any) -> "LedgerRecord":
        """Build from a model instance of ``chaos_ledger``."""
        return cls(**_fields(cls, row))


__all__ = [
    "Claim",
    "LeaseRecord",
    "LedgerRecord",
    "RoleRecord",
    "ScheduleRecord",
    "Status",
    "StepRecord",
    "StepStart",
    "StepStatus",
    "DEADLINE_EXCEEDED",
    "TERMINAL",
    "ACTIVE",
    "DEFAULT_QUEUE",
    "WorkerRecord",
    "WorkflowRecord",
]
