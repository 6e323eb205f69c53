"""Queues in the store, on both backends: limits the claim obeys, priorities, dedupe keys, depth.

A queue's ``concurrency`` caps its RUNNING workflows across every claimer (WAITING ones
do not count; a stale lease's workflow keeps its slot and can be reclaimed at the limit),
``worker_concurrency`` caps one worker's, ``per_key_concurrency`` one concurrency key's,
and ``rate`` its first starts in a sliding window. Priority orders claims, FIFO within a
priority. A dedupe key is unique among a queue's unfinished workflows. Many threads
claiming at once never take more than the last slot.
"""

from __future__ import annotations

import threading

from durable_workers.backends import Store
from durable_workers.backends.queues import QueueLimits
from durable_workers.records import Status
from tests.contract.conftest import Backend

TTL = 600.0


def _claim_all(store: Store, worker: str, names: list[str], now: float | None = None) -> list[str]:
    """Claim until nothing more may be taken; the ids taken, in order."""
    taken = []
    while (claim := store.claim_next(worker, names, ttl=TTL, now=now)) is not None:
        taken.append(claim.workflow.id)
    return taken


def _finish(store: Store, workflow_id: str) -> None:
    lease = store.get_lease(workflow_id)
    assert lease is not None and lease.worker_id is not None
    store.finish_workflow(workflow_id, Status.COMPLETED, result_json="null", worker_id=lease.worker_id, token=lease.token)


