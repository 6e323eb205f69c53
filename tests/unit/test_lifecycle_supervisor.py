"""The supervisor's loop and the store operations behind the attempt lifecycle (issue 8).

Real SQLite files; the supervisor tests drive ``Supervisor.loop_once(now=...)`` /
``Supervisor.run()`` in this process with real worker child processes. Nothing sleeps a
fixed time or asserts a timing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from durable_workers.backends import Store
from durable_workers.config import Config
from durable_workers.liveness import heartbeat_age
from durable_workers.records import Status
from supervisor.supervisor import Supervisor, SupervisorOptions
from tests.integration.fleet_support import APP, query, running_step, suspend_outside_write, wait_for, workflow_row

NAME = "lifecycle"


def claim_and_start(store: Store, workflow_id: str, worker_id: str, *, now: float, timeout: float | None = None) -> int:
    claim = store.claim_workflow(workflow_id, worker_id, ttl=10, now=now)
    assert claim is not None
    store.start_step(
        workflow_id, "a#1", name="a", scope="", position=0,
        worker_id=worker_id, token=claim.token, max_attempts=3, timeout=timeout, now=now,
    )  # fmt: skip
    return claim.token


# --------------------------------------------------------------------------- item 12


def test_cancel_clears_the_deadline_of_the_running_step(store: Store) -> None:
    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w1", now=1000.0, timeout=5)
    assert [r.step_key for r in store.overdue_steps(now=2000.0)] == ["a#1"]
    store.cancel("wf", now=1001.0)
    assert store.overdue_steps(now=2000.0) == []
    assert store.load_steps("wf")[0].deadline is None


def test_a_lost_lease_takes_the_step_out_of_the_overdue_check(store: Store) -> None:
    """w1's attempt lost its lease to w2: w1's RUNNING row must not get w1 (now busy elsewhere) killed."""
    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w1", now=1000.0, timeout=5)
    assert store.claim_workflow("wf", "w2", ttl=10, now=1100.0) is not None  # w1's lease had expired
    assert store.overdue_steps(now=2000.0) == []


def test_the_max_claims_poison_path_clears_step_deadlines(store: Store) -> None:
    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w1", now=1000.0, timeout=5)
    assert store.claim_workflow("wf", "w2", ttl=10, max_claims=1, now=1100.0) is None
    assert store.get_workflow("wf").status == Status.FAILED.value
    assert store.overdue_steps(now=2000.0) == []


def test_expiring_a_worker_clears_the_deadlines_of_its_steps(store: Store) -> None:
    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w1", now=1000.0, timeout=5)
    assert store.expire_worker("w1") == ["wf"]
    assert store.overdue_steps(now=2000.0) == []


def test_a_timeout_note_is_not_written_once_the_lease_moved_on(store: Store) -> None:
    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w1", now=1000.0, timeout=5)
    store.cancel("wf", now=1001.0)
    assert store.note_step_timeout("wf", "a#1", worker_id="w1", now=1010.0) is False
    assert store.load_steps("wf")[0].error is None


# --------------------------------------------------------------------------- item 15


def test_interrupted_starts_do_not_count_toward_max_attempts_nor_claims(store: Store) -> None:
    store.submit("wf", NAME, "{}", now=1000.0)
    for deploy in range(3):  # three forced stops, each during the step's attempt
        claim_and_start(store, "wf", f"w{deploy}", now=1000.0 + deploy)
        assert store.interrupt_workers([f"w{deploy}"], now=1000.5 + deploy) == ["wf"]
        record = store.get_workflow("wf")
        assert (record.status, record.attempts, store.get_lease("wf").expires_at) == (Status.RUNNING.value, 0, 0)
    claim_and_start(store, "wf", "w3", now=1010.0)  # would raise WorkflowAborted if they counted
    (step,) = store.load_steps("wf")
    assert (step.attempts, step.interruptions) == (4, 3)
    assert store.get_workflow("wf").status == Status.RUNNING.value


def test_crashed_starts_still_count_after_an_interruption(store: Store) -> None:
    from durable_workers.errors import WorkflowAborted

    store.submit("wf", NAME, "{}", now=1000.0)
    claim_and_start(store, "wf", "w0", now=1000.0)
    store.interrupt_workers(["w0"], now=1000.5)
    for crash in range(3):  # three crashes: each attempt's lease simply expires
        claim_and_start(store, "wf", f"c{crash}", now=1100.0 + 100 * crash)
    store.claim_workflow("wf", "c3", ttl=10, now=1500.0)
    token = store.get_lease("wf").token
    with pytest.raises(WorkflowAborted, match="crashed the worker 3 times"):
        store.start_step("wf", "a#1", name="a", scope="", position=0, worker_id="c3", token=token, max_attempts=3)


# --------------------------------------------------------------------------- item 27


def test_the_supervisor_prunes_old_dead_and_stopped_worker_rows(store: Store, db_path: Path) -> None:
    for worker_id, state in [("old-dead", "dead"), ("old-stopped", "stopped"), ("new-dead", "dead"), ("live", "running")]:
        store.register_worker(worker_id, names=[NAME], pid=os.getpid())
        store.set_worker_state(worker_id, state)
    query(db_path, "UPDATE workers SET heartbeat_at = heartbeat_at - 7200 WHERE id IN ('old-dead', 'old-stopped', 'live')")
    supervisor = Supervisor(Config(db=str(db_path), app=str(APP)), SupervisorOptions(workers=0))
    try:
        supervisor.loop_once()
    finally:
        supervisor.store.close()
    assert sorted(r["id"] for r in query(db_path, "SELECT id FROM workers")) == ["live", "new-dead"]


# --------------------------------------------------------------------------- supervisor with real workers


@pytest.fixture
def supervisor_factory(db_path: Path) -> Iterator:
    made: list[Supervisor] = []

    def make(**options: object) -> Supervisor:
        supervisor = Supervisor(Config(db=str(db_path), app=str(APP)), SupervisorOptions(**options))
        made.append(supervisor)
        return supervisor

    try:
        yield make
    finally:
        for supervisor in made:
            supervisor.stop_requests = 2
            supervisor._shutdown()


@contextmanager
def write_lock_held(db_path: Path) -> Iterator[None]:
    """Hold the SQLite database's write lock from this test (as a backup or a long transaction would)."""
    holder = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def late_heartbeats(supervisor: Supervisor, workers: list[dict], past: float) -> bool:
    """True once every one of ``workers``' heartbeats is more than ``past`` seconds old."""
    return all(heartbeat_age(supervisor.store.get_worker(w["id"])) > past for w in workers)


