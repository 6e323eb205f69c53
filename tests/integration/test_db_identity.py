"""The database file deleted or replaced under a running fleet: the fleet stops, nothing is split.

Real processes (``durable-supervisor`` and its workers), a real SQLite file per test, real
``os.unlink`` / ``os.rename`` of it while a worker is inside a step, and a ``kill -9`` of an idle
worker right after, so the supervisor has a reason to respawn one. Each test ends with the
supervisor exited with ``DatabaseReplacedError.exit_code``, one error line from it, no
traceback, no worker left, and nothing written to the file now at the path — including by
SQLite replaying the old file's write-ahead log into it. Tests wait on files, log lines and
process exit with bounded polling; no fixed sleeps, no timing assertions.

SQLite only: a database file that can be deleted or replaced under its path, and its
write-ahead log, are SQLite's (a PostgreSQL database dropped under a store is tested in
tests/contract/test_postgres.py).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from durable_workers.backends import Store, open_store
from durable_workers.errors import DatabaseReplacedError, StoreUnavailable
from durable_workers.backends.identity import EXPECT_DB_ENV
from tests.conftest import cli_env, run_cli
from tests.integration.fleet_support import (
    APP,
    Fleet,
    Supervisor,
    fleet,  # noqa: F401  (fixture)
    gone,
    query,
    running_step,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: A short TTL: workers check the file on every heartbeat (ttl / 3).
TTL = 3.0


def start_holding(fleet: Fleet, tmp_path: Path) -> tuple[Supervisor, Path, int, int]:
    """A 2-worker fleet with one worker inside step hold#1; returns (supervisor, release, busy pid, idle pid)."""
    sup = fleet.start(workers=2, ttl=TTL)
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    submit(fleet.db, "fleet_hold", "held", {"ledger": str(ledger), "release": str(release)})
    row = wait_for(lambda: running_step(fleet.db, "held", "hold#1"), 60, "held to be inside hold#1")
    workers = {r["id"]: r["pid"] for r in query(fleet.db, "SELECT id, pid FROM workers WHERE state = 'running'")}
    busy = workers[row["worker_id"]]
    idle = next(pid for pid in sup.worker_pids() if pid != busy)
    return sup, release, busy, idle


def finish_stop(sup: Supervisor, release: Path, workers: list[int], how: str) -> str:
    """Wait for the supervisor's stop line, let the held step end, wait for every process to exit."""
    sup.wait_log("stopping the fleet")
    release.touch()  # the held attempt's step ends now, after the file changed: its writes must not leak
    assert sup.wait_exit(90) == DatabaseReplacedError.exit_code, sup.log()
    wait_for(lambda: all(gone(pid) for pid in workers), 30, "every worker to exit")
    log = sup.log()
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if "supervisor[" in line and " ERROR " in line]
    assert len(errors) == 1, log
    assert how in errors[0] and "stopping the fleet" in errors[0], errors
    return log


def spawned(log: str) -> int:
    return sum(1 for line in log.splitlines() if "spawned worker" in line)


