"""Exceptions raised by durable_workers.

Every error a user can act on derives from :class:`DurableError`. Control-flow
signals and the two families that are never the workflow's business derive
from :class:`DurableInterrupt`, a ``BaseException``, so that a workflow's
``except Exception`` cannot swallow them:

- infrastructure: :class:`StoreUnavailable` (the attempt is abandoned, nothing
  is recorded as a failure, the workflow runs again later);
- integrity: :class:`CorruptRecordError` (the workflow ends FAILED loudly);
- control flow: :class:`LeaseLost`, :class:`WorkflowAborted`,
  :class:`WorkerStopping`.
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


class WorkflowNotFound(DurableError):
    """No workflow with the given id exists in the database."""


class StepNotFound(DurableError):
    """The workflow has no recorded step with the given key."""


class UnknownWorkflowError(DurableError):
    """No workflow is registered under the given name."""


class InputError(DurableError):
    """A workflow input is not a JSON object matching the function."""


class ConflictError(DurableError):
    """A workflow id already exists with a different name or input."""


class DuplicateWorkflowError(ConflictError):
    """A submit's ``dedupe_key`` is held by an unfinished workflow of the same queue (``existing`` is its row)."""

    def __init__(self, message: str, existing: object = None) -> None:
        super().__init__(message)
        self.existing = existing


class WorkflowFailedError(DurableError):
    """``Client.result`` found the workflow FAILED or CANCELLED."""


class InvalidStateError(DurableError):
    """The operation does not apply to the workflow's current status."""


class NonDeterminismError(DurableError):
    """A replayed workflow called a different step than the one recorded."""


class NotSerializableError(DurableError, TypeError):
    """A step or workflow returned a value that JSON cannot encode."""


class TypedValueError(DurableError, TypeError):
    """A stored JSON value does not fit the annotated type it is decoded into."""


class StepTimeoutError(DurableError, TimeoutError):
    """A step ran past its ``timeout``."""


class StepFailedError(DurableError):
    """A step failed with an exception that cannot be raised as itself.

    Raised for a step that ended with a foreign ``BaseException``
    (``SystemExit``, ``KeyboardInterrupt``, ``asyncio.CancelledError``...) on
    the first run and on replay alike, and on replay for an exception whose
    class cannot be rebuilt. ``error_type`` is the qualified name of the
    original class, ``message`` its text, ``attributes`` its recorded
    JSON-serialisable attributes.
    """

    def __init__(
        self, step_key: str, error_type: str, message: str, attributes: dict[str, object] | None = None
    ) -> None:
        super().__init__(f"step {step_key} failed: {error_type}: {message}")
        self.step_key = step_key
        self.error_type = error_type
        self.message = message
        self.attributes = dict(attributes or {})


class ChildFailedError(DurableError):
    """A child workflow awaited with ``handle.result()`` ended FAILED or CANCELLED (raised the same on replay).

    ``workflow_id`` is the child's id, ``status`` how it ended, ``error`` the
    first line of its recorded error.
    """

    def __init__(self, workflow_id: str, status: str, error: str | None) -> None:
        super().__init__(f"child workflow {workflow_id} ended {status}: {error or 'no error recorded'}")
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


class ChildTimeoutError(DurableError, TimeoutError):
    """``handle.result(timeout=...)`` gave up waiting; the child goes on running."""


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


class WorkflowSuspended(DurableInterrupt):
    """The workflow sleeps until ``wake_at``: the attempt ends and the workflow is recorded WAITING."""

    def __init__(self, workflow_id: str, wake_at: float, topic: str | None = None, child: str | None = None) -> None:
        what = f"waits for a message on {topic!r}" if topic else f"waits for child {child}" if child else "sleeps"
        super().__init__(f"workflow {workflow_id} {what} until {wake_at}")
        self.workflow_id = workflow_id
        self.wake_at = wake_at
        #: The topic of a ``ctx.recv`` waiting (a message already there makes the workflow due at once).
        self.topic = topic
        #: The child workflow a ``handle.result()`` waits for (one that ended makes the workflow due at once).
        self.child = child


class DeadlineExceeded(DurableInterrupt):
    """The workflow is past its deadline (``@workflow(timeout=)``, ``submit(timeout=)``): it ends CANCELLED."""


class AttemptAbandoned(DurableInterrupt):
    """The attempt stops because a step timed out with retries left.

    The timed-out execution may still be running in this process, so the
    retry must not start until the process is gone: the attempt keeps its
    lease (renewed, nothing more written) while its worker drains and exits;
    the supervisor kills it after a grace if it does not. Then the lease
    expires and a fresh worker runs the retry. The reason is kept in
    ``workflows.interruption``.
    """


class StoreUnavailable(DurableInterrupt):
    """The store could not be used: locked past the retry window, disk full, I/O error, connection lost.

    Infrastructure trouble, never the workflow's fault: the attempt is
    abandoned without recording a step or workflow failure, and the workflow
    runs again once the store is back. ``cause`` is the underlying error's
    one-line text (for example ``database or disk is full``).
    """

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message


#: Former name of the "locked past every retry" error; it is a :class:`StoreUnavailable` now.
StoreBusyError = StoreUnavailable


class CorruptRecordError(DurableInterrupt):
    """A stored value (input, step output, result or error) does not decode.

    Names the workflow, the step key (``None`` for workflow columns) and the
    column. Not catchable by a workflow's ``except Exception``: the workflow
    ends FAILED with this reason instead of silently taking another branch.
    """

    def __init__(self, workflow_id: str, column: str, step_key: str | None = None, detail: str = "") -> None:
        where = f"step {step_key} of workflow {workflow_id}" if step_key else f"workflow {workflow_id}"
        super().__init__(
            f"corrupt record: {column} of {where} does not decode" + (f" ({detail})" if detail else "")
        )
        self.workflow_id = workflow_id
        self.step_key = step_key
        self.column = column


class DatabaseReplacedError(DatabaseError):
    """The file at the database path is no longer the database this process opened.

    It was deleted, or another file (another database) took its place, or its
    ``db_id`` changed. Raised by ``Store.check_identity`` (and by ``open_store()`` on a
    path whose file changed under connections this process still holds). A
    worker that sees it stops claiming and exits with :attr:`exit_code`; the
    supervisor stops the fleet instead of respawning workers onto another
    database. (Inside an attempt a new connection to such a file raises
    :class:`StoreUnavailable` instead, so that nothing is recorded as a failure.)
    """

    #: Exit status of a worker (and of the supervisor) that stopped because of it.
    exit_code = 66  # EX_NOINPUT: the input (the database) is gone