def registered_workers(db_path: Path, supervisor: Supervisor) -> list[dict]:
    ids = {s.worker_id for s in supervisor.slots}
    try:
        return [r for r in query(db_path, "SELECT * FROM workers WHERE state = 'running'") if r["id"] in ids]
    except Exception:  # tables not created yet
        return []


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_wall_clock_jump_does_not_make_the_supervisor_kill_a_step_within_its_timeout(
    supervisor_factory, db_path: Path, tmp_path: Path
) -> None:
    supervisor = supervisor_factory(workers=1, ttl=5, reap_interval=0.0)
    supervisor.loop_once()
    wait_for(lambda: registered_workers(db_path, supervisor), 60, "the worker to register")
    values = {"ledger": str(tmp_path / "ledger.txt"), "timeout_s": 60, "retries": 0, "sleep_s": 30}
    supervisor.store.submit("wf-long", "timeout_sleeper", json.dumps(values))
    wait_for(lambda: running_step(db_path, "wf-long", "nap#1"), 60, "the 60 s-timeout step to run")

    supervisor.loop_once(now=time.time() + 120)  # the wall clock jumps two minutes ahead
    supervisor.loop_once(now=time.time() + 120)
    (slot,) = supervisor.slots
    assert slot.killed_for is None
    assert slot.alive()
    assert running_step(db_path, "wf-long", "nap#1")["error"] is None


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_supervisor_loop_survives_store_errors_and_keeps_its_workers(
    supervisor_factory, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="durable_workers.supervisor")
    supervisor = supervisor_factory(workers=2, ttl=10)
    runner = threading.Thread(target=supervisor.run, name="supervisor", daemon=True)
    runner.start()
    workers = wait_for(lambda: len(registered_workers(db_path, supervisor)) == 2 and registered_workers(db_path, supervisor), 60, "two workers")
    pids = {w["pid"] for w in workers}

    def logged(pattern: str) -> bool:
        return any(pattern in r.getMessage() for r in caplog.records)

    query(db_path, "ALTER TABLE workers RENAME TO workers_away")
    try:
        wait_for(lambda: logged("(repeat 2)") or not runner.is_alive(), 60, "repeated loop errors")
        assert runner.is_alive(), "the supervisor's loop ended on a store error"
        assert set(supervisor.live_pids()) == pids
    finally:
        query(db_path, "ALTER TABLE workers_away RENAME TO workers")
    wait_for(lambda: logged("supervisor loop recovered"), 60, "the loop to recover")
    failures = [r for r in caplog.records if r.levelno == logging.WARNING and "backing off" in r.getMessage()]
    assert len(failures) == 1
    assert set(supervisor.live_pids()) == pids
    supervisor.request_stop()
    runner.join(90)
    assert not runner.is_alive()


