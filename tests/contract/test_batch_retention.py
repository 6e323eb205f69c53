"""Batch submit and retention in the store, on both backends.

``submit_many`` inserts a batch in one transaction, idempotent per id, and a conflict
anywhere writes nothing. ``collect_garbage`` deletes exactly the collectable workflows
(terminal, old, family at rest) with their steps, leases, messages and events, in
batches no larger than asked, between which the write lock is free; a dry run deletes
nothing; a second run finds nothing; a workflow retried (or a parent resumed) between the
read and the delete is kept; two collections at once delete each workflow once.
"""

from __future__ import annotations

import json
import threading

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side, backend_submit_elsewhere)
from durable_workers import ConflictError, InputError, UnknownWorkflowError
from durable_workers.backends import Collected, NewWorkflow, Store
from durable_workers.batch import Submission
from durable_workers.records import Status
from durable_workers.retention import collect_garbage
from tests.contract.conftest import Backend

TTL = 30.0
DAY = 86_400.0
OTHER, WITH_INPUT = "backend_other_side", "backend_submit_elsewhere"


# --------------------------------------------------------------------------- submit_many


def test_submit_many_inserts_new_ids_in_one_go_and_returns_existing_ones(backend: Backend) -> None:
    store = backend.open("batch")
    store.submit("old", "n", '{"a": 1}')
    rows = store.submit_many([NewWorkflow("x1", "n", "{}"), NewWorkflow("old", "n", '{"a": 1}'),
                              NewWorkflow("x2", "m", '{"b": 2}', run_at=store.now() + 60, deadline_at=1e12)])  # fmt: skip
    assert [(r.id, created) for r, created in rows] == [("x1", True), ("old", False), ("x2", True)]
    stored = {r.id: r for r in store.list_workflows()}
    assert set(stored) == {"old", "x1", "x2"}
    assert stored["x2"].input == {"b": 2} and stored["x2"].deadline_at == 1e12 and stored["x2"].status == "PENDING"
    assert rows[2][0] == stored["x2"] and rows[1][0] == stored["old"]
    with pytest.raises(ValueError):
        store.submit_many([NewWorkflow("d", "n", "{}"), NewWorkflow("d", "n", "{}")])


def test_a_failed_check_inserts_nothing_of_the_batch(backend: Backend) -> None:
    store = backend.open("rollback")
    store.submit("taken", "n", "{}")

    def refuse(index: int, existing: object) -> None:
        raise ConflictError(f"item {index}")

    with pytest.raises(ConflictError, match="item 1"):
        store.submit_many([NewWorkflow("new1", "n", "{}"), NewWorkflow("taken", "n", "{}"),
                           NewWorkflow("new2", "n", "{}")], check=refuse)  # fmt: skip
    assert [r.id for r in store.list_workflows()] == ["taken"]


def test_client_submit_many_validates_every_item_and_is_idempotent_per_id(backend: Backend) -> None:
    client = backend.client("client")
    batch = [Submission(WITH_INPUT, f"w{n}", {"other_db": str(n)}) for n in range(3)]
    batch.append(Submission(WITH_INPUT, "w0", {"other_db": "0"}))  # the same id twice, the same workflow
    first = client.submit_many(batch)
    assert [r.id for r in first] == ["w0", "w1", "w2", "w0"] and first[0] == first[3]
    assert [r.id for r in client.submit_many(batch)] == ["w0", "w1", "w2", "w0"]  # again: nothing new
    fresh = Submission(OTHER, "fresh")
    with pytest.raises(ConflictError, match=r"^item 2: workflow w1 already exists with input"):
        client.submit_many([fresh, Submission(WITH_INPUT, "w1", {"other_db": "other"})])
    with pytest.raises(ConflictError, match=r"^item 3: workflow fresh is also on item 1"):
        client.submit_many([fresh, Submission(OTHER, "b"), Submission(WITH_INPUT, "fresh", {"other_db": "x"})])
    with pytest.raises(UnknownWorkflowError, match=r"^line 9: unknown workflow"):
        client.submit_many([fresh, Submission("nope")], labels=["line 1", "line 9"])
    with pytest.raises(InputError, match=r"^item 2: "):
        client.submit_many([fresh, Submission(WITH_INPUT, "bad", {"unknown_arg": 1})])
    assert sorted(r.id for r in client.list()) == ["w0", "w1", "w2"]
    timed = client.submit_many([Submission(OTHER, "timed", timeout=60.0, delay=30.0)])[0]
    assert timed.deadline_at == pytest.approx(timed.run_at + 60.0) and timed.run_at > timed.created_at + 20