def test_concurrency_caps_running_workflows_across_workers(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", concurrency=2)])
    for i in range(5):
        store.submit(f"p{i}", "charge", "{}", queue="pay", now=store.now() - 10 + i)
    assert _claim_all(store, "w1", ["charge"]) == ["p0", "p1"]
    assert _claim_all(store, "w2", ["charge"]) == []
    _finish(store, "p0")
    assert _claim_all(store, "w2", ["charge"]) == ["p2"]
    store.submit("free", "charge", "{}")  # the default queue is not limited by it
    assert _claim_all(store, "w3", ["charge"]) == ["free"]


def test_waiting_workflows_do_not_count_and_their_wake_needs_a_slot(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", concurrency=1)])
    store.submit("sleeper", "charge", "{}", queue="pay", now=store.now() - 5)
    store.submit("next", "charge", "{}", queue="pay", now=store.now() - 4)
    claim = store.claim_next("w1", ["charge"], ttl=TTL)
    assert claim is not None and claim.workflow.id == "sleeper"
    store.suspend_workflow("sleeper", store.now() + 0.05, worker_id="w1", token=claim.token)
    assert _claim_all(store, "w2", ["charge"]) == ["next"]  # the sleeper holds no slot
    later = store.now() + 1
    assert _claim_all(store, "w1", ["charge"], now=later) == []  # its wake waits for the slot
    _finish(store, "next")
    assert _claim_all(store, "w1", ["charge"], now=later) == ["sleeper"]


def test_worker_concurrency_caps_each_worker(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", worker_concurrency=1)])
    for i in range(3):
        store.submit(f"p{i}", "charge", "{}", queue="pay", now=store.now() - 10 + i)
    assert _claim_all(store, "w1", ["charge"]) == ["p0"]
    assert _claim_all(store, "w2", ["charge"]) == ["p1"]
    assert _claim_all(store, "w1", ["charge"]) == []


def test_per_key_concurrency_skips_a_busy_key_for_a_free_one(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", per_key_concurrency=1)])
    for i, key in enumerate(["alice", "alice", "bob", None]):
        store.submit(f"p{i}", "charge", "{}", queue="pay", concurrency_key=key, now=store.now() - 10 + i)
    assert _claim_all(store, "w1", ["charge"]) == ["p0", "p2", "p3"]
    _finish(store, "p0")
    assert _claim_all(store, "w1", ["charge"]) == ["p1"]


def test_rate_limits_first_starts_in_a_sliding_window(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("api", rate_limit=2, rate_period=60.0)])
    t0 = store.now()
    for i in range(4):
        store.submit(f"a{i}", "call", "{}", queue="api", now=t0 - 10 + i)
    assert _claim_all(store, "w1", ["call"], now=t0) == ["a0", "a1"]
    assert store.rate_window_opens("api", now=t0 + 1) == t0 + 60
    assert _claim_all(store, "w1", ["call"], now=t0 + 30) == []
    assert _claim_all(store, "w1", ["call"], now=t0 + 61) == ["a2", "a3"]


def test_a_resumed_workflow_is_not_a_new_start(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("api", rate_limit=1, rate_period=60.0)])
    t0 = store.now()
    store.submit("a", "call", "{}", queue="api", now=t0 - 2)
    store.submit("b", "call", "{}", queue="api", now=t0 - 1)
    claim = store.claim_next("w1", ["call"], ttl=TTL, now=t0)
    assert claim is not None and claim.workflow.id == "a"
    assert store.release("a", "w1", claim.token, reason="drain", now=t0)
    assert _claim_all(store, "w1", ["call"], now=t0 + 1) == ["a"]  # started before: not counted again


def test_a_stale_workflow_is_reclaimed_at_the_limit(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", concurrency=1)])
    t0 = store.now()
    store.submit("p", "charge", "{}", queue="pay", now=t0 - 1)
    store.submit("q", "charge", "{}", queue="pay", now=t0 - 1)
    first = store.claim_next("dead", ["charge"], ttl=1.0, now=t0)
    assert first is not None and first.workflow.id == "p"
    again = store.claim_next("alive", ["charge"], ttl=TTL, now=t0 + 5)
    assert again is not None and again.workflow.id == "p" and again.token == first.token + 1
    assert store.claim_next("alive", ["charge"], ttl=TTL, now=t0 + 5) is None


def test_priority_orders_claims_fifo_within_a_priority(backend: Backend) -> None:
    store = backend.open("q")
    t0 = store.now()
    for i, (wid, priority) in enumerate([("low", 0), ("high-1", 10), ("mid", 5), ("high-2", 10), ("later", 99)]):
        store.submit(wid, "job", "{}", priority=priority, now=t0 - 10 + i, run_at=t0 + 3600 if wid == "later" else None)
    assert _claim_all(store, "w", ["job"], now=t0) == ["high-1", "high-2", "mid", "low"]


def test_dedupe_key_returns_the_unfinished_holder_until_it_ends(backend: Backend) -> None:
    store = backend.open("q")
    first, created = store.submit("d1", "job", "{}", dedupe_key="order-7")
    assert created and first.dedupe_key == "order-7"
    held, created = store.submit("d2", "job", "{}", dedupe_key="order-7")
    assert (held.id, created) == ("d1", False)
    other, created = store.submit("d3", "job", "{}", dedupe_key="order-7", queue="elsewhere")
    assert (other.id, created) == ("d3", True)  # unique per queue
    assert store.claim_next("w", ["job"], ttl=TTL) is not None
    _finish(store, "d1")
    again, created = store.submit("d2", "job", "{}", dedupe_key="order-7")
    assert (again.id, created) == ("d2", True)


def test_queue_depths_count_each_unfinished_status(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", concurrency=3)])
    for i in range(3):
        store.submit(f"p{i}", "charge", "{}", queue="pay")
    store.submit("d", "charge", "{}")
    assert store.claim_next("w", ["charge"], ttl=TTL) is not None
    depths = store.queue_depths()
    assert depths["pay"]["PENDING"] + depths["pay"]["RUNNING"] == 3 and depths["default"]["PENDING"] + depths[
        "default"
    ]["RUNNING"] == 1
    assert [q.name for q in store.list_queues()] == ["default", "pay"]


def test_many_claimers_at_once_never_take_more_than_the_last_slot(backend: Backend) -> None:
    store = backend.open("q")
    store.register_queues([QueueLimits("pay", concurrency=3, per_key_concurrency=1)])
    for i in range(40):
        store.submit(f"p{i}", "charge", "{}", queue="pay", concurrency_key=f"k{i % 2}")
    start, taken, errors = threading.Barrier(8), [], []

    def claimer(n: int) -> None:
        mine = backend.open("q")
        try:
            start.wait()
            for _ in range(5):
                claim = mine.claim_next(f"w{n}", ["charge"], ttl=TTL)
                if claim is not None:
                    taken.append(claim.workflow.id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(taken) == 2, taken  # two keys, one each: below the queue's 3
    running = [w for w in store.list_workflows(limit=None) if w.status == Status.RUNNING.value]
    assert sorted(w.concurrency_key for w in running) == ["k0", "k1"]


def test_retry_waits_while_another_workflow_holds_the_dedupe_key(backend: Backend) -> None:
    from durable_workers import InvalidStateError

    store = backend.open("q")
    store.submit("d1", "job", "{}", dedupe_key="k")
    store.cancel("d1")
    store.submit("d2", "job", "{}", dedupe_key="k")
    try:
        store.retry("d1")
    except InvalidStateError as exc:
        assert "d2" in str(exc)
    else:
        raise AssertionError("retry revived a second holder of the dedupe key")
    store.cancel("d2")
    assert store.retry("d1").status == Status.PENDING.value
