"""The dashboard's store reads, on both backends: keyset pages, filters, finishes per minute, messages.

A page walk visits every matching workflow exactly once, newest first, however
the rows tie on ``created_at`` and whatever mixes of statuses the filter spans.
"""

from __future__ import annotations

import pytest

from durable_workers.backends import Store
from durable_workers.backends.dashboard import WorkflowFilter, cursor_text, page_cursor
from durable_workers.records import Status
from tests.contract.conftest import Backend

TTL = 600.0
T0 = 1_700_000_000.0


def _walk(store: Store, where: WorkflowFilter, limit: int) -> list[str]:
    """Every id of every page, following the cursors (through their text form, as the dashboard does)."""
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page = store.workflow_page(where, after=cursor, limit=limit)
        assert len(page.rows) <= limit
        seen += [r.id for r in page.rows]
        if page.after is None:
            return seen
        cursor = page_cursor(cursor_text(page.after))
    raise AssertionError("the page walk did not end")


def _seed(store: Store) -> list[str]:
    """30 workflows over two names and queues, ties on created_at (three per second); newest first."""
    ids = []
    for i in range(30):
        name, queue = ("pay", "money") if i % 2 else ("mail", "default")
        store.submit(f"wf-{i:02d}", name, "{}", queue=queue, now=T0 + i // 3)
        ids.append(f"wf-{i:02d}")
    for workflow_id in ("wf-04", "wf-05", "wf-17"):
        store.cancel(workflow_id, now=T0 + 100)
    claim = store.claim_workflow("wf-20", "w1", ttl=TTL)
    assert claim is not None
    return sorted(ids, key=lambda i: (T0 + int(i[3:]) // 3, i), reverse=True)


@pytest.mark.parametrize("limit", [1, 4, 7, 50])
def test_page_walk_visits_every_row_once_newest_first(backend: Backend, limit: int) -> None:
    store = backend.open("d")
    newest_first = _seed(store)
    assert _walk(store, WorkflowFilter(), limit) == newest_first


def test_filters_narrow_the_walk(backend: Backend) -> None:
    store = backend.open("d")
    newest_first = _seed(store)
    odd = [i for i in newest_first if int(i[3:]) % 2]
    assert _walk(store, WorkflowFilter(name="pay"), 4) == odd
    assert _walk(store, WorkflowFilter(queue="money"), 4) == odd
    assert _walk(store, WorkflowFilter(statuses=(Status.CANCELLED.value,)), 2) == ["wf-17", "wf-05", "wf-04"]
    both = (Status.CANCELLED.value, Status.RUNNING.value)
    assert _walk(store, WorkflowFilter(statuses=both), 1) == ["wf-20", "wf-17", "wf-05", "wf-04"]
    assert _walk(store, WorkflowFilter(id_prefix="wf-1"), 3) == [f"wf-{i}" for i in range(19, 9, -1)]
    assert _walk(store, WorkflowFilter(id_prefix="WF-1"), 3) == []  # case-sensitive
    assert _walk(store, WorkflowFilter(id_prefix="wf-%"), 3) == []  # no wildcard
    ranged = WorkflowFilter(created_from=T0 + 2, created_to=T0 + 4, name="mail")
    assert _walk(store, ranged, 2) == ["wf-10", "wf-08", "wf-06"]


def test_page_rejects_a_bad_limit(backend: Backend) -> None:
    store = backend.open("d")
    with pytest.raises(ValueError):
        store.workflow_page(WorkflowFilter(), limit=0)


def test_a_bad_cursor_text_is_no_cursor() -> None:
    assert page_cursor("") is None and page_cursor("nonsense") is None and page_cursor("x:y") is None
    assert page_cursor(cursor_text((T0 + 0.1, "a:b"))) == (T0 + 0.1, "a:b")


def _end(store: Store, workflow_id: str, status: Status, at: float) -> None:
    claim = store.claim_workflow(workflow_id, "w1", ttl=TTL, now=at - 1)
    assert claim is not None
    error = None if status == Status.COMPLETED else "RuntimeError: boom"
    store.finish_workflow(
        workflow_id, status, result_json="null" if error is None else None, error=error,
        worker_id="w1", token=claim.token, now=at,
    )  # fmt: skip


def test_finished_per_minute_counts_each_end_in_its_minute(backend: Backend) -> None:
    store = backend.open("d")
    now = T0 + 10_000
    ends = [(Status.COMPLETED, now - 30), (Status.COMPLETED, now - 45), (Status.FAILED, now - 61),
            (Status.COMPLETED, now - 59 * 60 - 1), (Status.COMPLETED, now - 3601), (Status.FAILED, now - 5)]
    for i, (status, at) in enumerate(ends):
        store.submit(f"e{i}", "pay", "{}", now=T0)
        _end(store, f"e{i}", status, at)
    store.submit("open", "pay", "{}", now=now - 10)  # unfinished: not counted
    counts = store.finished_per_minute(minutes=60, now=now)
    assert len(counts["COMPLETED"]) == 60 and len(counts["FAILED"]) == 60
    assert counts["COMPLETED"][59] == 2 and counts["COMPLETED"][0] == 1 and sum(counts["COMPLETED"]) == 3
    assert counts["FAILED"][59] == 1 and counts["FAILED"][58] == 1 and sum(counts["FAILED"]) == 2
    with pytest.raises(ValueError):
        store.finished_per_minute(minutes=0)


def test_workflow_messages_lists_a_workflows_messages_oldest_first(backend: Backend) -> None:
    store = backend.open("d")
    store.submit("m1", "pay", "{}")
    store.submit("m2", "pay", "{}")
    store.send_message("m1", "go", '{"n": 1}', now=T0 + 1)
    store.send_message("m1", "stop", None, key="k", now=T0 + 2)
    store.send_message("m2", "go", "2", now=T0)
    listed = store.workflow_messages("m1")
    assert [(m.topic, m.payload, m.key, m.consumed_by_step) for m in listed] == [
        ("go", '{"n": 1}', None, None), ("stop", None, "k", None),
    ]  # fmt: skip
    assert store.workflow_messages("nobody") == []


def test_a_restarted_step_keeps_each_earlier_attempt_in_its_history(backend: Backend) -> None:
    from durable_workers.records import StepStatus, step_attempts

    store = backend.open("history")
    store.submit("wf", "pay", "{}", now=T0)

    def start(worker: str, token: int, now: float) -> None:
        store.start_step("wf", "charge#1", name="charge", scope="", position=0, worker_id=worker, token=token,
                         max_attempts=5, new=token == 1, now=now)  # fmt: skip

    first = store.claim_workflow("wf", "w1", ttl=TTL, now=T0)
    assert first is not None
    start("w1", first.token, T0 + 1)  # w1 dies inside the step: the attempt never finishes
    second = store.claim_workflow("wf", "w2", ttl=TTL, now=T0 + TTL + 1)
    assert second is not None
    start("w2", second.token, T0 + TTL + 2)
    store.fail_step("wf", "charge#1", '{"type": "ValueError", "message": "no"}', final=False, worker_id="w2",
                    token=second.token, now=T0 + TTL + 3)  # fmt: skip
    start("w2", second.token, T0 + TTL + 4)
    store.complete_step("wf", "charge#1", '"ok"', worker_id="w2", token=second.token, now=T0 + TTL + 5)
    (step,) = store.load_steps("wf")
    assert step.attempts == 3 and step.status == StepStatus.COMPLETED.value
    shown = [(a.started_at - T0, None if a.finished_at is None else a.finished_at - T0, a.status, a.worker_id)
             for a in step_attempts(step)]  # fmt: skip
    assert shown == [(1.0, None, "RUNNING", "w1"), (TTL + 2, TTL + 3, "FAILED", "w2"), (TTL + 4, TTL + 5, "COMPLETED", "w2")]