# --------------------------------------------------------------------------- retention


def _claimed(store: Store, workflow_id: str, at: float) -> int:
    claim = store.claim_workflow(workflow_id, "w", ttl=TTL, now=at)
    assert claim is not None
    return claim.token


def _finish(store: Store, workflow_id: str, token: int, at: float, status: Status = Status.COMPLETED) -> None:
    store.finish_workflow(workflow_id, status, result_json="1" if status is Status.COMPLETED else None,
                          error=None if status is Status.COMPLETED else "boom", worker_id="w", token=token, now=at)  # fmt: skip


def _ended(store: Store, workflow_id: str, at: float, status: Status = Status.COMPLETED) -> None:
    """A workflow with a step, a message and an event, ended ``status`` at ``at``."""
    store.submit(workflow_id, "n", "{}", now=at)
    token = _claimed(store, workflow_id, at)
    store.start_step(workflow_id, "s#1", name="s", scope="", position=0, worker_id="w", token=token,
                     max_attempts=3, new=True, now=at)  # fmt: skip
    store.complete_step(workflow_id, "s#1", "1", worker_id="w", token=token, now=at)
    store.send_message(workflow_id, "topic", "1", now=at)
    store.set_event(workflow_id, "k", "1", worker_id="w", token=token, now=at)
    _finish(store, workflow_id, token, at, status)


def _family(store: Store, parent: str, at: float, *, child_ends: bool, parent_ends: bool) -> None:
    store.submit(parent, "n", "{}", now=at)
    token = _claimed(store, parent, at)
    store.start_child(parent, f"{parent}/c", "n", "{}", worker_id="w", token=token, now=at)
    if child_ends:
        _finish(store, f"{parent}/c", _claimed(store, f"{parent}/c", at), at)
    else:
        _claimed(store, f"{parent}/c", at)
    if parent_ends:
        _finish(store, parent, token, at)


def _world(store: Store) -> tuple[set[str], set[str]]:
    """Workflows of every kind; (the ids retention must delete, the ids it must keep)."""
    old, recent = store.now() - 40 * DAY, store.now() - DAY
    _ended(store, "old-done", old)
    _ended(store, "old-failed", old, Status.FAILED)
    store.submit("old-cancelled", "n", "{}", now=old)
    store.cancel("old-cancelled", now=old)
    _ended(store, "recent-done", recent)
    store.submit("old-pending", "n", "{}", now=old)
    _claimed(store, store.submit("old-running", "n", "{}", now=old)[0].id, old)
    _family(store, "running-parent", old, child_ends=True, parent_ends=False)  # its ended child is kept
    _family(store, "ended-family", old, child_ends=True, parent_ends=True)  # both go
    _family(store, "busy-child", old, child_ends=False, parent_ends=True)  # a parent with a running child stays
    doomed = {"old-done", "old-failed", "old-cancelled", "ended-family", "ended-family/c"}
    return doomed, {r.id for r in store.list_workflows(limit=None)} - doomed


def _rows(store: Store, workflow_id: str) -> tuple[int, int, bool]:
    """Its steps, events, and whether it has a lease row."""
    return len(store.load_steps(workflow_id)), len(store.get_events(workflow_id)), store.get_lease(workflow_id) is not None


