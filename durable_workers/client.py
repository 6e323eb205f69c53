"""Submit, inspect, wait for, cancel and retry workflows (used by the CLI and by users)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from . import tracing
from .backends import POSTGRES_SCHEMES, Store, open_store
from .codec import encode_input
from .typed import to_json
from .config import Config, load_config
from .context import Listener
from .engine import Outcome
from .errors import ConflictError, InputError, StoreUnavailable, WorkflowFailedError, WorkflowNotFound
from .liveness import worker_alive
from .records import LeaseRecord, Status, StepRecord, TERMINAL, WorkerRecord, WorkflowRecord
from .queues import Queue, placement, refuse_duplicate
from .registry import Registry, default_registry, load_app

if TYPE_CHECKING:  # pragma: no cover
    from .batch import Submission
    from .replaycheck import ReplayVerdict
    from .schedule_admin import Schedules


def _check_same(record: WorkflowRecord, name: str, input_json: str) -> None:
    """Raise :class:`ConflictError` unless ``record`` has this name and input (JSON)."""
    if record.name != name:
        raise ConflictError(f"workflow {record.id} already exists as {record.name}, not {name}; choose another id")
    recorded = json.dumps(record.input, sort_keys=True)
    if recorded != input_json:
        raise ConflictError(
            f"workflow {record.id} already exists with input {recorded}; to resume it omit --input "
            f"(or give that same input), or choose another id"
        )


def _deadline(spec: Any, timeout: float | None, run_at: float | None, now: Callable[[], float]) -> float | None:
    """``deadline_at`` of a run starting at ``run_at`` (or ``now()``): ``timeout`` or the workflow's own, if any."""
    timeout = timeout if timeout is not None else spec.timeout if spec is not None else None
    return (run_at or now()) + timeout if timeout is not None else None


@dataclass(frozen=True)
class WorkerView:
    """A worker row with what it holds and whether its process is alive."""

    worker: WorkerRecord
    leases: tuple[LeaseRecord, ...]
    alive: bool
    #: The store's clock when the row was read (heartbeat ages of other hosts' rows count from it).
    now: float = 0.0


