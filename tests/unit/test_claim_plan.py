"""The claim's pending probe stays an index range scan whatever backlog the claimer cannot run.

Timing is not asserted (the `scale` benchmark measures it); the query plan is: SQLite's
``EXPLAIN QUERY PLAN`` of each statement the claim's due probe actually ran must search the
``(status, queue, name, priority DESC, run_at)`` index bounded on every column (a priority level
is found by one seek, its due head by a range), and the ``(status, queue, name, wake_at)`` index
likewise for WAITING rows, and need no temporary B-tree (a sort would mean visiting every due row)
and no table scan.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from durable_workers.backends import SCHEMA_VERSION, Store, open_store
from tests.schema_v1 import downgrade_to_v1

SERVED = ["served_a", "served_b"]
BACKLOG = 2_000


def _fill(db_path: Path, now: float) -> None:
    """Rows the claimer cannot run: unserved names (due) and served names due in the future."""
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        rows = [(f"other-{i}", "nobody_serves_this", now - 100 + i * 1e-3) for i in range(BACKLOG)]
        rows += [(f"later-{i}", SERVED[i % 2], now + 3600 + i) for i in range(BACKLOG)]
        con.executemany(
            "INSERT INTO workflows (id, name, input, status, attempts, run_at, created_at, updated_at, wake_at)"
            " VALUES (?, ?, '{}', 'WAITING', 0, ?, ?, ?, ?)",
            [(f"asleep-{i}", SERVED[i % 2], now - 300, now - 300, now - 300, now + 7200 + i) for i in range(BACKLOG)],
        )
        con.executemany(
            "INSERT INTO workflows (id, name, input, status, attempts, run_at, created_at, updated_at)"
            " VALUES (?, ?, '{}', 'PENDING', 0, ?, ?, ?)",
            [(wid, name, run_at, now - 200, now - 200) for wid, name, run_at in rows],
        )
        con.execute("COMMIT")
    finally:
        con.close()


def _plan(db_path: Path, sql: str, params: list[object]) -> list[str]:
    con = sqlite3.connect(db_path)
    try:
        return [row[3] for row in con.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        con.close()


def _pending_probe_plan(store: Store, db_path: Path, now: float) -> list[str]:
    """The plans of the claim's due probes: the priority level seek, the pending and the waiting head."""
    assert store.claim_next("w-probe", SERVED, ttl=30, now=now) is None  # compiles the statements
    probes = {
        "priority_level/0": ["PENDING", "default", SERVED[0], 1],
        "priority_level/1": ["PENDING", "default", SERVED[0], 0, 1],
        "head_pending/0/0": ["PENDING", "default", SERVED[0], 0, now, 1],
        "head_waiting/0/0": ["WAITING", "default", SERVED[0], now, 1],
    }
    plan = []
    for name, params in probes.items():
        sql = store.compiled(name)
        assert sql is not None, f"the claim did not run {name}"
        plan += [f"{name}: {line}" for line in _plan(db_path, sql, params)]
    return plan


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
def test_pending_probe_is_an_index_range_scan_per_name(store: Store, db_path: Path, analyzed: bool) -> None:
    now = time.time()
    _fill(db_path, now)
    if analyzed:  # the planner with statistics of this very backlog must not change its mind
        con = sqlite3.connect(db_path)
        con.execute("ANALYZE")
        con.close()
    plan = _pending_probe_plan(store, db_path, now)
    index = "workflows_status_queue_name_priority_run_at"
    expected = {
        "priority_level/0": f"USING COVERING INDEX {index} (status=? AND queue=? AND name=?)",
        "priority_level/1": f"USING COVERING INDEX {index} (status=? AND queue=? AND name=? AND priority<?)",
        "head_pending/0/0": f"USING INDEX {index} (status=? AND queue=? AND name=? AND priority=? AND run_at<?)",
        "head_waiting/0/0": "USING INDEX workflows_status_queue_name_wake_at (status=? AND queue=? AND name=? AND wake_at<?)",
    }
    for name, search in expected.items():
        assert [line for line in plan if line.startswith(name) and search in line], plan
    assert not [line for line in plan if "TEMP B-TREE" in line], plan
    assert not [line for line in plan if "SCAN" in line], plan


