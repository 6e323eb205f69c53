"""The store contract on two databases side by side, in one process and one thread.

Every store owns its database object and bound models: operations on one must
never read or write the other, whatever their interleaving, and a read-only
store on a file must not disturb a writing store on the same file. Each test
runs once per backend (``backend`` fixture, tests/contract/conftest.py).
"""

from __future__ import annotations

import inspect
import json
import threading
import time

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)
from durable_workers import DatabaseError, LeaseLost, StoreUnavailable, WorkflowNotFound
from durable_workers.backends import CONTRACT, SKELETON, Store
from durable_workers.records import Status, StepStatus
from tests.contract.conftest import Backend

NAME = "backend_other_side"
TTL = 30.0


def _start(store: Store, workflow_id: str, key: str, worker_id: str, token: int) -> None:
    store.start_step(
        workflow_id, key, name=key.split("#")[0], scope="", position=0,
        worker_id=worker_id, token=token, max_attempts=3, new=True,
    )  # fmt: skip


def _ids(store: Store) -> set[str]:
    return {record.id for record in store.list_workflows()}


def test_the_contract_documents_every_public_operation() -> None:
    public = {name for name, _ in inspect.getmembers(Store) if not name.startswith("_")}
    listed = {op.name for op in CONTRACT}
    assert listed - public == set(), "CONTRACT names operations Store does not have"
    assert public - listed - set(SKELETON) == set(), "public Store operations missing from CONTRACT"
    for op in CONTRACT:
        assert (getattr(Store, op.name).__doc__ or "").strip(), f"{op.name} has no docstring"


def test_two_stores_interleave_every_operation_and_see_only_their_own_rows(backend: Backend) -> None:
    a, b = backend.open("a"), backend.open("b")
    a.submit("wf", NAME, json.dumps({"side": "a"}))
    b.submit("wf", NAME, json.dumps({"side": "b"}))
    a.submit("only-a", NAME, "{}")
    a.register_worker("wa", names=[NAME], ttl=TTL)
    b.register_worker("wb", names=[NAME], ttl=TTL)

    claim_a = a.claim_next("wa", [NAME], ttl=TTL)
    claim_b = b.claim_next("wb", [NAME], ttl=TTL)
    assert claim_a is not None and claim_b is not None
    assert (claim_a.workflow.id, claim_a.workflow.input) == ("wf", {"side": "a"})
    assert (claim_b.workflow.id, claim_b.workflow.input) == ("wf", {"side": "b"})
    _start(a, "wf", "s#1", "wa", claim_a.token)
    assert b.heartbeat("wb", ttl=TTL, leases=[("wf", claim_b.token)]) == []
    assert a.heartbeat("wa", ttl=TTL, leases=[("wf", claim_a.token)]) == []
    with pytest.raises(LeaseLost):  # a's attempt holds no lease in b
        b.complete_step("wf", "s#1", "1", worker_id="wa", token=claim_a.token)
    a.complete_step("wf", "s#1", "1", worker_id="wa", token=claim_a.token)
    assert b.release("wf", "wb", claim_b.token, reason="drain") is True
    a.finish_workflow("wf", Status.COMPLETED, result_json='"done"', worker_id="wa", token=claim_a.token)

    done, given_back = a.get_workflow("wf"), b.get_workflow("wf")
    assert (done.status, done.result, done.input) == (Status.COMPLETED.value, "done", {"side": "a"})
    assert (given_back.status, given_back.interruption) == (Status.PENDING.value, "drain")
    assert [(s.step_key, s.status) for s in a.load_steps("wf")] == [("s#1", StepStatus.COMPLETED.value)]
    assert b.load_steps("wf") == []
    assert _ids(a) == {"wf", "only-a"} and _ids(b) == {"wf"}
    assert [w.id for w in a.list_workers()] == ["wa"] and [w.id for w in b.list_workers()] == ["wb"]

    assert b.cancel("wf").status == Status.CANCELLED.value
    assert a.cancel("only-a").status == Status.CANCELLED.value
    assert b.retry("wf").status == Status.PENDING.value
    assert a.get_workflow("wf").status == Status.COMPLETED.value
    with pytest.raises(WorkflowNotFound):
        b.get_workflow("only-a")
    # What each store wrote is in its own database, seen by stores opened afresh.
    again_a, again_b = backend.open("a"), backend.open("b")
    assert again_a.count_by_status()[Status.COMPLETED.value] == 1
    assert again_a.count_by_status()[Status.CANCELLED.value] == 1
    assert again_b.count_by_status()[Status.PENDING.value] == 1 and _ids(again_b) == {"wf"}


