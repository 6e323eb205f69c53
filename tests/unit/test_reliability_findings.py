"""Regression tests for the engine bugs the chaos experiment found (docs/reliability.md).

Each test fails on the code before its fix. They assert states and counts;
the short sleeps only create the conditions (a held lock), nothing is timed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Callable

import pytest

from durable_workers import Context, StepTimeoutError, workflow
from durable_workers.backends import Store, open_store
from durable_workers.config import Config
from durable_workers.errors import WorkflowAborted
from durable_workers.records import Status, StepStatus
from supervisor.supervisor import Supervisor, SupervisorOptions, Slot

NAME = "findings"
#: The step function of each ``finding_late_step`` run, by its ``marker`` input.
LATE_STEPS: dict[str, Callable[[], str]] = {}


@workflow(name="finding_late_step")
def finding_late_step(ctx: Context, marker: str) -> str:
    """One step with a 5 s timeout, running ``LATE_STEPS[marker]``; returns its value or its timeout."""
    try:
        return ctx.step("nap", LATE_STEPS[marker], timeout=5.0)
    except StepTimeoutError as error:
        return f"timed out: {error}"


def start(store: Store, workflow_id: str, worker_id: str, token: int, *, max_attempts: int = 3) -> None:
    store.start_step(
        workflow_id, "a#1", name="a", scope="", position=0,
        worker_id=worker_id, token=token, max_attempts=max_attempts,
    )  # fmt: skip


def test_finding_1_a_poison_step_fails_its_workflow_for_good(store: Store) -> None:
    """The FAILED marks of a poison step were rolled back by the WorkflowAborted raised in the transaction."""
    store.submit("wf", NAME, "{}")
    for attempt in range(3):  # three attempts that "crashed" (never completed)
        claim = store.claim_workflow("wf", f"w{attempt}", ttl=10, now=1000.0 + attempt * 100)
        assert claim is not None
        start(store, "wf", f"w{attempt}", claim.token)
    claim = store.claim_workflow("wf", "w3", ttl=10, now=1400.0)
    assert claim is not None
    with pytest.raises(WorkflowAborted, match="crashed the worker 3 times"):
        start(store, "wf", "w3", claim.token)

    record = store.get_workflow("wf")
    assert record.status == Status.FAILED.value
    assert "crashed the worker 3 times" in (record.error or "")
    assert store.load_steps("wf")[0].status == StepStatus.FAILED.value
    lease = store.get_lease("wf")
    assert lease is not None and lease.worker_id is None  # released: no heartbeat keeps it RUNNING
    assert store.claim_next("w4", [NAME], ttl=10, now=1500.0) is None


def hold_lock(db: Path, seconds: float, locked: threading.Event) -> threading.Thread:
    """Hold the write lock from another thread (its own connection) for ``seconds``."""

    def body() -> None:
        other = open_store(db)
        try:
            other.hold_write_lock(seconds, on_locked=lambda at: locked.set())
        finally:
            other.close()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert locked.wait(10)
    return thread


@pytest.mark.timeout(30)
def test_finding_4_no_lease_is_taken_from_a_live_holder_right_after_a_lock_stall(store: Store, db_path: Path) -> None:
    """A lock held longer than the TTL let idle workers take live workers' leases once it was released."""
    ttl = 0.6
    store.submit("wf", NAME, "{}")
    store.register_worker("holder", names=[NAME])
    store.register_worker("idle", names=[NAME])
    claim = store.claim_next("holder", [NAME], ttl=ttl)
    assert claim is not None

    thread = hold_lock(db_path, 3 * ttl, threading.Event())
    # The idle worker's process waits for the lock too (its heartbeat, every ttl/3, is a write)
    # and so sees the stall; a claim would only probe, without waiting.
    store.heartbeat("idle", ttl=ttl)
    thread.join()
    # The lock is gone and the holder's lease expired during it: its heartbeat has not landed yet.
    assert store.get_lease("wf").expires_at < time.time()
    assert store.claim_next("idle", [NAME], ttl=ttl) is None  # before the fix: taken here

    # The holder's delayed heartbeat renews from when it got the lock.
    before = time.time()
    assert store.heartbeat("holder", ttl=ttl, leases=[("wf", claim.token)]) == []
    assert store.get_lease("wf").expires_at >= before + ttl

    # A holder that really stopped renewing still loses the lease once the grace has passed
    # (the holder is this live process: it must also have stopped renewing for a TTL on the
    # monotonic clock, or the claim would vouch for it).
    renewed = store.get_lease("wf").renewed_mono
    threading.Event().wait(max(0.0, renewed + ttl - time.monotonic()))
    later = time.time() + 10 * ttl
    taken = store.claim_next("idle", [NAME], ttl=ttl, now=later)
    assert taken is not None and taken.workflow.id == "wf" and taken.token == claim.token + 1