def test_gc_deletes_exactly_the_collectable_workflows_and_what_belongs_to_them(backend: Backend) -> None:
    store = backend.open("gc")
    doomed, kept = _world(store)
    kept_rows = {w: (store.get_workflow(w), _rows(store, w)) for w in kept}
    assert _rows(store, "old-done") == (1, 1, True)

    dry = collect_garbage(store, 30 * DAY, dry_run=True)
    assert dry.collected.workflows == len(doomed) and dry.dry_run
    assert {r.id for r in store.list_workflows(limit=None)} == doomed | kept

    report = collect_garbage(store, 30 * DAY)
    assert report.collected.workflows == len(doomed)
    assert report.collected.steps == 2 and report.collected.messages == 2 and report.collected.events == 2
    assert {r.id for r in store.list_workflows(limit=None)} == kept
    assert {w: (store.get_workflow(w), _rows(store, w)) for w in kept} == kept_rows
    assert _rows(store, "old-done") == (0, 0, False)
    assert collect_garbage(store, 30 * DAY).collected == Collected()  # idempotent


def test_gc_takes_only_the_statuses_asked_and_refuses_unfinished_ones(backend: Backend) -> None:
    store = backend.open("statuses")
    doomed, kept = _world(store)
    for wrong in (["COMPLETED", "RUNNING"], [], ["PENDING"]):
        with pytest.raises(ValueError):
            collect_garbage(store, 30 * DAY, wrong)
    assert {r.id for r in store.list_workflows(limit=None)} == doomed | kept  # not even the COMPLETED ones
    report = collect_garbage(store, 30 * DAY, ["FAILED"])
    assert report.collected.workflows == 1
    assert {r.id for r in store.list_workflows(limit=None)} == (doomed | kept) - {"old-failed"}


def test_gc_batches_are_bounded_and_release_the_write_lock_between_them(backend: Backend) -> None:
    store = backend.open("batches")
    other = backend.open("batches", lock_patience=2.0)
    old = store.now() - 40 * DAY
    for n in range(7):
        _ended(store, f"w{n}", old)
    seen: list[int] = []

    def between(done: Collected) -> None:  # another writer commits between two batches
        seen.append(done.workflows)
        other.submit(f"between-{len(seen)}", "n", json.dumps({"after": done.workflows}))

    report = collect_garbage(store, 30 * DAY, batch_size=3, on_batch=between)
    assert report.batches == (3, 3, 1) and seen == [3, 3, 1] and report.collected.steps == 7
    assert sorted(r.id for r in store.list_workflows(limit=None)) == ["between-1", "between-2", "between-3"]


def test_a_workflow_retried_or_a_parent_resumed_after_the_read_is_kept(backend: Backend) -> None:
    store = backend.open("recheck")
    old = store.now() - 40 * DAY
    _ended(store, "retried", old, Status.FAILED)
    _family(store, "resumed", old, child_ends=True, parent_ends=False)
    store.cancel("resumed", now=old)  # the whole family ended long ago: both collectable
    before = store.now() - 30 * DAY
    page = [wid for wid, _ in store.gc_candidates(before, ["FAILED", "CANCELLED", "COMPLETED"])]
    assert sorted(page) == ["resumed", "resumed/c", "retried"]
    store.retry("retried")
    store.retry("resumed")  # the parent runs again: its child is no longer collectable
    assert store.gc_delete(page, before, ["FAILED", "CANCELLED", "COMPLETED"]) == Collected()
    assert {r.id for r in store.list_workflows(limit=None)} == {"retried", "resumed", "resumed/c"}
    assert len(store.load_steps("retried")) == 1


def test_two_collections_at_once_delete_each_workflow_once(backend: Backend) -> None:
    store = backend.open("twice")
    old = store.now() - 40 * DAY
    for n in range(12):
        _ended(store, f"w{n:02}", old)
    _family(store, "fam", old, child_ends=True, parent_ends=True)
    stores = [backend.open("twice"), backend.open("twice")]
    reports: list[Collected] = []
    errors: list[BaseException] = []

    def collect(other: Store) -> None:
        try:
            reports.append(collect_garbage(other, 30 * DAY, batch_size=4).collected)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=collect, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(reports) == 2
    assert sum(r.workflows for r in reports) == 14 and sum(r.steps for r in reports) == 12
    assert store.list_workflows(limit=None) == []
