"""Store trouble is never the workflow's fault (issue 8, item 3).

A full disk (a real, small tmpfs) and a write lock held past the store's retry window, hit
while a step is being checkpointed: the attempt is abandoned as a ``StoreUnavailable``
interrupt, the workflow's ``except Exception`` never sees it, nothing is recorded as a failure,
the real cause is logged and kept in ``workflows.interruption``, and the workflow completes once
the store is back.

SQLite only (a full disk under the database file, SQLite's write lock); the PostgreSQL
counterpart, a server that stops mid-step and comes back, is tests/integration/test_pg_outage.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from durable_workers import Client, default_registry
from durable_workers.backends import open_store
from durable_workers.worker import WorkerOptions, WorkerProcess
from tests.apps.core_flows import calls_of
from tests.integration.fleet_support import Fleet, query, submit, wait_for, workflow_row

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs mounted for this test (needs root; skipped with the reason otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}); run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; return it (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            pass
    return filler


def test_a_full_disk_during_a_checkpoint_interrupts_the_attempt_and_the_workflow_completes_later(tmp_path, small_disk):
    db = small_disk / "durable.db"
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    gate.touch()
    fleet = Fleet(tmp_path, db)
    try:
        supervisor = fleet.start(workers=1, ttl=3)
        done = submit(db, "life_guarded", "wf", {"calls": str(calls), "gate": str(gate)})
        assert done.returncode == 0, done.stderr
        wait_for(lambda: calls_of(str(calls)) == ["pay"], 30, "the step to start")
        filler = fill(small_disk)
        gate.unlink()  # the step returns; recording its result hits the full disk
        supervisor.wait_log("database or disk is full", timeout=30)
        assert workflow_row(db, "wf")["status"] == "RUNNING"  # nothing recorded: not FAILED
        filler.unlink()
        wait_for(lambda: workflow_row(db, "wf")["status"] == "COMPLETED", 60, "the workflow to complete")
        record = workflow_row(db, "wf")
        assert json.loads(record["result"]) == {"paid": 2}  # the step ran again: at-least-once
        assert "database or disk is full" in (record["interruption"] or "")
        log = supervisor.log()
        assert "cannot rollback" not in log
        assert log.count("Traceback") <= 1, log
        steps = {r["step_key"]: r for r in query(db, "SELECT * FROM steps WHERE workflow_id = 'wf'")}
        assert steps["pay#1"]["attempts"] == 2 and steps["pay#1"]["interruptions"] == 1
        assert calls_of(str(calls)) == ["pay", "pay", "ship"]
    finally:
        fleet.cleanup()


def hold_write_lock(db: Path, held: threading.Event, release: threading.Event) -> threading.Thread:
    """Another connection takes the write lock and keeps it until ``release`` is set."""

    def run() -> None:
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(60)
            con.execute("ROLLBACK")
        finally:
            con.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_write_lock_held_past_the_retry_window_is_an_interruption_not_a_failure(tmp_path, db_path):
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    gate.touch()
    store = open_store(db_path, busy_timeout_ms=50)  # patience: 13 × 50 ms
    client = Client(db=str(db_path), registry=default_registry)
    client.submit("life_guarded", "wf", {"calls": str(calls), "gate": str(gate)})
    worker = WorkerProcess(store, default_registry, WorkerOptions(ttl=1.5, poll_max=0.05))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    held, release = threading.Event(), threading.Event()
    try:
        wait_for(lambda: calls_of(str(calls)) == ["pay"], 30, "the step to start")
        holder = hold_write_lock(db_path, held, release)
        assert held.wait(30)
        gate.unlink()
        wait_for(lambda: any(o.status == "ABANDONED" for o in worker.outcomes), 30, "the attempt to be abandoned")
        assert client.get("wf").status == "RUNNING"
        release.set()
        holder.join(30)
        wait_for(lambda: client.get("wf").status == "COMPLETED", 60, "the workflow to complete")
        record = client.get("wf")
        assert record.result == {"paid": 2}
        assert record.interruption == "store unavailable: database is locked"
    finally:
        release.set()
        worker.request_stop()
        thread.join(30)