class Client:
    """Talks to a durable_workers database.

    ``Client()`` resolves the database like the CLI (``DURABLE_DB``,
    ``[tool.durable]`` in pyproject.toml, ``./durable.db``); pass ``db=`` to
    choose. ``app`` names the module whose workflows ``submit`` checks names
    and inputs against. ``create=False`` refuses to create a missing database;
    ``readonly=True`` opens it without writing (read commands). The database is
    opened on first use of :attr:`store`, so a call that fails validation
    first (unknown app, name or input) leaves no file behind; ``store=``
    shares a store that is already open.
    """

    def __init__(
        self,
        db: str | None = None,
        *,
        app: str | None = None,
        synchronous: str | None = None,
        config: Config | None = None,
        create: bool = True,
        registry: Registry | None = None,
        readonly: bool = False,
        store: Store | None = None,
    ) -> None:
        self.config = config or load_config(db=db, app=app, synchronous=synchronous)
        self._create = create
        self._readonly = readonly
        self._store: Store | None = store
        self._registry = registry

    @property
    def store(self) -> Store:
        """The open database (opened on first use; raises :class:`DatabaseError` if it cannot be)."""
        if self._store is None:
            self._store = open_store(
                self.config.db,
                synchronous=self.config.synchronous,
                create=self._create,
                readonly=self._readonly,
                lock_patience=self.config.lock_patience,
                pool_size=self.config.pool_size,
            )
        return self._store

    @property
    def registry(self) -> Registry:
        """The workflows of the configured app (imported on first use)."""
        if self._registry is None:
            self._registry = load_app(self.config.app, default_registry)
        return self._registry

    @property
    def schedules(self) -> "Schedules":
        """Cron schedules of this database: add, list, pause, resume, remove, trigger."""
        from .schedule_admin import Schedules

        return Schedules(self)

    def close(self) -> None:
        """Close this thread's database connection and the idle pooled ones (nothing to do if never opened)."""
        if self._store is not None:
            self._store.close_idle()

    # ----------------------------------------------------------------- submit

    def submit(
        self,
        name: str,
        workflow_id: str | None = None,
        input: dict[str, Any] | None = None,
        *,
        crash_at: str | None = None,
        delay: float = 0.0,
        check: bool = True,
        timeout: float | None = None,
        at: float | None = None,
        queue: "Queue | str | None" = None,
        priority: int = 0,
        concurrency_key: str | None = None,
        dedupe_key: str | None = None,
        on_duplicate: str = "raise",
    ) -> WorkflowRecord:
        """Submit a workflow (idempotent by id) and return its row.

        An existing id with the same name and input returns the existing
        workflow; ``input=None`` means "its recorded input" for an existing id
        (resume or attach) and ``{}`` for a new one. A different name or input
        raises :class:`ConflictError`. With ``check`` the name and input are
        validated against the app's registry (:class:`UnknownWorkflowError`,
        :class:`InputError`) before the database is opened.
        ``crash_at="STEP:before|returned|after"`` makes the first attempt's process
        SIGKILL itself at that point (for recovery demos). ``timeout``: the
        run's deadline in seconds from its start (default: the workflow's
        ``@workflow(timeout=)``); past it the workflow ends CANCELLED,
        "deadline exceeded", its children included. ``delay`` (seconds from
        now, on the database's clock) or ``at`` (a UNIX time): the workflow is
        PENDING until then. ``queue`` (default: the workflow's ``@workflow(queue=)``),
        ``priority`` (higher first within the queue), ``concurrency_key`` (the
        queue's ``per_key_concurrency`` applies per key): see :class:`Queue`.
        ``dedupe_key``: while an unfinished workflow of the queue has that key,
        raise :class:`DuplicateWorkflowError` (``on_duplicate="return"``: return that workflow).
        """
        if delay and at is not None:
            raise InputError("give delay or at, not both")
        spec, _ = self._checked(name, input, crash_at=crash_at, check=check, timeout=timeout)
        options = placement(spec, queue, priority, concurrency_key, dedupe_key, on_duplicate)
        values = self._input_for(name, workflow_id, input)
        input_json = encode_input(values)
        if spec is not None and input is None:
            spec.check_input(values)
        workflow_id = workflow_id or uuid.uuid4().hex
        run_at = at if at is not None else self.store.now() + delay if delay else None
        deadline_at = _deadline(spec, timeout, run_at, self.store.now)
        with tracing.submitting(name, workflow_id) as trace:
            record, created = self.store.submit(
                workflow_id, name, input_json, run_at=run_at, crash_at=crash_at, deadline_at=deadline_at,
                trace_context=trace.context, **options,
            )  # fmt: skip
            trace.created = created
        if not created and not refuse_duplicate(record, workflow_id, on_duplicate):
            _check_same(record, name, input_json)
        return record

    def _checked(
        self, name: str, input: dict[str, Any] | None, *, crash_at: str | None, check: bool, timeout: float | None
    ) -> tuple[Any, str | None]:
        """Validate one submit's arguments (before the database is opened).

        Returns the workflow's spec (``check``; else None) and ``input`` as canonical JSON (None for None).
        """
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise InputError(f"timeout={timeout!r}: give a positive number of seconds")
        spec = self.registry.get(name) if check else None
        if crash_at is not None:
            from .context import parse_crash_at

            parse_crash_at(crash_at)
        input_json = None if input is None else encode_input(input)
        if spec is not None and input is not None:
            spec.check_input(input)
        return spec, input_json

    def submit_many(self, submissions: "Iterable[Submission]", *, labels: "Sequence[str] | None" = None) -> list[WorkflowRecord]:
        """Submit many workflows in one transaction, each idempotent by id as in :meth:`submit`; their rows.

        Any error (validation, or a :class:`ConflictError` for an id taken with another name or input)
        names its submission (``labels[i]``, default ``item N`` from 1) and writes nothing. ``input=None`` is ``{}``.
        """
        from .batch import submit_many

        return submit_many(self, list(submissions), labels)

    def _input_for(self, name: str, workflow_id: str | None, input: dict[str, Any] | None) -> dict[str, Any]:
        """``input``, or the recorded input of workflow ``workflow_id`` named ``name``, or ``{}``."""
        if input is not None:
            return input
        on_server = self.config.db.startswith(POSTGRES_SCHEMES)  # a server database: no file to look for
        if workflow_id is None or (self._store is None and not on_server and not Path(self.config.db).exists()):
            return {}  # no database file yet, so no such workflow: nothing is opened or created
        try:
            existing = self.store.get_workflow(workflow_id)
        except WorkflowNotFound:
            return {}
        return existing.input if existing.name == name else {}

    # ----------------------------------------------------------------- read

    def get(self, workflow_id: str) -> WorkflowRecord:
        """The workflow row; raises :class:`WorkflowNotFound`."""
        return self.store.get_workflow(workflow_id)

    def children(self, workflow_id: str) -> list[WorkflowRecord]:
        """The child workflows ``workflow_id`` started, oldest first."""
        return self.store.list_children(workflow_id)

    def steps(self, workflow_id: str) -> list[StepRecord]:
        """The workflow's step rows in start order (raises :class:`WorkflowNotFound`)."""
        self.store.get_workflow(workflow_id)
        return self.store.load_step_table(workflow_id)

    def lease(self, workflow_id: str) -> LeaseRecord | None:
        """The workflow's lease row, if it was ever claimed."""
        return self.store.get_lease(workflow_id)

    def list(self, status: str | None = None, limit: int = 50) -> list[WorkflowRecord]:
        """Newest workflows first."""
        return self.store.list_workflows(status, limit)

    def counts(self) -> dict[str, int]:
        """Workflow counts by status."""
        return self.store.count_by_status()

    def workers(self, *, include_stopped: bool = False, stale_after: float = 45.0) -> list[WorkerView]:
        """Worker rows with their leases and liveness (live ones only by default)."""
        held = self.store.leases_by_worker()
        now = self.store.now()  # other hosts' heartbeats are on the database clock
        views = []
        for worker in self.store.list_workers(alive_only=not include_stopped):
            alive = worker.state in ("running", "draining") and worker_alive(worker, stale_after=stale_after, now=now)
            views.append(WorkerView(worker, tuple(held.get(worker.id, ())), alive, now))
        return views

    def unserved_names(self) -> list[str]:
        """Names of PENDING workflows that no live worker registers."""
        served = {name for view in self.workers() if view.alive for name in view.worker.names}
        return sorted(name for name in self.store.pending_names() if name not in served)

    # ----------------------------------------------------------------- control

    def cancel(self, workflow_id: str) -> WorkflowRecord:
        """Cancel a PENDING or RUNNING workflow; its worker stops at its next write."""
        return self.store.cancel(workflow_id)

    def retry(self, workflow_id: str) -> WorkflowRecord:
        """Run a FAILED or CANCELLED workflow again; completed steps are kept."""
        return self.store.retry(workflow_id)

    def fork(self, workflow_id: str, *, from_step: str, new_id: str | None = None) -> str:
        """Start a PENDING copy of a workflow that replays its history before step ``from_step``.

        Same name and input; ``from_step`` and everything first recorded after
        it run afresh. The source may be in any status. Returns the new id
        (``new_id``, or ``ID~fork-N``). Raises :class:`WorkflowNotFound`,
        :class:`StepNotFound`, :class:`ConflictError` (``new_id`` taken) or
        :class:`InputError` (an empty ``new_id``).
        """
        if new_id is not None and not new_id.strip():
            raise InputError("the new workflow id is empty: pass a non-empty --id, or leave it out for ID~fork-N")
        return self.store.fork(workflow_id, from_step, new_id)

    def check_replay(self) -> "list[ReplayVerdict]":
        """Replay every unfinished workflow against the app's code, executing and writing nothing."""
        from .replaycheck import check_replay

        registry = self.registry  # a bad app fails before the database is opened
        return check_replay(self.store, registry)

    def wait(
        self,
        workflow_id: str,
        *,
        timeout: float | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        poll: float = 0.05,
    ) -> WorkflowRecord:
        """Block until the workflow ends; call ``on_step`` for each step row that changes.

        Returns the final row (COMPLETED, FAILED or CANCELLED); raises
        :class:`TimeoutError` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: dict[str, tuple[str, int]] = {}
        pause = threading.Event()
        while True:
            record = self.store.get_workflow(workflow_id)
            if on_step is not None:
                for row in self.store.load_step_table(workflow_id):
                    marker = (row.status, row.attempts)
                    if seen.get(row.step_key) != marker:
                        seen[row.step_key] = marker
                        on_step(row)
            if record.status in TERMINAL:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {workflow_id} is still {record.status} after {timeout}s")
            pause.wait(poll)

    def result(self, workflow_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the workflow and return its JSON result; raises :class:`WorkflowFailedError`."""
        record = self.wait(workflow_id, timeout=timeout)
        if record.status != Status.COMPLETED.value:
            summary = (record.error or record.status).splitlines()[0]
            raise WorkflowFailedError(f"workflow {workflow_id} {record.status}: {summary}")
        return record.result

    def send(self, workflow_id: str, topic: str, payload: Any = None, *, key: str | None = None) -> str:
        """Send ``payload`` (JSON) to ``workflow_id`` on ``topic``; returns the message id.

        Durable once returned; idempotent by ``key`` (the same key again sends
        nothing and returns the first id). A WAITING workflow wakes. Raises
        :class:`WorkflowNotFound`, :class:`InvalidStateError` (finished) or
        :class:`InputError` (payload not JSON-serialisable).
        """
        if not topic:
            raise InputError("a message needs a non-empty topic")
        try:
            payload_json = json.dumps(payload, allow_nan=False, default=to_json)
        except (TypeError, ValueError) as exc:
            raise InputError(f"payload is not JSON-serialisable: {exc}") from None
        message_id, _created = self.store.send_message(workflow_id, topic, payload_json, key=key)
        return message_id

    def events(self, workflow_id: str) -> dict[str, Any]:
        """All events ``workflow_id`` set, ``{key: value}``; raises :class:`WorkflowNotFound`."""
        self.store.get_workflow(workflow_id)
        return {k: None if v is None else json.loads(v) for k, v in self.store.get_events(workflow_id).items()}

    def get_event(self, workflow_id: str, key: str, *, timeout: float = 0, poll: float = 0.05) -> Any:
        """The value of event ``key`` of ``workflow_id``, polling up to ``timeout`` seconds; None if unset."""
        deadline = time.monotonic() + max(float(timeout), 0.0)
        pause = threading.Event()
        while True:
            found = self.events(workflow_id)
            if key in found:
                return found[key]
            if time.monotonic() >= deadline:
                return None
            pause.wait(poll)

    # ----------------------------------------------------------------- in-process

    def run_here(
        self,
        name: str,
        workflow_id: str | None = None,
        input: dict[str, Any] | None = None,
        *,
        crash_at: str | None = None,
        listener: Listener | None = None,
        stop_on_signals: bool = False,
    ) -> tuple[WorkflowRecord, Outcome | None]:
        """Submit (or find) a workflow and run or resume it in this process.

        ``input=None`` resumes an existing workflow with its recorded input
        (see :meth:`submit`). Returns the final row and this run's outcome
        (``None`` when the workflow had already ended before this call).
        ``stop_on_signals`` (main thread only; the CLI's ``durable run``):
        SIGINT/SIGTERM stop the run before its next step and hand the workflow
        back (outcome ``RELEASED``); a second one exits the process at once.
        """
        from .runner import run_here

        record = self.submit(name, workflow_id, input, crash_at=crash_at)
        outcome = run_here(self.store, self.registry, record.id, listener=listener, stop_on_signals=stop_on_signals)
        try:
            return self.store.get_workflow(record.id), outcome
        except StoreUnavailable:
            if outcome is None or not outcome.release_pending:
                raise
            return record, outcome  # abandoned because the store went away, and it still is
