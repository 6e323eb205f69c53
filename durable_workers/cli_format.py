"""What the ``durable`` commands print: tables, previews and JSON of records."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from dataclasses import replace
from typing import Any, Callable, Sequence

import click

from .client import WorkerView
from .config import NO_TIMEOUT_WAKE_AT, PREVIEW_CHARS
from .codec import CORRUPT_MARK, decode_for_display, summarize_error
from .context import StepEvent
from .liveness import heartbeat_stale
from .records import TERMINAL, Status, StepRecord, StepStatus, WorkflowRecord


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _preview(text: str | None, width: int = 48) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(row: StepRecord) -> str:
    if row.started_at is None or row.finished_at is None:
        return "-"
    return f"{(row.finished_at - row.started_at) * 1000:.0f} ms"


def _decodes(row: StepRecord) -> list[tuple[str, bool]]:
    """Which stored columns of a step row decode (output, and error when set)."""
    checks = [("output", decode_for_display(row.output)[1])]
    if row.error is not None:
        checks.append(("error", decode_for_display(row.error)[1]))
    return checks


def _step_json(row: StepRecord) -> dict[str, Any]:
    return {
        "step_key": row.step_key,
        "name": row.name,
        "scope": row.scope,
        "position": row.position,
        "status": row.status,
        "attempts": row.attempts,
        "output": decode_for_display(row.output)[0],
        "corrupt": [name for name, ok in _decodes(row) if not ok],
        "error": summarize_error(row.error) or None,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "worker_id": row.worker_id,
    }


def _workflow_json(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "wake_at": record.wake_at,
        "waiting_for": record.waiting_for if record.status == Status.WAITING.value else None,
        "parent_id": record.parent_id,
        "deadline_at": record.deadline_at,
        "queue": record.queue,
        "priority": record.priority,
        "concurrency_key": record.concurrency_key,
        "dedupe_key": record.dedupe_key,
        "started_at": record.started_at,
        "input": CORRUPT_MARK if "input" in record.corrupt else record.input,
        "result": CORRUPT_MARK if "result" in record.corrupt else record.result,
        "corrupt": list(record.corrupt),
        "interruption": record.interruption,
        "error": record.error.splitlines()[0] if record.error else None,
        "attempts": record.attempts,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _print_steps(rows: list[StepRecord]) -> None:
    if not rows:
        click.echo("(no steps recorded yet)")
        return
    width = max(len("KEY"), *(len(r.step_key) for r in rows))
    click.echo(f"{'KEY':<{width}}  {'STATUS':<9}  {'ATTEMPTS':>8}  {'DURATION':>9}  OUTPUT")
    for r in rows:
        shown = r.output if r.status == StepStatus.COMPLETED.value else summarize_error(r.error)
        if not all(ok for _, ok in _decodes(r)):
            shown = f"{CORRUPT_MARK} {shown}"
        click.echo(
            f"{r.step_key:<{width}}  {r.status:<9}  {r.attempts:>8}  {_duration(r):>9}  {_preview(shown)}"
        )


def event_printer() -> Callable[[StepEvent], None]:
    """A listener for ``durable run``: each step event on a line; a child workflow's keys carry its id."""
    root: list[str] = []

    def show(event: StepEvent) -> None:
        root[:] = root or [event.workflow_id]
        if event.workflow_id != root[0]:
            event = replace(event, step_key=f"[{event.workflow_id}] {event.step_key}")
        _print_event(event)

    return show


def _print_event(event: StepEvent) -> None:
    if event.kind == "replayed":
        click.echo(f"  replayed  {event.step_key}  (recorded result, not run again)")
    elif event.kind == "completed":
        click.echo(f"  ran       {event.step_key}  attempt {event.attempt}, {event.duration * 1000:.0f} ms")
    elif event.kind == "retrying":
        click.echo(f"  retrying  {event.step_key}  attempt {event.attempt} failed: {event.error}")
    elif event.kind == "failed":
        click.echo(f"  failed    {event.step_key}  {event.error}")
    elif event.kind == "replayed-failure":
        click.echo(f"  replayed  {event.step_key}  (recorded failure: {event.error})")


def _print_end(record: WorkflowRecord) -> None:
    if record.status == Status.COMPLETED.value:
        text = json.dumps(CORRUPT_MARK if "result" in record.corrupt else record.result)
        if len(text) > PREVIEW_CHARS:
            text = f"{text[:PREVIEW_CHARS]}… ({len(text):,} characters; `durable status {record.id} --full` shows all)"
        click.echo(f"{record.id} COMPLETED: {text}")
    else:
        summary = (record.error or "").splitlines()[0] if record.error else ""
        click.echo(f"{record.id} {record.status}: {summary}")


