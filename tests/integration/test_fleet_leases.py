"""Lease expiry, reclaim and liveness, driven directly through Store, WorkerProcess and liveness.

Expiry is produced by backdating rows (or by passing ``now=``), never by sleeping. Dead
processes are real: a child is spawned, registered as a worker, and reaped. Every test runs on
a SQLite file and on a fresh PostgreSQL database (``any_db``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from durable_workers.backends import open_store
from durable_workers.errors import LeaseLost
from durable_workers.liveness import process_alive, reap_dead_workers
from durable_workers.records import Status
from durable_workers.registry import Registry
from durable_workers.worker import WorkerOptions, WorkerProcess
from tests.apps import fleet_flows
from tests.integration.fleet_support import DbTarget, any_db, query  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMES = ["fleet_steps"]


@pytest.fixture
def db(any_db: DbTarget) -> DbTarget:  # noqa: F811
    """The test's database on each backend (a SQLite path or a PostgreSQL URL)."""
    return any_db


@pytest.fixture
def store(any_db: DbTarget):
    """An open store on the test's database (either backend)."""
    opened = open_store(any_db)
    yield opened
    opened.close()


def fleet_registry() -> Registry:
    registry = Registry()
    registry.register(fleet_flows.fleet_steps)
    return registry


def backdate_lease(db: DbTarget, workflow_id: str, seconds: float = 60.0) -> None:
    """Make a lease look expired: its heartbeat stopped ``seconds`` ago (wall and monotonic clocks)."""
    past = time.time() - seconds
    query(
        db,
        "UPDATE leases SET expires_at = ?, heartbeat_at = ?, renewed_mono = renewed_mono - ? WHERE workflow_id = ?",
        (past, past, seconds, workflow_id),
    )


def stop_renewals(db: DbTarget, workflow_id: str, seconds: float = 60.0) -> None:
    """The holder's last renewal was ``seconds`` ago on the host's monotonic clock."""
    query(db, "UPDATE leases SET renewed_mono = renewed_mono - ? WHERE workflow_id = ?", (seconds, workflow_id))


def submit_steps(store, tmp_path, workflow_id: str = "wf-1", n: int = 2) -> str:
    ledger = tmp_path / "ledger.txt"
    store.submit(workflow_id, "fleet_steps", json.dumps({"ledger": str(ledger), "n": n}))
    return str(ledger)


def test_stale_lease_of_live_but_stuck_worker_is_reclaimed_and_fenced(store, db, tmp_path):
    submit_steps(store, tmp_path)
    store.register_worker("stuck", names=NAMES)  # this very process: alive, but it stops heartbeating
    claim = store.claim_next("stuck", NAMES, ttl=30)
    assert claim is not None and claim.token == 1 and claim.workflow.attempts == 1
    assert store.start_step("wf-1", "s0#1", name="s0", scope="", position=0, worker_id="stuck",
                            token=1, max_attempts=3).attempts == 1
    lease = store.get_lease("wf-1")

    # While the lease runs, nobody else may take the workflow.
    assert store.claim_next("heir", NAMES, ttl=30, now=lease.expires_at - 1) is None
    # Its PID is alive, so liveness does not free it: only the expired lease does.
    assert reap_dead_workers(store, stale_after=45) == []

    backdate_lease(db, "wf-1")
    taken = store.claim_next("heir", NAMES, ttl=30)
    assert taken is not None and taken.workflow.id == "wf-1"
    assert taken.token == 2 and taken.workflow.attempts == 2
    assert [(s.step_key, s.status, s.attempts) for s in taken.steps] == [("s0#1", "RUNNING", 1)]
    assert store.get_lease("wf-1").worker_id == "heir"

    # Every write of the old holder is rejected now; its heartbeat renews nothing.
    with pytest.raises(LeaseLost):
        store.complete_step("wf-1", "s0#1", "1", worker_id="stuck", token=1)
    with pytest.raises(LeaseLost):
        store.start_step("wf-1", "s1#1", name="s1", scope="", position=1, worker_id="stuck",
                         token=1, max_attempts=3)
    with pytest.raises(LeaseLost):
        store.finish_workflow("wf-1", Status.COMPLETED, result_json="{}", worker_id="stuck", token=1)
    assert store.heartbeat("stuck", ttl=30, leases=[("wf-1", 1)]) == ["wf-1"]
    assert store.release("wf-1", "stuck", 1) is False
    steps = {s.step_key: s for s in store.load_steps("wf-1")}
    assert set(steps) == {"s0#1"} and steps["s0#1"].status == "RUNNING"
    assert store.get_workflow("wf-1").status == "RUNNING"

    # The new holder re-runs the interrupted step as attempt 2.
    assert store.start_step("wf-1", "s0#1", name="s0", scope="", position=0, worker_id="heir",
                            token=2, max_attempts=3).attempts == 2


