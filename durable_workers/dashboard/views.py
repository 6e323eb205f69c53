"""What each dashboard page shows, read from the store (plain dicts for the templates; no HTTP here).

Each function runs in a worker thread (the store is synchronous, one
connection per thread) and returns the template's context.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from ..backends.dashboard import WorkflowFilter, cursor_text, page_cursor
from ..client import Client
from ..codec import decode_for_display, summarize_error
from ..errors import WorkflowNotFound
from ..records import ACTIVE, Status, StepRecord, StepStatus
from .charts import finishes_chart, step_timeline
from .why import why_not_running

#: Rows per page of the workflow list (``?limit=`` may lower or raise it up to ``MAX_PAGE``).
PAGE = 50
MAX_PAGE = 500


def overview(client: Client) -> dict[str, Any]:
    """Counts by status, finishes per minute over the last hour, queue depths, live workers."""
    store = client.store
    now = store.now()
    depths = store.queue_depths()
    queues = []
    for q in store.list_queues():
        limits = [f"{what} {v}" for what, v in (("concurrency", q.concurrency), ("per worker", q.worker_concurrency),
                                                  ("per key", q.per_key_concurrency)) if v is not None]  # fmt: skip
        if q.rate_limit is not None:
            limits.append(f"rate {q.rate_limit}/{q.rate_period:g}s")
        queues.append({"name": q.name, "depth": depths.get(q.name, {}), "limits": ", ".join(limits) or "unlimited"})
    workers = [v for v in client.workers() if v.alive]
    return {
        "counts": store.count_by_status(),
        "chart": finishes_chart(store.finished_per_minute(minutes=60, now=now), now),
        "queues": queues,
        "workers": workers,
        "running": sum(len(v.leases) for v in workers),
        "now": now,
    }


def _epoch(text: str | None) -> float | None:
    """A ``datetime-local`` field (read as UTC) or epoch seconds, as epoch seconds; None when empty or bad."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def list_filter(params: Mapping[str, Any], statuses: list[str]) -> WorkflowFilter:
    """The list's filter from its query string (unknown statuses dropped)."""
    known = {s.value for s in Status}
    return WorkflowFilter(
        statuses=tuple(s for s in statuses if s in known),
        name=params.get("name") or None,
        queue=params.get("queue") or None,
        id_prefix=params.get("prefix") or None,
        created_from=_epoch(params.get("from")),
        created_to=_epoch(params.get("to")),
    )


def workflow_list(client: Client, params: Mapping[str, Any], statuses: list[str]) -> dict[str, Any]:
    """One page of the filtered list and the query string of the next page."""
    where = list_filter(params, statuses)
    try:
        limit = min(max(int(params.get("limit") or PAGE), 1), MAX_PAGE)
    except ValueError:
        limit = PAGE
    page = client.store.workflow_page(where, after=page_cursor(params.get("after")), limit=limit)
    keep = [(k, v) for k, v in params.items() if k not in ("after", "status") and v]
    keep += [("status", s) for s in where.statuses]
    return {
        "rows": page.rows,
        "where": where,
        "params": params,
        "statuses": [s.value for s in Status],
        "next_query": keep + [("after", cursor_text(page.after))] if page.after else None,
        "first_query": keep if params.get("after") else None,
        "now": client.store.now(),
    }


def _pretty(text: str | None) -> str:
    """Stored JSON text indented for reading (as it is when it does not decode)."""
    value, ok = decode_for_display(text)
    return json.dumps(value, indent=2, default=str) if ok else str(text)


def _shown(step: StepRecord) -> str:
    """A step's output (COMPLETED) or its error's one line."""
    return _pretty(step.output) if step.status == StepStatus.COMPLETED.value else summarize_error(step.error)


def workflow_detail(client: Client, workflow_id: str) -> dict[str, Any] | None:
    """Everything about one workflow (None when there is no such workflow)."""
    store = client.store
    try:
        record = store.get_workflow(workflow_id)
    except WorkflowNotFound:
        return None
    now = store.now()
    steps = store.load_step_table(workflow_id)
    lease = store.get_lease(workflow_id)
    holder = store.get_worker(lease.worker_id) if lease is not None and lease.worker_id else None
    parent = None
    if record.parent_id:
        try:
            parent = store.get_workflow(record.parent_id)
        except WorkflowNotFound:
            parent = None
    return {
        "wf": record,
        "input": json.dumps(record.input, indent=2, default=str),
        "result": json.dumps(record.result, indent=2, default=str) if record.status == Status.COMPLETED.value else None,
        "steps": [{"row": s, "shown": _shown(s)} for s in steps],
        "timeline": step_timeline(steps, now),
        "lease": lease,
        "holder": holder,
        "why": why_not_running(client, record, steps, now),
        "messages": store.workflow_messages(workflow_id),
        "events": store.get_events(workflow_id),
        "children": store.list_children(workflow_id),
        "parent": parent,
        "parent_id": record.parent_id,
        "active": record.status in ACTIVE,
        "retryable": record.status in (Status.FAILED.value, Status.CANCELLED.value),
        "now": now,
    }


def workers(client: Client, include_stopped: bool) -> dict[str, Any]:
    """Worker rows: pid, host, state, heartbeat age and the workflows each holds."""
    views = client.workers(include_stopped=include_stopped)
    return {"workers": views, "include_stopped": include_stopped, "now": client.store.now()}