def print_family(record: WorkflowRecord, children: Sequence[WorkflowRecord]) -> None:
    """``parent: ID`` and one line per child workflow (id, name, status, error or result preview)."""
    if record.parent_id:
        click.echo(f"parent: {record.parent_id}")
    if record.deadline_at is not None and record.status not in TERMINAL:
        at = datetime.fromtimestamp(record.deadline_at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        click.echo(f"deadline: {at}")
    if not children:
        return
    click.echo(f"children ({len(children)}):")
    for child in children:
        detail = (child.error or "").splitlines()[0] if child.error else ""
        if child.status == Status.COMPLETED.value:
            detail = json.dumps(child.result)
        click.echo(f"  {child.id}  {child.name}  {child.status}  {detail[:PREVIEW_CHARS]}".rstrip())


def _awaited_topic(steps: Sequence[StepRecord]) -> str | None:
    """The topic of the ``ctx.recv`` a workflow waits in (its last step is that receive's deadline record)."""
    from .messaging import RECV_WAIT

    if not steps or steps[-1].name != RECV_WAIT or not steps[-1].output:
        return None
    try:
        return str(json.loads(steps[-1].output)["topic"])
    except (ValueError, KeyError, TypeError):
        return None


def sleeping_note(record: WorkflowRecord, now: float, steps: Sequence[StepRecord] = ()) -> str:
    """``sleeping until <ISO time> (in 2m3s)`` (or what message it waits for) for a WAITING workflow, else ``""``."""
    if record.status != Status.WAITING.value or record.wake_at is None:
        return ""
    waiting = record.waiting_for or ""
    if waiting.startswith("child:"):
        due = " (it ended: due now)" if record.wake_at <= now else ""
        return f"waiting for child workflow {waiting[len('child:'):]}{due}"
    topic = waiting[len("message:"):] if waiting.startswith("message:") else _awaited_topic(steps)
    if record.wake_at >= NO_TIMEOUT_WAKE_AT:
        return f"waiting for a message on {topic!r} with no timeout" if topic else "waiting for a message, no timeout"
    what = f"waiting for a message on {topic!r}" if topic else "sleeping"
    return f"{what} until {until(record.wake_at, now)}"


def until(when: float, now: float) -> str:
    """``<ISO time> (in 2m3s)``, or ``<ISO time> (due now)`` once it has come."""
    at = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    left = int(when - now)
    if left <= 0:
        return f"{at} (due now)"
    hours, rest = divmod(left, 3600)
    span = (f"{hours}h" if hours else "") + (f"{rest // 60}m" if hours or rest >= 60 else "") + f"{rest % 60}s"
    return f"{at} (in {span})"


def delayed_note(record: WorkflowRecord, now: float) -> str:
    """``delayed until <ISO time> (in 2m3s)`` for a PENDING workflow whose start is ahead, else ``""``."""
    if record.status != Status.PENDING.value or record.run_at <= now:
        return ""
    return f"delayed until {until(record.run_at, now)}"


def _stale(view: WorkerView) -> bool:
    """The worker looks alive but its heartbeat is overdue (frozen, or its store writes fail)."""
    from .worker import WorkerOptions

    return view.alive and heartbeat_stale(view.worker, default_ttl=WorkerOptions.ttl, now=view.now)


def _worker_json(view: WorkerView) -> dict[str, Any]:
    w = view.worker
    return {
        "id": w.id,
        "host": w.host,
        "host_id": w.host_id,
        "pid": w.pid,
        "state": w.state,
        "alive": view.alive,
        "stale": _stale(view),
        "names": list(w.names),
        "workflows": [lease.workflow_id for lease in view.leases],
        "heartbeat_at": w.heartbeat_at,
    }


def print_value(label: str, value: Any, *, full: bool = False) -> None:
    """Print ``label: JSON``; unless ``full``, at most ``PREVIEW_CHARS`` of it and its size."""
    text = json.dumps(value)
    if full or len(text) <= PREVIEW_CHARS:
        click.echo(f"{label}: {text}")
        return
    click.echo(f"{label}: {text[:PREVIEW_CHARS]}… ({len(text):,} characters; --full shows all)")