def test_worker_loop_once_reclaims_expired_lease_and_finishes(store, db, tmp_path):
    ledger = submit_steps(store, tmp_path, n=3)
    store.register_worker("stuck", names=NAMES)
    claim = store.claim_next("stuck", NAMES, ttl=30)
    store.start_step("wf-1", "s0#1", name="s0", scope="", position=0, worker_id="stuck", token=claim.token,
                     max_attempts=3)
    store.complete_step("wf-1", "s0#1", json.dumps(123), worker_id="stuck", token=claim.token)
    store.start_step("wf-1", "s1#1", name="s1", scope="", position=1, worker_id="stuck", token=claim.token,
                     max_attempts=3)
    expires = store.get_lease("wf-1").expires_at

    worker = WorkerProcess(store, fleet_registry(), WorkerOptions(ttl=30), worker_id="fresh")
    try:
        assert worker.loop_once(now=expires - 1) is False  # still leased
        # Alive and renewing on the host's monotonic clock: a wall-clock expiry alone is not enough.
        assert worker.loop_once(now=expires + 1) is False
        assert store.get_lease("wf-1").expires_at > expires + 1  # the claim vouched for it
        stop_renewals(db, "wf-1")  # ... but it really stopped renewing a minute ago
        expires = store.get_lease("wf-1").expires_at
        assert worker.loop_once(now=expires + 1) is True  # expired: claimed and started
    finally:
        worker.shutdown()  # waits for the attempt

    outcome = worker.outcomes[-1]
    assert outcome.workflow_id == "wf-1" and outcome.status == "COMPLETED", outcome
    assert outcome.result == {"pids": [123, os.getpid(), os.getpid()]}  # s0 replayed, not re-run
    record = store.get_workflow("wf-1")
    assert record.status == "COMPLETED" and record.attempts == 2
    steps = {s.step_key: (s.status, s.attempts, s.worker_id) for s in store.load_steps("wf-1")}
    assert steps == {
        "s0#1": ("COMPLETED", 1, "stuck"),
        "s1#1": ("COMPLETED", 2, "fresh"),
        "s2#1": ("COMPLETED", 1, "fresh"),
    }
    assert [k for _, k, _, _ in fleet_flows.read_ledger(ledger)] == ["s1#1", "s2#1"]
    assert store.get_lease("wf-1").worker_id is None
    assert store.get_lease("wf-1").token == 2


def test_worker_row_with_dead_pid_is_reaped_and_its_lease_freed(store, db, tmp_path):
    submit_steps(store, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        ghost = store.register_worker("ghost", names=NAMES, pid=child.pid)
        store.register_worker("alive", names=NAMES)  # this process: must survive the reaping
        claim = store.claim_next("ghost", NAMES, ttl=3600)  # a lease that would run for an hour
        assert claim is not None
    finally:
        child.stdin.close()
        child.wait(30)
    assert not process_alive(ghost.pid, ghost.proc_started_at)

    assert store.claim_next("heir", NAMES, ttl=30) is None  # the lease itself has not expired
    reaped = reap_dead_workers(store, stale_after=3600)
    assert [(worker.id, held) for worker, held in reaped] == [("ghost", ["wf-1"])]
    states = {r["id"]: r["state"] for r in query(db, "SELECT id, state FROM workers")}
    assert states == {"ghost": "dead", "alive": "running"}
    assert store.get_lease("wf-1").expires_at == 0

    taken = store.claim_next("heir", NAMES, ttl=30)
    assert taken is not None and taken.workflow.id == "wf-1" and taken.token == claim.token + 1
    assert reap_dead_workers(store, stale_after=3600) == []  # reaped once only
    with pytest.raises(LeaseLost):
        store.start_step("wf-1", "s0#1", name="s0", scope="", position=0, worker_id="ghost",
                         token=claim.token, max_attempts=3)


def test_another_hosts_worker_is_judged_by_its_heartbeat_on_the_store_clock_never_by_a_local_pid(store, db, tmp_path):
    """A row of another host identity whose PID is dead here lives while its heartbeat is fresh (3 of its TTLs)."""
    submit_steps(store, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        remote = store.register_worker("remote", names=NAMES, pid=child.pid, ttl=10)
        claim = store.claim_next("remote", NAMES, ttl=10)
        assert claim is not None
    finally:
        child.stdin.close()
        child.wait(30)
    assert not process_alive(remote.pid, remote.proc_started_at)  # that PID means nothing on this host
    query(db, "UPDATE workers SET host_id = 'elsewhere', heartbeat_at = heartbeat_at - 20 WHERE id = 'remote'")

    assert reap_dead_workers(store, stale_after=1) == []  # 20 s < 3 x its own ttl of 10 s
    assert query(db, "SELECT state FROM workers WHERE id = 'remote'") == [{"state": "running"}]
    assert store.get_lease("wf-1").worker_id == "remote"

    query(db, "UPDATE workers SET heartbeat_at = heartbeat_at - 11 WHERE id = 'remote'")  # 31 s: dead by TTL
    reaped = reap_dead_workers(store, stale_after=1)
    assert [(worker.id, held) for worker, held in reaped] == [("remote", ["wf-1"])]
    taken = store.claim_next("heir", NAMES, ttl=30)
    assert taken is not None and taken.token == claim.token + 1


def test_reused_pid_counts_as_dead(store, db, tmp_path):
    """A row whose PID now belongs to another process (different create time) is dead."""
    submit_steps(store, tmp_path)
    row = store.register_worker("old-owner", names=NAMES)  # pid = this live process
    assert row.pid == os.getpid() and process_alive(row.pid, row.proc_started_at)
    claim = store.claim_next("old-owner", NAMES, ttl=3600)
    # The recorded process started an hour before the one that has this PID today.
    query(db, "UPDATE workers SET proc_started_at = proc_started_at - 3600 WHERE id = 'old-owner'")

    assert not process_alive(row.pid, row.proc_started_at - 3600)
    reaped = reap_dead_workers(store, stale_after=3600)
    assert [(worker.id, held) for worker, held in reaped] == [("old-owner", ["wf-1"])]
    taken = store.claim_next("heir", NAMES, ttl=30)
    assert taken is not None and taken.token == claim.token + 1
    assert os.getpid() == row.pid  # nothing was signalled: reaping only rewrites rows