def tables_at(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Rows of every table of the database now at ``path`` (opened the way any new process would)."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: con.execute(f'SELECT * FROM "{name}"').fetchall() for name in names}
    finally:
        con.close()


def test_deleted_database_stops_the_fleet_and_nothing_recreates_it(fleet: Fleet, tmp_path: Path) -> None:
    sup, release, busy, idle = start_holding(fleet, tmp_path)
    os.unlink(fleet.db)
    psutil.Process(idle).send_signal(signal.SIGKILL)  # the supervisor must not respawn it onto a new file

    log = finish_stop(sup, release, [busy, idle], "was deleted")
    assert spawned(log) == 2, log
    assert not fleet.db.exists()  # no worker (re)created a database at the path
    wal = Path(f"{fleet.db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # nothing left to replay into a future file
    # A new database at the path starts empty: the deleted one's log is not replayed into it.
    assert tables_at(fleet.db) == {}


def test_database_renamed_over_stops_the_fleet_and_the_replacement_stays_intact(
    fleet: Fleet, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    done = run_cli("submit", "fleet_steps", "other-only", "--input", json.dumps({"ledger": str(tmp_path / "o")}),
                   db=other, app=APP)
    assert done.returncode == 0, done.stderr
    before = tables_at(other)
    assert not Path(f"{other}-wal").exists()  # closed cleanly: the replacement is one self-contained file

    sup, release, busy, idle = start_holding(fleet, tmp_path)
    os.rename(other, fleet.db)
    psutil.Process(idle).send_signal(signal.SIGKILL)

    log = finish_stop(sup, release, [busy, idle], "was replaced")
    assert spawned(log) == 2, log
    after = tables_at(fleet.db)
    assert after == before  # no worker row, claim, step or log frame of the old fleet reached it
    assert [row[0] for row in after["workflows"]] == ["other-only"]
    assert after["workers"] == []


def test_worker_alone_sees_its_database_deleted_and_exits_with_the_distinct_code(tmp_path: Path, db_path: Path) -> None:
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    submit(db_path, "fleet_hold", "held", {"ledger": str(ledger), "release": str(release)})
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "durable_workers", "--db", str(db_path), "--app", str(APP),
               "worker", "--ttl", str(TTL)]
    with open(log_path, "wb") as out:
        worker = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=cli_env())
    try:
        wait_for(lambda: running_step(db_path, "held", "hold#1"), 60, "held to be inside hold#1")
        os.unlink(db_path)
        wait_for(lambda: "stops claiming" in log_path.read_text(), 60, "the worker to notice on a heartbeat")
        release.touch()
        assert worker.wait(60) == DatabaseReplacedError.exit_code, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    log = log_path.read_text()
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "was deleted" in errors[0], log
    assert not db_path.exists()
    assert tables_at(db_path) == {}


@pytest.mark.parametrize("change", ["deleted", "renamed over"])
def test_worker_started_for_a_changed_database_refuses_to_open_it(tmp_path: Path, db_path: Path, change: str) -> None:
    """The supervisor passes the identity it checked; a worker spawned just as the file changed opens nothing."""
    submit(db_path, "fleet_steps", "one", {"ledger": str(tmp_path / "ledger.txt")})
    st = db_path.stat()
    db_id = query(db_path, "SELECT value FROM meta WHERE key = 'db_id'")[0]["value"]
    expect = {"path": str(db_path), "device": st.st_dev, "inode": st.st_ino, "db_id": db_id}
    other = tmp_path / "other.db"
    done = run_cli("submit", "fleet_steps", "other-only", "--input", json.dumps({"ledger": str(tmp_path / "o")}),
                   db=other, app=APP)
    assert done.returncode == 0, done.stderr
    if change == "deleted":
        os.unlink(db_path)
    else:
        os.rename(other, db_path)
        before = tables_at(db_path)
    worker = run_cli("worker", "--ttl", str(TTL), db=db_path, app=APP, env={EXPECT_DB_ENV: json.dumps(expect)})
    assert worker.returncode != 0
    assert "Traceback" not in worker.stderr, worker.stderr
    errors = [line for line in worker.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and ("was deleted" if change == "deleted" else "was replaced") in errors[0], worker.stderr
    if change == "deleted":
        assert not db_path.exists()
    else:
        assert tables_at(db_path) == before


# --------------------------------------------------------------------------- in one process


def _other_database(tmp_path: Path) -> Path:
    """A second durable database, built and closed by another process (no -wal left)."""
    other = tmp_path / "other.db"
    done = run_cli("submit", "fleet_steps", "other-only", "--input", json.dumps({"ledger": str(tmp_path / "o")}),
                   db=other, app=APP)
    assert done.returncode == 0, done.stderr
    return other


def _connect_in_new_thread(store: Store) -> BaseException | None:
    """What a new thread (so a new pooled connection) gets from one read, or None."""
    box: list[BaseException | None] = [None]

    def body() -> None:
        try:
            store.count_by_status()
        except BaseException as exc:  # handed to the test
            box[0] = exc
        finally:
            store.close()

    held = store.db.connection()  # keep this thread's connection out of the pool,
    store.db.close_idle()  # and drop idle ones: the new thread must open a connection of its own
    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    assert held is not None
    return box[0]


@pytest.mark.parametrize("change", ["deleted", "renamed over", "rewritten in place"])
def test_check_identity_and_new_connections_refuse_a_changed_file(tmp_path: Path, db_path: Path, change: str) -> None:
    store = open_store(db_path)
    try:
        store.submit("mine", "fleet_steps", "{}")
        store.check_identity()  # unchanged: nothing raised
        assert _connect_in_new_thread(store) is None
        if change == "deleted":
            os.unlink(db_path)
        elif change == "renamed over":
            os.rename(_other_database(tmp_path), db_path)
        else:  # same inode, another database's id: what copying a file over it in place leaves
            query(db_path, "UPDATE meta SET value = 'someone-else' WHERE key = 'db_id'")
        with pytest.raises(DatabaseReplacedError, match="was deleted|was replaced|holds another database"):
            store.check_identity()
        with pytest.raises(DatabaseReplacedError):
            store.check_identity()  # and on every later call
        refused = _connect_in_new_thread(store)
        if change != "rewritten in place":  # in place, the old connection's file *is* the path's
            assert isinstance(refused, StoreUnavailable), refused
        if change == "deleted":
            assert not db_path.exists()  # the refused connection did not create the file anew
        with pytest.raises(DatabaseReplacedError):
            open_store(db_path)  # a second Store in this process must not mix the two files either
    finally:
        store.abandon_replaced_file()
