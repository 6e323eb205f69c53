"""supervisor/frozen.py on a real SQLite store with real processes: which own workers are frozen.

Each "worker" is a real sleeping process with a real worker row that never heartbeats (its
heartbeat has stopped while the process keeps running: a hang). Everything waits on the
rows' heartbeat ages and on the watch's answers, never a fixed time.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from durable_workers.backends import Store
from durable_workers.liveness import heartbeat_age
from supervisor.fleet import Slot
from supervisor.frozen import FrozenWatch
from tests.integration.fleet_support import wait_for

pytestmark = pytest.mark.timeout(120)

TTL = 0.3
LIMIT = 2 * TTL


@pytest.fixture
def hung(store: Store) -> Iterator[Slot]:
    """A slot whose process runs (sleeps) and whose worker row was registered once, never renewed."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        store.register_worker("hung", names=["x"], pid=proc.pid, ttl=TTL)
        yield Slot(0, process=proc, worker_id="hung")
    finally:
        proc.kill()
        proc.wait(60)


def past_limit(store: Store, worker_id: str = "hung") -> bool:
    row = store.get_worker(worker_id)
    return row is not None and heartbeat_age(row) > LIMIT


def test_a_running_worker_whose_heartbeat_stopped_is_killed_once_its_proof_time_ran_out(store: Store, hung: Slot) -> None:
    watch = FrozenWatch(2.0, TTL)
    wait_for(lambda: past_limit(store), 60, "the heartbeat to pass the frozen limit")
    assert watch.frozen(store, [hung]) == []  # first seen late: it may only have waited for the lock
    ((slot, reason),) = wait_for(lambda: watch.frozen(store, [hung]), 60, "the proof time to run out")
    assert slot is hung and reason.startswith("its heartbeat is") and "frozen?" in reason


def test_a_stall_seen_starts_the_proof_time_again(store: Store, hung: Slot, db_path: Path) -> None:
    """While the write lock is held nobody is killed; afterwards heartbeats count from the stall's end."""
    watch = FrozenWatch(2.0, TTL)
    wait_for(lambda: past_limit(store), 60, "the heartbeat to pass the frozen limit")
    holder = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(3):
            assert watch.frozen(store, [hung]) == []
        assert watch.unwritable_at is not None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    seen_stall = watch.unwritable_at
    found = wait_for(lambda: watch.frozen(store, [hung]), 60, "the kill, later")
    assert found and time.monotonic() - seen_stall > LIMIT  # not before a whole limit after the stall


def test_a_stopped_worker_is_killed_at_once_even_just_after_a_stall(store: Store, hung: Slot) -> None:
    """A stall seen a moment ago caps the age of running workers, not of a stopped one."""
    assert hung.process is not None
    watch = FrozenWatch(2.0, TTL)
    wait_for(lambda: past_limit(store), 60, "the heartbeat to pass the frozen limit")
    watch.unwritable_at = time.monotonic()
    assert watch.frozen(store, [hung]) == []  # running: capped by the stall
    psutil.Process(hung.process.pid).suspend()
    wait_for(lambda: psutil.Process(hung.process.pid).status() == psutil.STATUS_STOPPED, 60, "the stop")
    ((slot, reason),) = watch.frozen(store, [hung])
    assert slot is hung and "stopped" in reason


def test_a_live_worker_whose_row_another_supervisor_marked_dead_is_killed(store: Store, hung: Slot) -> None:
    """Its work was handed out already: the process is killed so that its slot is filled again."""
    watch = FrozenWatch(2.0, TTL)
    store.expire_worker("hung")
    ((slot, reason),) = watch.frozen(store, [hung])
    assert slot is hung and reason.startswith("its heartbeat is") and "marked it dead" in reason