# --------------------------------------------------------------------------- the shared helper


def test_error_backoff_logs_each_distinct_error_once_and_bounds_its_pauses(caplog: pytest.LogCaptureFixture) -> None:
    import random

    from durable_workers.backoff import ErrorBackoff

    caplog.set_level(logging.DEBUG, logger="test.backoff")
    errors = ErrorBackoff(logging.getLogger("test.backoff"), "poll", base=0.1, cap=1.0, rng=random.Random(1))
    pauses = [errors.failed(OSError(f"disk full after {n} bytes")) for n in range(20)]
    pauses.append(errors.failed(ValueError("other")))
    errors.succeeded()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "poll failed: OSError: disk full after # bytes (backing off; repeats are counted)",
        "poll failed: OSError: disk full after # bytes (repeated 19 more times)",
        "poll failed: ValueError: other (backing off; repeats are counted)",
        "poll recovered after 21 failed tries",
    ]
    assert sum(1 for r in caplog.records if r.exc_info) == 2
    assert all(0.05 <= p <= 1.0 for p in pauses)
    assert max(pauses) > 0.5 >= pauses[0]
    assert errors.failures == 0


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_cancelled_timed_step_does_not_get_the_worker_killed_while_it_runs_another_workflow(
    supervisor_factory, db_path: Path, tmp_path: Path
) -> None:
    """The reported case: cancel during a step with a timeout, the worker moves on, the deadline passes."""
    supervisor = supervisor_factory(workers=1, ttl=5, reap_interval=0.0, timeout_grace=0.0)
    supervisor.loop_once()
    wait_for(lambda: registered_workers(db_path, supervisor), 60, "the worker to register")
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    values = {"ledger": str(ledger), "timeout_s": 30, "retries": 0, "sleep_s": 1}
    supervisor.store.submit("wf-cancelled", "timeout_sleeper", json.dumps(values))
    nap = wait_for(lambda: running_step(db_path, "wf-cancelled", "nap#1"), 60, "the timed step to run")
    supervisor.store.cancel("wf-cancelled")
    supervisor.store.submit("wf-other", "fleet_hold", json.dumps({"ledger": str(ledger), "release": str(release)}))
    try:
        wait_for(lambda: running_step(db_path, "wf-other", "hold#1"), 60, "the worker to run another workflow")
        supervisor.loop_once(now=nap["deadline"] + 1)  # the cancelled step's deadline has passed
        supervisor.loop_once(now=nap["deadline"] + 1)
        (slot,) = supervisor.slots
        assert slot.killed_for is None and slot.alive()
        assert running_step(db_path, "wf-cancelled", "nap#1")["error"] is None
    finally:
        release.touch()
    wait_for(lambda: workflow_row(db_path, "wf-other")["status"] == "COMPLETED", 60, "the other workflow to finish")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_late_heartbeats_during_a_store_outage_do_not_get_workers_killed_as_frozen(
    supervisor_factory, db_path: Path
) -> None:
    """The write lock is held elsewhere past 2 x TTL: every heartbeat is late, nobody is frozen."""
    supervisor = supervisor_factory(workers=1, ttl=1.5, reap_interval=0.0)
    supervisor.loop_once()
    (worker,) = wait_for(lambda: registered_workers(db_path, supervisor), 60, "the worker to register")
    with write_lock_held(db_path):
        row = lambda: supervisor.store.get_worker(worker["id"])  # noqa: E731  (WAL reads still work)
        wait_for(lambda: heartbeat_age(row()) > 2 * 1.5 + 1, 60, "the heartbeat to be late past the frozen limit")
        supervisor.loop_once()
        (slot,) = supervisor.slots
        assert slot.killed_for is None and slot.alive()
    # Right after the outage the probe can win the lock before the worker's queued heartbeat:
    # the heartbeat is still old, but only as old as the outage.
    supervisor.loop_once()
    assert supervisor.slots[0].killed_for is None
    wait_for(lambda: heartbeat_age(supervisor.store.get_worker(worker["id"])) < 1.5, 60, "the heartbeat to resume")
    supervisor.loop_once()
    assert supervisor.slots[0].killed_for is None and supervisor.slots[0].alive()


