"""Schema 6 on both backends: a v5 database migrates (``durable migrate``) with its rows intact.

Schema 6 adds ``workflows.trace_context`` and the dashboard's indexes
``(status, updated_at)`` and ``(name, created_at)``. The v5 database is made from a
current one by dropping exactly those, as a real v5 release left it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)

from durable_workers.backends import SCHEMA_VERSION, NewWorkflow, open_store
from tests.conftest import run_cli
from tests.contract.conftest import Backend
from tests.integration.fleet_db import query

pytestmark = pytest.mark.timeout(120)

NAME = "backend_other_side"
V6_INDEXES = ("workflows_status_updated_at", "workflows_name_created_at")
CARRIER = json.dumps({"traceparent": "00-" + "12" * 16 + "-" + "34" * 8 + "-01"})
ROWS = "SELECT id, name, input, status, attempts, run_at, created_at, queue, priority FROM workflows ORDER BY id"


def _version(db: str) -> int:
    if "://" in db:
        return int(query(db, "SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"])
    return int(query(db, "PRAGMA user_version")[0]["user_version"])


def _indexes(db: str) -> set[str]:
    if "://" in db:
        return {row["indexname"] for row in query(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'workflows'")}
    return {row["name"] for row in query(db, "SELECT name FROM sqlite_master WHERE type = 'index'")}


def _columns(db: str) -> list[str]:
    if "://" in db:
        found = query(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'workflows' "
                          "ORDER BY ordinal_position")  # fmt: skip
        return [row["column_name"] for row in found]
    return [row["name"] for row in query(db, "PRAGMA table_info(workflows)")]


def _to_v5(db: str) -> None:
    """Drop what schema 6 added; the version says 5."""
    for index in V6_INDEXES:
        query(db, f"DROP INDEX {index}")
    query(db, "ALTER TABLE workflows DROP COLUMN trace_context")
    if "://" in db:
        query(db, "UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    else:
        query(db, "PRAGMA user_version = 5")


def _v6_database(backend: Backend) -> str:
    """A current database with three workflows (one claimed, one traced), then set back to v5."""
    db = backend.target("v5")
    store = open_store(db)
    try:
        store.submit_many([NewWorkflow(f"wf-{n}", NAME, json.dumps({"n": n})) for n in range(2)])
        store.submit("wf-traced", NAME, "{}", trace_context=CARRIER)
        assert store.claim_next("w", [NAME], ttl=30) is not None
    finally:
        store.close()
    return db


def test_a_v5_database_migrates_to_v6_with_its_rows_intact(backend: Backend, tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 6
    db = _v6_database(backend)
    _to_v5(db)
    before = query(db, ROWS)
    assert "trace_context" not in _columns(db) and not set(V6_INDEXES) & _indexes(db)
    check = run_cli("migrate", "--check", db=db, cwd=tmp_path)
    assert check.returncode == 1 and "schema v5 -> v6" in check.stdout
    dry = run_cli("migrate", "--dry-run", db=db, cwd=tmp_path)
    assert dry.returncode == 0 and "trace_context" in dry.stdout and all(i in dry.stdout for i in V6_INDEXES)
    assert _version(db) == 5
    done = run_cli("migrate", db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "schema v5 -> v6"
    assert _version(db) == 6
    assert query(db, ROWS) == before
    assert _columns(db)[-1] == "trace_context"
    assert set(V6_INDEXES) <= _indexes(db)
    assert {row["trace_context"] for row in query(db, "SELECT trace_context FROM workflows")} == {None}
    store = open_store(db)
    try:
        store.submit("after", NAME, "{}", trace_context=CARRIER)
        assert store.trace_context("after") == CARRIER
        assert store.get_workflow("wf-1").status in ("PENDING", "RUNNING")
    finally:
        store.close()


def test_a_database_set_back_to_v5_that_kept_the_column_migrates_too(backend: Backend, tmp_path: Path) -> None:
    db = _v6_database(backend)
    for index in V6_INDEXES:
        query(db, f"DROP INDEX {index}")
    if "://" in db:
        query(db, "UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    else:
        query(db, "PRAGMA user_version = 5")
    store = open_store(db)  # a writer migrates at open
    try:
        assert store.schema_version() == 6
        assert store.trace_context("wf-traced") == CARRIER
    finally:
        store.close()
    assert set(V6_INDEXES) <= _indexes(db)
