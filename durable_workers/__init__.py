"""durable_workers: crash-proof workflows as plain Python functions.

    from durable_workers import workflow, Context

    @workflow
    def onboarding(ctx: Context, employee_id: str | None = None) -> dict:
        record = ctx.step("create_record", lambda: create(employee_id))
        ...

Every ``ctx.step`` result is checkpointed in SQLite; a crashed workflow is
re-run from the top and completed steps return their recorded values.
"""

from .batch import Submission
from .children import ChildHandle
from .client import Client
from .context import Context, StepEvent, StepPolicy, step
from .errors import (
    ChildFailedError,
    ChildTimeoutError,
    ConfigError,
    ConflictError,
    CorruptRecordError,
    DatabaseError,
    DurableError,
    DurableInterrupt,
    DuplicateWorkflowError,
    InputError,
    InvalidStateError,
    LeaseLost,
    NonDeterminismError,
    NotSerializableError,
    SchemaVersionError,
    StepFailedError,
    StepTimeoutError,
    StoreBusyError,
    TypedValueError,
    StoreUnavailable,
    UnknownWorkflowError,
    WorkflowAborted,
    WorkflowFailedError,
    WorkflowNotFound,
)
from .queues import Queue
from .records import ScheduleRecord, Status, StepStatus
from .registry import Registry, default_registry, load_app, workflow
from .schedule_admin import ScheduleNotFound
from .schedules import scheduled_at
from .typed import Serializer, register_serializer, register_type

__version__ = "0.1.0"

__all__ = [
    "ChildFailedError",
    "ChildHandle",
    "ChildTimeoutError",
    "Client",
    "Queue",
    "ConfigError",
    "ConflictError",
    "CorruptRecordError",
    "Context",
    "DatabaseError",
    "DurableError",
    "DurableInterrupt",
    "DuplicateWorkflowError",
    "InputError",
    "InvalidStateError",
    "LeaseLost",
    "NonDeterminismError",
    "NotSerializableError",
    "Registry",
    "ScheduleNotFound",
    "ScheduleRecord",
    "SchemaVersionError",
    "Serializer",
    "Status",
    "StepEvent",
    "StepFailedError",
    "StepPolicy",
    "StepStatus",
    "StepTimeoutError",
    "StoreBusyError",
    "StoreUnavailable",
    "Submission",
    "TypedValueError",
    "UnknownWorkflowError",
    "WorkflowAborted",
    "WorkflowFailedError",
    "WorkflowNotFound",
    "default_registry",
    "load_app",
    "register_serializer",
    "register_type",
    "scheduled_at",
    "step",
    "workflow",
]