def two_workers(supervisor: Supervisor, db_path: Path) -> list[dict]:
    supervisor.loop_once()
    return wait_for(
        lambda: len(registered_workers(db_path, supervisor)) == 2 and registered_workers(db_path, supervisor),
        60, "two workers to register",
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_heartbeats_late_from_a_stall_that_just_ended_do_not_get_workers_killed(
    supervisor_factory, db_path: Path
) -> None:
    """The write lock was held past 2 x TTL and let go just before the supervisor's turn.

    The database is writable again, but the heartbeats that waited for it have not landed yet:
    the workers were waiting, not frozen, and keep running.
    """
    supervisor = supervisor_factory(workers=2, ttl=1.0, reap_interval=0.0)
    workers = two_workers(supervisor, db_path)
    with write_lock_held(db_path):  # the supervisor takes no turn meanwhile: it never sees the stall
        wait_for(lambda: late_heartbeats(supervisor, workers, 2 * 1.0 + 1), 60, "heartbeats late past the limit")
    supervisor.loop_once()
    assert [s.killed_for for s in supervisor.slots] == [None, None]
    wait_for(lambda: not late_heartbeats(supervisor, workers, 0.9), 60, "the heartbeats to land")
    supervisor.loop_once()
    assert [s.killed_for for s in supervisor.slots] == [None, None]
    assert all(s.alive() for s in supervisor.slots)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_stopped_worker_is_killed_while_another_waits_for_the_write_lock(supervisor_factory, db_path: Path) -> None:
    """Slot 1 is SIGSTOPped, slot 0 waits for a write lock held elsewhere; both heartbeats are late.

    The stopped worker is frozen for certain: it is killed although nobody can write (it may be the
    very process that holds the lock). The waiting one is left alone. Judging slot 0 first used to
    end the turn, so the stopped worker was never killed while the lock was held.
    """
    # No prune while the lock is held (it would wait the store's whole patience for it).
    supervisor = supervisor_factory(workers=2, ttl=1.0, reap_interval=0.0, prune_interval=3600.0)
    workers = two_workers(supervisor, db_path)
    waiting, stopped = supervisor.slots
    assert stopped.process is not None
    suspend_outside_write(psutil.Process(stopped.process.pid), db_path)
    with write_lock_held(db_path):
        wait_for(lambda: late_heartbeats(supervisor, workers, 2 * 1.0 + 1), 60, "heartbeats late past the limit")
        supervisor.loop_once()
        assert stopped.killed_for is not None and "heartbeat is" in stopped.killed_for
        assert waiting.killed_for is None
    wait_for(lambda: not stopped.alive(), 60, "the stopped worker to die")
    assert waiting.alive()


def test_healthz_fails_while_the_supervisor_loop_does_not_turn(supervisor_factory) -> None:
    """The store answers, but the loop has stopped turning: /healthz says hung, until it turns again."""
    from durable_workers.metrics_http import Probes

    supervisor = supervisor_factory(workers=0)
    supervisor.tick()
    probes = Probes(supervisor)
    assert probes.hung_after >= 3 * supervisor.store.lock_patience
    assert probes.health() == (200, "ok")
    supervisor.last_turn -= probes.hung_after + 1  # as if no turn had ended since then
    status, reason = probes.health()
    assert status == 503 and reason.startswith("the supervisor loop has not turned for"), reason
    assert reason.endswith("hung"), reason
    supervisor.tick()
    assert probes.health() == (200, "ok")
