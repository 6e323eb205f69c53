"""Exceptions raised by durable_workers.

Every error a user can act on derives from :class:`DurableError`. The two
control-flow signals (:class:`LeaseLost`, :class:`WorkflowAborted`) derive from
:class:`DurableInterrupt`, a ``BaseException``, so that a workflow's
``except Exception`` cannot swallow them.
"""

from __future__ import annotations


class DurableError(Exception):
    """Root of every error durable_workers raises for a caller to handle."""


class ConfigError(DurableError):
    """The configuration (database path, app module, options) is unusable."""


class DatabaseError(DurableError):
    """The database file is missing, unreadable, not SQLite, or read-only."""


class SchemaVersionError(DatabaseError):
    """The database was written by a newer version of durable_workers."""


class StoreBusyError(DatabaseError):
    """The database stayed locked past every bounded retry."""


class WorkflowNotFound(DurableError):
    """No workflow with the given id exists in the database."""


class UnknownWorkflowError(DurableError):
    """No workflow is registered under the given name."""


class InputError(DurableError):
    """A workflow input is not a JSON object matching the function."""


class ConflictError(DurableError):
    """A workflow id already exists with a different name or input."""


class WorkflowFailedError(DurableError):
    """``Client.result`` found the workflow FAILED or CANCELLED."""


class InvalidStateError(DurableError):
    """The operation does not apply to the workflow's current status."""


class NonDeterminismError(DurableError):
    """A replayed workflow called a different step than the one recorded."""


class NotSerializableError(DurableError, TypeError):
    """A step or workflow returned a value that JSON cannot encode."""


class StepTimeoutError(DurableError, TimeoutError):
    """A step ran past its ``timeout``."""


class StepFailedError(DurableError):
    """A step failed with an exception that cannot be rebuilt on replay.

    ``error_type`` is the qualified name of the original exception class and
    ``message`` its text.
    """

    def __init__(self, step_key: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step_key} failed: {error_type}: {message}")
        self.step_key = step_key
        self.error_type = error_type
        self.message = message


class DurableInterrupt(BaseException):
    """Stops a workflow attempt; user code must not catch it."""


class LeaseLost(DurableInterrupt):
    """Another worker owns the workflow now (or it was cancelled).

    The attempt stops at once and writes nothing more.
    """


class WorkflowAborted(DurableInterrupt):
    """The store ended the workflow (poison step); the attempt stops."""


class WorkerStopping(DurableInterrupt):
    """The worker is draining: the attempt stops before its next step and is released."""
