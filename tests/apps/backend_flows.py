"""Workflows for the backend tests (tests/integration/test_backends.py, tests/contract/).

``backend_submit_elsewhere`` is the reported case of issue 9: a step that opens a
``Client`` on *another* database file (another app's), submits there and reads
back, after which the workflow's own steps must still be recorded in its own
database. Every name here starts with ``backend_`` so it cannot collide with
other test apps.
"""

from __future__ import annotations

from typing import Any

from durable_workers import Client, Context, default_registry, workflow


@workflow(name="backend_other_side")
def backend_other_side(ctx: Context) -> str:
    """What the other database's app would run (never run by these tests)."""
    return ctx.step("other", lambda: "other")


def submit_to(other_db: str, workflow_id: str) -> dict[str, Any]:
    """Submit ``backend_other_side`` to ``other_db`` through a Client of its own; return what it saw."""
    client = Client(db=other_db, registry=default_registry)
    try:
        record = client.submit("backend_other_side", workflow_id, {})
        return {"id": record.id, "status": client.get(record.id).status, "count": len(client.list())}
    finally:
        client.close()


@workflow(name="backend_submit_elsewhere")
def backend_submit_elsewhere(ctx: Context, other_db: str) -> dict[str, Any]:
    """Submit to another database from a step, then go on with steps of its own."""
    before = ctx.step("before", lambda: "before")
    seen = ctx.step("submit_elsewhere", lambda: submit_to(other_db, f"from-{ctx.workflow_id}"))
    after = ctx.step("after", lambda: "after")
    return {"before": before, "seen": seen, "after": after}
