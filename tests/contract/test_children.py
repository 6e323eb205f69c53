"""Child workflows and deadlines in the store, on both backends.

Starting a child is fenced by the parent's lease and idempotent; a child's end wakes a
parent waiting on it (and only such a parent); a child that ended before the parent
suspended makes the parent due at once; cancelling cancels the unfinished descendants
and fences out their owners; the deadline sweep ends overdue workflows CANCELLED.
"""

from __future__ import annotations

import threading
import time

import pytest

from durable_workers import ConflictError, LeaseLost
from durable_workers.config import NO_TIMEOUT_WAKE_AT
from durable_workers.records import DEADLINE_EXCEEDED, Status
from tests.contract.conftest import Backend

TTL = 30.0


def _parent(backend: Backend, name: str):  # type: ignore[no-untyped-def]
    store = backend.open(name)
    store.submit("p", "parent", "{}")
    claim = store.claim_next("w", ["parent"], ttl=TTL)
    assert claim is not None
    return store, claim


def _run_child(store, child_id: str, status: Status = Status.COMPLETED):  # type: ignore[no-untyped-def]
    claim = store.claim_workflow(child_id, "wc", ttl=TTL)
    assert claim is not None and claim.workflow.parent_id == "p"
    store.finish_workflow(
        child_id, status, result_json='"ok"' if status is Status.COMPLETED else None,
        error=None if status is Status.COMPLETED else "RuntimeError: boom", worker_id="wc", token=claim.token,
        parent_id="p",
    )  # fmt: skip


def test_starting_a_child_is_fenced_and_idempotent(backend: Backend) -> None:
    store, claim = _parent(backend, "start")
    first = store.start_child("p", "p/child#1", "child", '{"a": 1}', worker_id="w", token=claim.token)
    again = store.start_child("p", "p/child#1", "child", '{"a": 1}', worker_id="w", token=claim.token)
    assert (first.status, first.parent_id, first.input) == (Status.PENDING.value, "p", {"a": 1})
    assert again.id == first.id and [c.id for c in store.list_children("p")] == ["p/child#1"]
    with pytest.raises(LeaseLost):
        store.start_child("p", "p/child#2", "child", "{}", worker_id="w", token=claim.token + 1)
    store.submit("other", "child", "{}")
    with pytest.raises(ConflictError):
        store.start_child("p", "other", "child", "{}", worker_id="w", token=claim.token)
    assert [c.id for c in store.list_children("p")] == ["p/child#1"]


def test_a_child_end_wakes_the_parent_waiting_on_it_and_no_other(backend: Backend) -> None:
    store, claim = _parent(backend, "wake")
    for child in ("c1", "c2"):
        store.start_child("p", child, "child", "{}", worker_id="w", token=claim.token)
    store.suspend_workflow("p", NO_TIMEOUT_WAKE_AT, worker_id="w", token=claim.token, child="c1")
    assert store.get_workflow("p").waiting_for == "child:c1"
    _run_child(store, "c2")  # not the awaited child: the parent stays asleep
    assert store.get_workflow("p").wake_at == NO_TIMEOUT_WAKE_AT
    _run_child(store, "c1", Status.FAILED)
    parent = store.get_workflow("p")
    assert parent.status == Status.WAITING.value and parent.wake_at is not None and parent.wake_at <= store.now()
    woken = store.claim_next("w2", ["parent"], ttl=TTL)
    assert woken is not None and woken.workflow.id == "p"


def test_a_child_that_ended_already_makes_the_suspending_parent_due_at_once(backend: Backend) -> None:
    store, claim = _parent(backend, "ended")
    store.start_child("p", "c1", "child", "{}", worker_id="w", token=claim.token)
    _run_child(store, "c1")
    store.suspend_workflow("p", NO_TIMEOUT_WAKE_AT, worker_id="w", token=claim.token, child="c1")
    assert store.get_workflow("p").wake_at <= store.now()


def test_a_child_ending_while_its_parent_suspends_never_loses_the_wake_up(backend: Backend) -> None:
    """Many rounds of a child's end racing its parent's suspend: the parent is always due afterwards."""
    store = backend.open("race")
    for round_ in range(20):
        parent_id = f"p{round_}"
        store.submit(parent_id, "parent", "{}")
        claim = store.claim_workflow(parent_id, "w", ttl=TTL)
        child = store.start_child(parent_id, f"{parent_id}/c", "child", "{}", worker_id="w", token=claim.token)
        child_claim = store.claim_workflow(child.id, "wc", ttl=TTL)
        go = threading.Barrier(2)

        def end_child() -> None:
            go.wait()
            store.finish_workflow(
                child.id, Status.COMPLETED, result_json="1", worker_id="wc", token=child_claim.token, parent_id=parent_id
            )
            store.close()

        racer = threading.Thread(target=end_child)
        racer.start()
        go.wait()
        store.suspend_workflow(parent_id, NO_TIMEOUT_WAKE_AT, worker_id="w", token=claim.token, child=child.id)
        racer.join(30)
        assert store.get_workflow(parent_id).wake_at <= store.now(), f"round {round_}: the wake-up was lost"


def test_cancel_cascades_to_unfinished_descendants_and_fences_their_owners(backend: Backend) -> None:
    store, claim = _parent(backend, "cascade")
    store.start_child("p", "c1", "child", "{}", worker_id="w", token=claim.token)
    store.start_child("p", "c2", "child", "{}", worker_id="w", token=claim.token)
    _run_child(store, "c2")
    c1 = store.claim_workflow("c1", "wc", ttl=TTL)
    store.start_child("c1", "g1", "grandchild", "{}", worker_id="wc", token=c1.token)
    store.cancel("p")
    statuses = {w.id: (w.status, w.error) for w in store.list_workflows()}
    assert statuses["p"] == (Status.CANCELLED.value, "cancelled")
    assert statuses["c2"][0] == Status.COMPLETED.value  # finished children are kept as they are
    assert statuses["c1"] == (Status.CANCELLED.value, "cancelled: cancelled (parent p)")
    assert statuses["g1"] == (Status.CANCELLED.value, "cancelled: cancelled (parent c1)")
    with pytest.raises(LeaseLost):  # the child's worker is fenced out
        store.complete_step("c1", "s#1", "1", worker_id="wc", token=c1.token)