@pytest.mark.timeout(30)
def test_finding_4_heartbeat_expiry_counts_from_when_the_lock_was_obtained(store: Store, db_path: Path) -> None:
    ttl = 1.0
    store.submit("wf", NAME, "{}")
    store.register_worker("holder", names=[NAME])
    claim = store.claim_next("holder", [NAME], ttl=ttl)
    assert claim is not None
    thread = hold_lock(db_path, 2 * ttl, threading.Event())
    asked = time.time()
    store.heartbeat("holder", ttl=ttl, leases=[("wf", claim.token)])  # waits for the lock
    got = time.time()
    thread.join()
    expires = store.get_lease("wf").expires_at
    assert got - asked >= ttl  # it did wait longer than the TTL ...
    assert expires > got  # ... and the renewed lease is not already expired


@pytest.mark.timeout(30)
def test_finding_5_a_claim_that_waited_for_the_lock_gets_a_lease_that_is_not_already_expired(
    store: Store, db_path: Path
) -> None:
    """The lease was dated from before the wait: after a wait longer than the TTL it was born expired."""
    ttl = 1.0
    store.submit("wf", NAME, "{}")
    store.register_worker("first", names=[NAME])
    thread = hold_lock(db_path, 2 * ttl, threading.Event())
    claim = store.claim_next("first", [NAME], ttl=ttl)  # waits for the lock
    got = time.time()
    thread.join()
    assert claim is not None
    assert store.get_lease("wf").expires_at > got
    store.register_worker("second", names=[NAME])
    assert store.claim_next("second", [NAME], ttl=ttl) is None  # before the fix: taken at once


@pytest.mark.timeout(30)
@pytest.mark.parametrize("registered", [True, False])
def test_finding_2_a_registered_worker_killed_from_outside_is_replaced_without_backoff(
    tmp_path: Path, registered: bool
) -> None:
    """Respawn backoff hit workers killed by kill -9 after running fine: the fleet starved under kills."""
    supervisor = Supervisor(Config(db=str(tmp_path / "fleet.db")), SupervisorOptions(workers=1, respawn_backoff=0.5))
    try:
        slot: Slot = supervisor.slots[0]
        slot.process = subprocess.Popen(["sleep", "30"])
        slot.worker_id = "w-killed"
        slot.started = time.time()
        slot.backoff = 4.0  # earlier deaths
        if registered:
            supervisor.store.register_worker("w-killed", names=[NAME], pid=os.getpid())
        os.kill(slot.process.pid, signal.SIGKILL)
        slot.process.wait()
        now = time.time()
        supervisor._reap_children(now)
        assert slot.process is None
        if registered:
            assert slot.backoff == 0.0 and slot.respawn_at == now
        else:  # died before registering: a start-up crash loop keeps backing off
            assert slot.backoff == 8.0 and slot.respawn_at == now + 8.0
    finally:
        supervisor.store.close()


def test_a_step_that_ends_after_its_timeout_while_its_process_was_frozen_times_out(client, monkeypatch) -> None:
    """A SIGSTOP past both deadlines let the step's end win the race with the joiner: the late value was kept.

    The step moves the clock of ``durable_workers.step_call`` 10 s on, as a frozen
    process sees it on SIGCONT: the joining thread then finds the step ended.
    """
    import durable_workers.step_call as step_call_module

    offset = [0.0]
    clock = types.SimpleNamespace(monotonic=lambda: time.monotonic() + offset[0], time=time.time)
    monkeypatch.setattr(step_call_module, "time", clock)

    def frozen_then_done() -> str:
        offset[0] += 10.0
        return "late"

    monkeypatch.setitem(LATE_STEPS, "x", frozen_then_done)
    record, _ = client.run_here("finding_late_step", "late", {"marker": "x"})
    assert record.status == "COMPLETED" and record.result.startswith("timed out: step nap#1 took 10"), record
    (step,) = client.steps("late")
    assert step.status == StepStatus.FAILED.value and "StepTimeoutError" in (step.error or ""), step
