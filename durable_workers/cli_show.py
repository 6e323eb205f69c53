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
from .records import Status


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
    if record.status == Status.COMPLETED.value:
        print_value("result", CORRUPT_MARK if "result" in record.corrupt else record.result, full=full)
    elif record.error:
        click.echo(f"error: {record.error}")
    print_family(record, children)
    _print_steps(rows)
