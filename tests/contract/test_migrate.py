"""Schema migrations on both backends: ``durable migrate`` and concurrent first starts.

Every database here is real (a SQLite file, or a fresh database on the test
PostgreSQL cluster) and every starter a real process. A v1 database exists
only on SQLite: the PostgreSQL schema history begins at v2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)

from durable_workers import Client, default_registry
from durable_workers.backends import SCHEMA_VERSION, open_store
from durable_workers.config import load_config
from tests.conftest import APPS, cli_env, run_cli
from tests.contract.conftest import Backend
from tests.integration.fleet_db import query
from tests.integration.fleet_support import Fleet
from tests.schema_v1 import downgrade_to_v1

pytestmark = pytest.mark.timeout(180)

NAME = "backend_other_side"
STARTERS = 4
PROCESS_TIMEOUT_S = 120


def _meta(db: str) -> dict[str, str]:
    return {row["key"]: row["value"] for row in query(db, "SELECT key, value FROM meta")}


def _version(db: str) -> int:
    if "://" in db:
        return int(_meta(db).get("schema_version", 0))
    return int(query(db, "PRAGMA user_version")[0]["user_version"])


def _set_version(db: str, version: int) -> None:
    if "://" in db:
        query(db, "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    else:
        query(db, f"PRAGMA user_version = {version}")


def _v1_database(backend: Backend, name: str, workflows: int = 3) -> str:
    """A SQLite database of schema v1 holding ``workflows`` PENDING workflows ``wf-0``..."""
    if backend.name != "sqlite":
        pytest.skip("the PostgreSQL schema history begins at v2: there is no v1 database to migrate")
    db = backend.target(name)
    store = open_store(db)
    for index in range(workflows):
        store.submit(f"wf-{index}", NAME, '{"n": %d}' % index)
    store.close()
    downgrade_to_v1(Path(db))
    return db


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


def _migrate(db: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("migrate", *args, db=db, cwd=tmp_path)


def test_durable_migrate_takes_a_v1_database_to_current_with_rows_intact(backend: Backend, tmp_path: Path) -> None:
    db = _v1_database(backend, "old")
    before = query(db, "SELECT id, name, input, status FROM workflows ORDER BY id")
    done = _migrate(db, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"schema v1 -> v{SCHEMA_VERSION}"
    assert _version(db) == SCHEMA_VERSION
    assert query(db, "SELECT id, name, input, status FROM workflows ORDER BY id") == before
    assert len(_meta(db)["db_id"]) == 32
    again = _migrate(db, tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == f"schema is current (v{SCHEMA_VERSION})"


def test_check_and_dry_run_change_nothing(backend: Backend, tmp_path: Path) -> None:
    db = backend.target("empty")
    if backend.name == "sqlite":
        Path(db).touch()  # an empty file is an empty SQLite database
    check = _migrate(db, tmp_path, "--check")
    assert check.returncode == 1
    assert check.stdout.strip() == f"migrations pending: schema v0 -> v{SCHEMA_VERSION}; run `durable migrate`"
    dry = _migrate(db, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.strip().splitlines()
    assert lines[0] == f"would migrate: schema v0 -> v{SCHEMA_VERSION}"
    assert any(line.startswith("CREATE TABLE") and "workflows" in line for line in lines[1:])
    assert _migrate(db, tmp_path, "--check").returncode == 1  # the dry run created nothing
    done = _migrate(db, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"schema v0 -> v{SCHEMA_VERSION}"
    current = _migrate(db, tmp_path, "--check")
    assert current.returncode == 0 and current.stdout.strip() == f"schema is current (v{SCHEMA_VERSION})"
    assert _migrate(db, tmp_path, "--dry-run").stdout.strip() == f"schema is current (v{SCHEMA_VERSION})"


def test_check_and_dry_run_on_a_v1_database(backend: Backend, tmp_path: Path) -> None:
    db = _v1_database(backend, "old")
    check = _migrate(db, tmp_path, "--check")
    assert check.returncode == 1 and "schema v1 -> v" in check.stdout
    dry = _migrate(db, tmp_path, "--dry-run")
    assert dry.returncode == 0 and "ALTER TABLE workflows ADD COLUMN interruption TEXT;" in dry.stdout.splitlines()
    assert _version(db) == 1


def test_a_newer_schema_is_a_one_line_error_and_stays_as_it_is(backend: Backend, tmp_path: Path) -> None:
    db = backend.target("newer")
    open_store(db).close()
    _set_version(db, SCHEMA_VERSION + 7)
    for args in ((), ("--check",), ("--dry-run",)):
        line = _one_line_error(_migrate(db, tmp_path, *args))
        assert f"schema version {SCHEMA_VERSION + 7}, newer than" in line and "upgrade durable_workers" in line
    line = _one_line_error(run_cli("submit", NAME, "x", db=db, cwd=tmp_path))
    assert "newer than" in line
    assert _version(db) == SCHEMA_VERSION + 7


def _start_all(db: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start ``STARTERS`` submitters and two ``durable migrate`` at once; wait for all."""
    base = [sys.executable, "-m", "durable_workers", "--db", db, "--app", str(APPS / "__init__.py")]
    commands = [base + ["submit", NAME, f"new-{index}"] for index in range(STARTERS)] + [base + ["migrate"]] * 2
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=cli_env())
        for command in commands
    ]
    results = []
    for proc, command in zip(procs, commands):
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def _assert_one_schema(db: str, results: list[subprocess.CompletedProcess[str]]) -> None:
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results]
    assert _version(db) == SCHEMA_VERSION
    meta = query(db, "SELECT key, value FROM meta")
    assert [row["key"] for row in meta].count("db_id") == 1
    ids = {row["id"] for row in query(db, "SELECT id FROM workflows")}
    assert {f"new-{index}" for index in range(STARTERS)} <= ids
    migrated = [r.stdout.strip() for r in results[STARTERS:]]
    assert all(line.startswith("schema ") for line in migrated), migrated


