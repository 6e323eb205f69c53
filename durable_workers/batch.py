"""Batch submit: many workflows in one transaction (``Client.submit_many``, ``durable-submit --batch``).

Each submission is validated as :meth:`Client.submit` validates one (the
registry, input, ``crash_at``, ``timeout``); idempotency is per id, checked
inside the transaction with the same rule as a single submit, so a conflict
anywhere writes nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from . import tracing
from .backends import NewWorkflow
from .errors import ConflictError, DurableError, InputError
from .queues import placement
from .records import WorkflowRecord

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

#: Keys of one batch line, and of its ``options``.
LINE_KEYS = frozenset({"name", "id", "input", "options"})
OPTION_KEYS = frozenset({"delay", "timeout", "crash_at", "queue", "priority", "concurrency_key", "dedupe_key"})


@dataclass(frozen=True)
class Submission:
    """One workflow of a batch: what :meth:`Client.submit` takes (``input=None`` is ``{}`` here)."""

    name: str
    workflow_id: str | None = None
    input: dict[str, Any] | None = None
    delay: float = 0.0
    timeout: float | None = None
    crash_at: str | None = None
    queue: str | None = None
    priority: int = 0
    concurrency_key: str | None = None
    dedupe_key: str | None = None


def _relabel(exc: DurableError, label: str) -> DurableError:
    """``exc`` again, its message prefixed by where the submission came from."""
    return type(exc)(f"{label}: {exc}")


def _validated(client: "Client", submissions: list[Submission], names: list[str]) -> list[tuple[Any, Any, Any]]:
    """Each submission's (spec, canonical input JSON, queue options), as a single submit validates it; errors name it."""
    checked = []
    client.registry  # noqa: B018 - a bad app is one error of its own, before any line
    for item, label in zip(submissions, names):
        try:
            if isinstance(item.delay, bool) or not isinstance(item.delay, (int, float)) or not 0 <= item.delay < float("inf"):
                raise InputError(f"delay={item.delay!r}: give a number of seconds of at least 0")
            values = {} if item.input is None else item.input
            spec, input_json = client._checked(item.name, values, crash_at=item.crash_at, check=True, timeout=item.timeout)
            options = placement(spec, item.queue, item.priority, item.concurrency_key, item.dedupe_key, "raise")
            checked.append((spec, input_json, options))
        except DurableError as exc:
            raise _relabel(exc, label) from None
    return checked


def submit_many(client: "Client", submissions: list[Submission], labels: Sequence[str] | None) -> list[WorkflowRecord]:
    """:meth:`Client.submit_many`: validate all, then one store transaction; the rows in submission order."""
    from .client import _check_same, _deadline

    names = list(labels) if labels is not None else [f"item {n}" for n in range(1, len(submissions) + 1)]
    checked = _validated(client, submissions, names)  # before the database is opened
    if not submissions:
        return []
    start, clock = time.time(), client.store.now()
    trace_context = tracing.submit_context("submit_many", batch=len(submissions))
    rows: list[NewWorkflow] = []
    first: dict[str, int] = {}  # id -> index of its first submission
    order: list[int] = []  # submission index -> index in rows
    for index, (item, (spec, input_json, options)) in enumerate(zip(submissions, checked)):
        workflow_id = item.workflow_id or uuid.uuid4().hex
        if workflow_id in first:
            earlier = rows[order[first[workflow_id]]]
            if (earlier.name, earlier.input_json) != (item.name, input_json):
                raise ConflictError(f"{names[index]}: workflow {workflow_id} is also on {names[first[workflow_id]]} "
                                    f"with another name or input")  # fmt: skip
            order.append(order[first[workflow_id]])
            continue
        first[workflow_id] = index
        run_at = start + item.delay if item.delay else None
        order.append(len(rows))
        rows.append(NewWorkflow(
            workflow_id, item.name, input_json, run_at, item.crash_at, _deadline(spec, item.timeout, run_at, lambda: clock),
            trace_context=trace_context, **options,
        ))  # fmt: skip

    def check(row_index: int, existing: WorkflowRecord) -> None:
        row = rows[row_index]
        try:
            _check_same(existing, row.name, row.input_json)
        except ConflictError as exc:
            raise _relabel(exc, names[first[row.id]]) from None

    results = client.store.submit_many(rows, check=check)
    return [results[i][0] for i in order]


def parse_batch(text: str) -> tuple[list[Submission], list[str]]:
    """The submissions of a JSON-lines batch (one object a line: name, id, input, options) and their labels.

    Labels are ``line N``; blank lines are skipped. Raises
    :class:`InputError` naming the first bad line (not JSON, not an object,
    unknown keys, a missing name, bad options).
    """
    found, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append(_submission(json.loads(line)))
        except ValueError as exc:
            raise InputError(f"line {number}: {exc}") from None
        labels.append(f"line {number}")
    return found, labels


def _submission(data: Any) -> Submission:
    """One batch line's object as a Submission (``ValueError`` with a one-line reason)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object with name, id, input, options; got {type(data).__name__}")
    unknown = set(data) - LINE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; a line has {', '.join(sorted(LINE_KEYS))}")
    name, workflow_id, options = data.get("name"), data.get("id"), data.get("options") or {}
    if not isinstance(name, str) or not name:
        raise ValueError("a line needs a workflow \"name\" (a non-empty string)")
    if workflow_id is not None and (not isinstance(workflow_id, str) or not workflow_id.strip()):
        raise ValueError("\"id\" must be a non-empty string (or left out for a random one)")
    if not isinstance(options, dict) or set(options) - OPTION_KEYS:
        raise ValueError(f"\"options\" must be an object with some of {', '.join(sorted(OPTION_KEYS))}")
    if not isinstance(options.get("crash_at", ""), str):
        raise ValueError("options.crash_at must be a string STEP:before|returned|after")
    return Submission(
        name, workflow_id, data.get("input"), delay=options.get("delay", 0.0), timeout=options.get("timeout"),
        crash_at=options.get("crash_at"), queue=options.get("queue"), priority=options.get("priority", 0),
        concurrency_key=options.get("concurrency_key"), dedupe_key=options.get("dedupe_key"),
    )  # fmt: skip