def test_fencing_holds_in_each_store_while_the_other_is_used(backend: Backend) -> None:
    a, b = backend.open("a"), backend.open("b")
    for store in (a, b):
        store.submit("wf", NAME, "{}", now=1000.0)
    # Unregistered workers: no live holder vouches for an expired lease, so it is taken.
    first = a.claim_next("w1", [NAME], ttl=TTL, now=1000.0)
    other = b.claim_next("w1", [NAME], ttl=TTL, now=1000.0)
    assert first is not None and other is not None
    second = a.claim_next("w2", [NAME], ttl=TTL, now=1000.0 + TTL + 1)
    assert second is not None and second.token == first.token + 1
    with pytest.raises(LeaseLost):
        _start(a, "wf", "s#1", "w1", first.token)
    _start(b, "wf", "s#1", "w1", other.token)  # b's lease is still w1's
    assert a.heartbeat("w1", ttl=TTL, leases=[("wf", first.token)]) == ["wf"]
    assert b.heartbeat("w1", ttl=TTL, leases=[("wf", other.token)]) == []
    _start(a, "wf", "s#1", "w2", second.token)
    with pytest.raises(LeaseLost):
        a.finish_workflow("wf", Status.COMPLETED, result_json="1", worker_id="w1", token=first.token)
    a.finish_workflow("wf", Status.COMPLETED, result_json="2", worker_id="w2", token=second.token)
    b.complete_step("wf", "s#1", "3", worker_id="w1", token=other.token)
    b.finish_workflow("wf", Status.FAILED, error="boom", worker_id="w1", token=other.token)
    assert a.get_workflow("wf").result == 2 and a.get_lease("wf").worker_id is None
    assert b.get_workflow("wf").error == "boom" and b.load_steps("wf")[0].output == "3"


def test_a_readonly_store_and_a_writing_store_share_one_database(backend: Backend) -> None:
    writer = backend.open("a")
    writer.submit("first", NAME, "{}")
    reader = backend.open("a", readonly=True)
    assert _ids(reader) == {"first"}
    writer.submit("second", NAME, "{}")  # the writer still writes after the reader opened
    assert _ids(reader) == {"first", "second"}
    claim = writer.claim_next("w", [NAME], ttl=TTL)
    assert claim is not None
    lease = reader.get_lease(claim.workflow.id)
    assert lease is not None and lease.token == claim.token
    with pytest.raises((StoreUnavailable, DatabaseError)):
        reader.submit("from-reader", NAME, "{}")
    writer.finish_workflow(claim.workflow.id, Status.COMPLETED, result_json="1", worker_id="w", token=claim.token)
    assert reader.get_workflow(claim.workflow.id).status == Status.COMPLETED.value
    assert _ids(writer) == {"first", "second"}


def test_two_clients_side_by_side_in_one_thread(backend: Backend) -> None:
    one, two = backend.client("one"), backend.client("two")
    one.submit(NAME, "shared-id", {})
    two.submit(NAME, "shared-id", {})
    two.submit(NAME, "two-only", {})
    assert one.cancel("shared-id").status == Status.CANCELLED.value
    assert two.get("shared-id").status == Status.PENDING.value
    with pytest.raises(WorkflowNotFound):
        one.get("two-only")
    assert one.retry("shared-id").status == Status.PENDING.value
    assert [r.id for r in one.list()] == ["shared-id"]
    assert sorted(r.id for r in two.list()) == ["shared-id", "two-only"]
    assert one.counts()[Status.PENDING.value] == 1 and two.counts()[Status.PENDING.value] == 2


def test_a_write_to_one_database_does_not_wait_for_a_transaction_open_on_another(backend: Backend) -> None:
    a, b = backend.open("a"), backend.open("b")
    inside, release = threading.Event(), threading.Event()
    still_open: list[bool] = []

    def hold() -> None:
        def body() -> None:
            a.submit("held", NAME, "{}")
            inside.set()
            release.wait(60)  # bounded: released by the main thread as soon as b's write returned

        try:
            a.write(body)
        finally:
            a.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(30), "the holder never began its transaction"
        b.submit("free", NAME, "{}")  # another database: no lock of a's may be waited for
        still_open.append(not release.is_set() and holder.is_alive())
    finally:
        release.set()
        holder.join(60)
    assert still_open == [True], "b's write waited for a's transaction to end"
    assert _ids(a) == {"held"} and _ids(b) == {"free"}


def test_statements_are_compiled_per_dialect_and_checked(backend: Backend) -> None:
    store = backend.open("a")
    store.submit("wf", NAME, "{}")
    assert store.claim_next("w", [NAME], ttl=TTL) is not None
    compiled = store.compiled("take_workflow")
    assert compiled is not None and compiled.lstrip().upper().startswith("UPDATE")
    if backend.name == "sqlite":  # a second dialect on the same driver, to see the two caches apart
        other = type("OtherDialect", (type(store),), {"dialect": "sqlite-other"})(backend.target("b"))
        assert other.compiled("take_workflow") is None  # nothing leaks from the first dialect's cache
        other.close()
    m = store.m
    with pytest.raises(AssertionError, match="peewee binds"):
        store._execute("mismatched", lambda: m.Workflow.select().where(m.Workflow.id == "wf"), ["not-wf"])


def test_a_released_workflow_keeps_its_place_at_the_head_of_the_queue(backend: Backend) -> None:
    """A drain or an outage hands a workflow back; it must not queue behind the whole backlog."""
    store = backend.open("queue")
    now = time.time()
    for i, workflow_id in enumerate(["first", "second", "third"]):
        store.submit(workflow_id, "n", "{}", now=now + i)
    store.register_worker("w", names=["n"])
    claim = store.claim_next("w", ["n"], ttl=30, now=now + 10)
    assert claim is not None and claim.workflow.id == "first"
    assert store.release("first", "w", claim.token, reason="draining", now=now + 20)
    again = store.claim_next("w", ["n"], ttl=30, now=now + 30)
    assert again is not None and again.workflow.id == "first"