def test_concurrent_first_starts_on_an_empty_database_do_not_race(backend: Backend, tmp_path: Path) -> None:
    db = backend.target("fresh")
    results = _start_all(db, tmp_path)
    _assert_one_schema(db, results)
    if "://" in db:
        assert _meta(db)["schema_version"] == str(SCHEMA_VERSION)


def test_concurrent_first_starts_on_a_v1_database_do_not_race(backend: Backend, tmp_path: Path) -> None:
    db = _v1_database(backend, "old")
    results = _start_all(db, tmp_path)
    _assert_one_schema(db, results)
    assert {"wf-0", "wf-1", "wf-2"} <= {row["id"] for row in query(db, "SELECT id FROM workflows")}


def test_pool_size_reaches_the_store_and_sqlite_ignores_it(backend: Backend, tmp_path: Path) -> None:
    db = backend.target("pool")
    client = Client(config=load_config(db=db, pool_size=3, cwd=tmp_path), registry=default_registry)
    try:
        if backend.name == "postgresql":
            assert client.store.pool_size == 3 == client.store.db._max_connections  # type: ignore[attr-defined]
        assert client.submit(NAME, "pooled").status == "PENDING"
    finally:
        client.close()
    shown = run_cli("--pool-size", "2", "status", "pooled", db=db, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize(
    "args, env, code",
    [
        (("--pool-size", "0", "status"), {}, 2),
        (("status", "--pool-size", "many"), {}, 2),
        (("status",), {"DURABLE_POOL_SIZE": "0"}, 1),
        (("status",), {"DURABLE_POOL_SIZE": "lots"}, 1),
    ],
)
def test_a_bad_pool_size_is_one_line(tmp_path: Path, args: tuple[str, ...], env: dict[str, str], code: int) -> None:
    done = run_cli(*args, db=tmp_path / "x.db", cwd=tmp_path, env=env)
    assert done.returncode == code
    assert "pool" in _one_line_error(done).lower()
    assert not (tmp_path / "x.db").exists()


def test_supervisor_rejects_a_bad_pool_size(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "supervisor", "--db", str(tmp_path / "x.db"), "--pool-size", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, cwd=tmp_path, env=cli_env())
    assert done.returncode == 2
    assert "--pool-size" in _one_line_error(done)


def test_a_supervisor_migrates_a_v1_database_at_start(backend: Backend, tmp_path: Path) -> None:
    db = _v1_database(backend, "old")
    fleet = Fleet(tmp_path, Path(db))
    try:
        supervisor = fleet.start(workers=1)  # ready: its worker registered, so the schema was usable
        assert _version(db) == SCHEMA_VERSION
        assert {"wf-0", "wf-1", "wf-2"} <= {row["id"] for row in query(db, "SELECT id FROM workflows")}
        supervisor.terminate()
        assert supervisor.wait_exit() == 0
    finally:
        fleet.cleanup()