def test_claim_takes_the_due_workflow_past_the_unrunnable_backlog(store: Store, db_path: Path) -> None:
    now = time.time()
    _fill(db_path, now)
    store.submit("due-b", "served_b", json.dumps({}), now=now - 5)
    store.submit("due-a", "served_a", json.dumps({}), now=now - 1)
    first = store.claim_next("w-1", SERVED, ttl=7200, now=now)
    second = store.claim_next("w-1", SERVED, ttl=7200, now=now)
    assert first is not None and first.workflow.id == "due-b"  # due first
    assert second is not None and second.workflow.id == "due-a"
    assert store.claim_next("w-1", SERVED, ttl=7200, now=now) is None  # the rest is not due or not served
    later = store.claim_next("w-1", SERVED, ttl=7200, now=now + 3600.5)
    assert later is not None and later.workflow.id == "later-0"


def test_stale_probe_visits_expired_leases_only(store: Store, db_path: Path) -> None:
    """RUNNING rows under live leases (other workers' work) must not be walked by every claim."""
    now = time.time()
    for i in range(50):
        store.submit(f"live-{i}", SERVED[0], json.dumps({}), now=now - 100 + i)
        assert store.claim_next(f"other-{i}", SERVED, ttl=3600, now=now) is not None
    assert store.claim_next("w-probe", SERVED, ttl=30, now=now) is None
    sql = store.compiled(f"runnable_stale/{len(SERVED)}/0")
    assert sql is not None, "the claim did not run the statement"
    plan = _plan(db_path, sql, [now, "RUNNING", *SERVED, 1])
    assert any("USING INDEX leases_expires_at (expires_at<?)" in line for line in plan), plan
    assert any("workflows" in line or line.startswith("SEARCH t1") for line in plan), plan
    for line in plan:
        if line.startswith(("SEARCH t1", "SCAN t1")) or "workflows" in line:
            assert "(id=?)" in line, plan  # workflows reached by primary key from each expired lease
    assert not [line for line in plan if "TEMP B-TREE" in line or line.startswith("SCAN")], plan


def test_stale_claim_takes_the_longest_expired_lease_first(store: Store, db_path: Path) -> None:
    now = time.time()
    for workflow_id in ("first-submitted", "second-submitted"):
        store.submit(workflow_id, SERVED[0], json.dumps({}), now=now - 100)
        assert store.claim_next(f"dead-{workflow_id}", SERVED, ttl=10, now=now - 100) is not None
    con = sqlite3.connect(db_path)
    con.execute("UPDATE leases SET expires_at = ? WHERE workflow_id = 'second-submitted'", (now - 50,))
    con.execute("UPDATE leases SET expires_at = ? WHERE workflow_id = 'first-submitted'", (now - 20,))
    con.commit()
    con.close()
    taken = store.claim_next("heir", SERVED, ttl=30, now=now)
    assert taken is not None and taken.workflow.id == "second-submitted" and taken.token == 2


def test_v1_migration_creates_the_claim_index_and_drops_the_old_one(tmp_path: Path) -> None:
    fresh, path = tmp_path / "fresh.db", tmp_path / "v1.db"
    open_store(fresh).close()
    source, copy = sqlite3.connect(fresh), sqlite3.connect(path)
    source.backup(copy)
    source.close()
    copy.close()
    downgrade_to_v1(path)
    migrated = open_store(path)
    try:
        now = time.time()
        _fill(path, now)
        plan = _pending_probe_plan(migrated, path, now)
    finally:
        migrated.close()
    con = sqlite3.connect(path)
    try:
        indexes = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        version = con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()
    assert version == SCHEMA_VERSION
    assert "workflows_status_queue_name_priority_run_at" in indexes
    assert "workflows_status_name_run_at" not in indexes
    assert "workflows_name_status" not in indexes
    assert not [line for line in plan if "TEMP B-TREE" in line or line.startswith("SCAN t")], plan