def test_cancelling_a_child_wakes_its_waiting_parent(backend: Backend) -> None:
    store, claim = _parent(backend, "cancel-child")
    store.start_child("p", "c1", "child", "{}", worker_id="w", token=claim.token)
    store.suspend_workflow("p", NO_TIMEOUT_WAKE_AT, worker_id="w", token=claim.token, child="c1")
    store.cancel("c1")
    assert store.get_workflow("p").wake_at <= store.now()


def test_the_deadline_sweep_cancels_overdue_workflows_and_their_children(backend: Backend) -> None:
    store = backend.open("sweep")
    now = store.now()
    store.submit("due", "n", "{}", deadline_at=now - 1)
    store.submit("later", "n", "{}", deadline_at=now + 3600)
    store.submit("none", "n", "{}")
    claim = store.claim_workflow("due", "w", ttl=TTL)
    store.start_child("due", "due/c", "n", "{}", worker_id="w", token=claim.token)
    assert store.expire_deadlines() == ["due"]
    statuses = {w.id: (w.status, w.error) for w in store.list_workflows()}
    assert statuses["due"] == (Status.CANCELLED.value, DEADLINE_EXCEEDED)
    assert statuses["due/c"] == (Status.CANCELLED.value, f"cancelled: {DEADLINE_EXCEEDED} (parent due)")
    assert statuses["later"][0] == statuses["none"][0] == Status.PENDING.value
    assert store.expire_deadlines() == []
    with pytest.raises(LeaseLost):
        store.complete_step("due", "s#1", "1", worker_id="w", token=claim.token)


def test_a_waiting_workflow_sleeps_no_later_than_its_deadline(backend: Backend) -> None:
    store = backend.open("deadline-wake")
    now = time.time()
    store.submit("wf", "n", "{}", now=now)
    claim = store.claim_next("w", ["n"], ttl=TTL, now=now)
    store.suspend_workflow("wf", now + 3600, worker_id="w", token=claim.token, deadline_at=now + 5, now=now)
    row = store.get_workflow("wf")
    assert (row.wake_at, row.deadline_at) == (now + 5, now + 5)


def test_any_workflow_waiting_on_a_child_is_woken_by_its_end(backend: Backend) -> None:
    """A fork of a parent replays the parent's child start and waits on the same child."""
    store, claim = _parent(backend, "fork-wake")
    store.start_child("p", "c1", "child", "{}", worker_id="w", token=claim.token)
    store.submit("p~fork-1", "parent", "{}")
    fork = store.claim_workflow("p~fork-1", "wf", ttl=TTL)
    store.suspend_workflow("p~fork-1", NO_TIMEOUT_WAKE_AT, worker_id="wf", token=fork.token, child="c1")
    _run_child(store, "c1")
    assert store.get_workflow("p~fork-1").wake_at <= store.now()


def test_a_child_id_reused_for_another_child_is_a_conflict(backend: Backend) -> None:
    store, claim = _parent(backend, "reuse")
    store.start_child("p", "c1", "child", '{"a": 1}', worker_id="w", token=claim.token)
    with pytest.raises(ConflictError):
        store.start_child("p", "c1", "child", '{"a": 2}', worker_id="w", token=claim.token)
    with pytest.raises(ConflictError):
        store.start_child("p", "c1", "other", '{"a": 1}', worker_id="w", token=claim.token)


def test_retry_revives_the_children_the_end_took_along_and_renews_the_deadline(backend: Backend) -> None:
    store = backend.open("revive")
    now = store.now()
    store.submit("p", "parent", "{}", deadline_at=now + 30)
    claim = store.claim_workflow("p", "w", ttl=TTL)
    for child in ("c1", "c2"):
        store.start_child("p", child, "child", "{}", worker_id="w", token=claim.token)
    _run_child(store, "c2", Status.FAILED)  # failed on its own, not by the parent's end: stays FAILED
    assert store.expire_deadlines(now=now + 60) == ["p"]
    retried = store.retry("p")
    assert retried.status == Status.PENDING.value
    assert retried.deadline_at - retried.run_at == pytest.approx(30, abs=1)
    statuses = {c.id: c.status for c in store.list_children("p")}
    assert statuses == {"c1": Status.PENDING.value, "c2": Status.FAILED.value}


def test_retry_revives_the_failed_child_whose_failure_failed_the_parent(backend: Backend) -> None:
    store, claim = _parent(backend, "revive-failed")
    store.start_child("p", "c1", "child", "{}", worker_id="w", token=claim.token)
    _run_child(store, "c1", Status.FAILED)
    key = "durable:child-result#1"
    store.start_step("p", key, name="durable:child-result", scope="", position=1, seq=1, worker_id="w", token=claim.token,
                     max_attempts=3, new=True)  # fmt: skip
    store.complete_step("p", key, '{"id": "c1", "status": "FAILED"}', worker_id="w", token=claim.token)
    store.finish_workflow("p", Status.FAILED, error="ChildFailedError: ...", failed_step=key, worker_id="w",
                          token=claim.token)  # fmt: skip
    store.retry("p")
    assert store.get_workflow("c1").status == Status.PENDING.value
    assert key not in {s.step_key for s in store.load_steps("p")}  # the recorded end is asked again
