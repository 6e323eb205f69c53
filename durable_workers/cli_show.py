"""``durable status ID``: one workflow with its lease, wait, family, result or error, and steps."""

from __future__ import annotations

import time

import click

from .cli_format import (
    _emit_json,
    _print_steps,
    _step_json,
    _workflow_json,
    delayed_note,
    print_family,
    print_value,
    sleeping_note,
)
from .client import Client
from .codec import CORRUPT_MARK
from .queues import queue_blockers
from .records import DEFAULT_QUEUE, Status


def queue_rows(client: Client) -> list[dict[str, object]]:
    """``durable status``: per known queue, its depth by status and its limits (JSON-ready)."""
    depths = client.store.queue_depths()
    rows = []
    for q in client.store.list_queues():
        depth = depths.get(q.name, {})
        limits = {k: v for k, v in (("concurrency", q.concurrency), ("worker_concurrency", q.worker_concurrency),
                                    ("per_key", q.per_key_concurrency)) if v is not None}  # fmt: skip
        if q.rate_limit is not None:
            limits["rate"] = f"{q.rate_limit}/{q.rate_period:g}s"
        rows.append({"queue": q.name, **{s.lower(): depth.get(s, 0) for s in ("PENDING", "RUNNING", "WAITING")}, "limits": limits})
    return rows


def show_workflow(client: Client, workflow_id: str, as_json: bool, full: bool) -> None:
    """``durable status ID``: the workflow, its lease and steps (input and result previewed unless ``full``)."""
    record = client.get(workflow_id)
    rows = client.steps(workflow_id)
    lease = client.lease(workflow_id)
    children = client.children(workflow_id)
    if as_json:
        data = _workflow_json(record) | {
            "steps": [_step_json(r) for r in rows],
            "lease": None if lease is None else lease.__dict__,
            "error_detail": record.error,
            "children": [_workflow_json(c) for c in children],
            "waiting_on": queue_blockers(client.store, record, client.store.now())
            if record.status in (Status.PENDING.value, Status.WAITING.value) else [],
        }
        _emit_json(data)
        return
    click.echo(f"{record.id}  {record.name}  {record.status}  attempts={record.attempts}")
    if "input" in record.corrupt:
        click.echo(f"input: {CORRUPT_MARK}")
    else:
        print_value("input", record.input, full=full)
    if record.interruption and record.status != Status.COMPLETED.value:
        click.echo(f"last interruption: {record.interruption}")
    note = sleeping_note(record, time.time(), rows) or delayed_note(record, time.time())
    if note:
        click.echo(note)
    if lease is not None and lease.worker_id:
        left = (lease.expires_at or 0) - time.time()
        click.echo(f"lease: worker {lease.worker_id} token {lease.token} (expires in {left:.1f}s)")
    if record.status == Status.PENDING.value and record.name in client.unserved_names():
        click.echo(f"waiting: no live worker registers {record.name!r}")
    if record.status in (Status.PENDING.value, Status.WAITING.value):
        for reason in queue_blockers(client.store, record, client.store.now()):
            click.echo(f"waiting: {reason}")
    if record.queue != DEFAULT_QUEUE or record.priority or record.concurrency_key or record.dedupe_key:
        extras = [f"priority {record.priority}"] + [
            f"{what} {value!r}" for what, value in (("key", record.concurrency_key), ("dedupe key", record.dedupe_key)) if value
        ]
        click.echo(f"queue: {record.queue} ({', '.join(extras)})")
    if record.status == Status.COMPLETED.value:
        print_value("result", CORRUPT_MARK if "result" in record.corrupt else record.result, full=full)
    elif record.error:
        click.echo(f"error: {record.error}")
    print_family(record, children)
    _print_steps(rows)
