"""Messages and events in the store, on both backends: idempotent send, wake, fenced consume exactly once."""

from __future__ import annotations

import threading
import time

import pytest

from durable_workers import InvalidStateError, LeaseLost, WorkflowNotFound
from durable_workers.records import Status
from tests.contract.conftest import Backend

TTL = 30.0


def _running(backend: Backend, name: str, now: float):  # type: ignore[no-untyped-def]
    store = backend.open(name)
    store.submit("wf", "n", "{}", now=now)
    claim = store.claim_next("w", ["n"], ttl=TTL, now=now)
    assert claim is not None
    return store, claim


def test_a_send_with_a_key_given_twice_stores_one_message(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "idem", now)
    first = store.send_message("wf", "approval", '"yes"', key="k1")
    again = store.send_message("wf", "approval", '"other"', key="k1")
    assert first[1] is True and again == (first[0], False)
    assert store.consume_message("wf", "approval", "s1", worker_id="w", token=claim.token) == (True, '"yes"')
    assert store.consume_message("wf", "approval", "s2", worker_id="w", token=claim.token) == (False, None)


def test_sending_to_an_unknown_or_finished_workflow_is_refused(backend: Backend) -> None:
    store = backend.open("refused")
    with pytest.raises(WorkflowNotFound):
        store.send_message("nope", "t", None)
    store.submit("wf", "n", "{}")
    store.cancel("wf")
    with pytest.raises(InvalidStateError):
        store.send_message("wf", "t", None)


def test_a_send_makes_a_workflow_waiting_on_its_topic_due_now(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "wake", now)
    store.suspend_workflow("wf", now + 10_000, worker_id="w", token=claim.token, topic="approval", now=now)
    assert store.claim_next("w", ["n"], ttl=TTL) is None
    store.send_message("wf", "other", "0")  # another topic: still waiting
    assert store.get_workflow("wf").wake_at == now + 10_000
    store.send_message("wf", "approval", "1")
    row = store.get_workflow("wf")
    assert row.status == Status.WAITING.value and row.wake_at is not None and row.wake_at <= store.now()
    woken = store.claim_next("w2", ["n"], ttl=TTL)
    assert woken is not None and woken.workflow.id == "wf"


def test_a_send_leaves_a_sleeping_workflow_asleep(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "asleep", now)
    store.suspend_workflow("wf", now + 10_000, worker_id="w", token=claim.token, now=now)
    store.send_message("wf", "approval", "1")
    row = store.get_workflow("wf")
    assert (row.status, row.wake_at, row.waiting_for) == (Status.WAITING.value, now + 10_000, "sleep")
    assert store.claim_next("w2", ["n"], ttl=TTL) is None


def test_messages_are_consumed_oldest_first_and_once_replaying_the_same_one(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "order", now)
    store.send_message("wf", "t", "1", now=now)
    store.send_message("wf", "other", "x", now=now + 1)
    store.send_message("wf", "t", "2", now=now + 2)
    token = claim.token
    assert store.consume_message("wf", "t", "a", worker_id="w", token=token) == (True, "1")
    assert store.consume_message("wf", "t", "a", worker_id="w", token=token) == (True, "1")  # replayed
    assert store.consume_message("wf", "t", "b", worker_id="w", token=token) == (True, "2")
    assert store.consume_message("wf", "t", "c", worker_id="w", token=token) == (False, None)


def test_two_concurrent_consumers_never_take_the_same_message(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "race", now)
    for i in range(6):
        store.send_message("wf", "t", str(i), now=now + i)
    got: list[tuple[bool, str | None]] = []
    lock = threading.Lock()

    def consume(prefix: str) -> None:
        mine = backend.open("race")
        for i in range(6):
            result = mine.consume_message("wf", "t", f"{prefix}{i}", worker_id="w", token=claim.token)
            with lock:
                got.append(result)
        mine.close()

    threads = [threading.Thread(target=consume, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    payloads = [p for found, p in got if found]
    assert sorted(payloads) == [str(i) for i in range(6)]  # each exactly once


def test_a_consume_after_a_lease_takeover_raises_lease_lost_and_consumes_nothing(backend: Backend) -> None:
    store = backend.open("fenced")
    now = time.time()
    store.submit("wf", "n", "{}", now=now)
    old = store.claim_next("w1", ["n"], ttl=1.0, now=now)
    assert old is not None
    new = store.claim_next("w2", ["n"], ttl=TTL, now=now + 5)
    assert new is not None
    store.send_message("wf", "t", "1")
    with pytest.raises(LeaseLost):
        store.consume_message("wf", "t", "s", worker_id="w1", token=old.token)
    with pytest.raises(LeaseLost):
        store.set_event("wf", "k", "1", worker_id="w1", token=old.token)
    assert store.get_events("wf") == {}
    assert store.consume_message("wf", "t", "s", worker_id="w2", token=new.token) == (True, "1")


def test_events_are_upserted_last_write_wins(backend: Backend) -> None:
    now = time.time()
    store, claim = _running(backend, "events", now)
    store.set_event("wf", "b", "1", worker_id="w", token=claim.token)
    store.set_event("wf", "a", '"x"', worker_id="w", token=claim.token)
    store.set_event("wf", "b", "2", worker_id="w", token=claim.token)
    assert store.get_events("wf") == {"a": '"x"', "b": "2"}


def test_a_suspend_on_a_topic_with_a_message_already_there_is_due_at_once(backend: Backend) -> None:
    """A send that raced the receive's suspend is not lost: the suspend records wake_at = now."""
    now = time.time()
    store, claim = _running(backend, "race-wake", now)
    store.send_message("wf", "other", "x", now=now)
    store.send_message("wf", "approval", "1", now=now)  # RUNNING: nothing to wake yet
    store.suspend_workflow("wf", now + 10_000, worker_id="w", token=claim.token, topic="approval", now=now + 1)
    assert store.get_workflow("wf").wake_at == now + 1
    again = store.claim_next("w", ["n"], ttl=TTL, now=now + 1)
    assert again is not None
    store.consume_message("wf", "approval", "s", worker_id="w", token=again.token)
    store.suspend_workflow("wf", now + 10_000, worker_id="w", token=again.token, topic="approval", now=now + 2)
    assert store.get_workflow("wf").wake_at == now + 10_000  # only 'other' is left: no busy wake
