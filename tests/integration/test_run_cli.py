"""``durable run`` / ``durable steps`` as real subprocesses on real SQLite files and PostgreSQL.

* A run that SIGKILLs itself at every step boundary of onboarding resumes with the next
  ``durable run``: completed steps are replayed (their effect stays single), the rest run.
* Bad input fails with one ``Error:`` line, a non-zero exit and an untouched database.
* ``durable steps`` prints the recorded keys, statuses and attempts (table and JSON).

The crash-and-resume test of tests/apps' onboarding and the ``durable steps`` tests run on both
backends (``any_db``); the example app's run and the bad-input table (a damaged, read-only or
newer-schema SQLite file) on SQLite: the input checks happen before any database is opened, and
PostgreSQL's bad targets are tests/integration/test_cli_pg_errors.py.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Callable

import pytest

from tests.apps.core_flows import effects_log_of
from tests.conftest import APPS, ROOT, run_cli
from tests.integration.fleet_support import DbTarget, any_db, cli_cwd, query  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EXAMPLES_APP = ROOT / "examples" / "__init__.py"

#: Onboarding's step names and the keys they record.
ONBOARDING_KEYS = {
    "create_record": "create_record#1",
    "provision_laptop": "parallel#1/0/provision_laptop#1",
    "provision_access": "parallel#1/1/provision_access#1",
    "send_welcome_email": "send_welcome_email#1",
}
CRASH_POINTS = [f"{name}:{point}" for name in ONBOARDING_KEYS for point in ("before", "after")]


# --------------------------------------------------------------------------- helpers


def step_rows(db: DbTarget, workflow_id: str) -> dict[str, tuple[str, int]]:
    """step_key -> (status, attempts), read with the test's own connection (either backend)."""
    rows = query(db, "SELECT step_key, status, attempts FROM steps WHERE workflow_id = ?", (workflow_id,))
    return {r["step_key"]: (r["status"], r["attempts"]) for r in rows}


def resume_report(stdout: str) -> dict[str, str]:
    """step_key -> 'replayed' | 'ran', from the progress lines of ``durable run``."""
    return {key: verb for verb, key in re.findall(r"^\s+(replayed|ran)\s+(\S+)", stdout, re.MULTILINE)}


def effect_counts(log: Path, prefix: str = "") -> Counter[str]:
    """Lines of an effects file per step key (its first tab-separated field, less ``prefix``)."""
    if not log.exists():
        return Counter()
    return Counter(line.split("\t", 1)[0].removeprefix(prefix) for line in log.read_text().splitlines())


def crash_and_resume(
    db: DbTarget, app: Path, name: str, crash_at: str, effects: Callable[[], Counter[str]]
) -> tuple[set[str], Counter[str], Counter[str]]:
    """Run until the process kills itself at ``crash_at``, then run again; check what both runs did.

    Returns the keys COMPLETED at the crash, and the effect counts at the crash and at the end.
    """
    crashed = run_cli("run", name, "emp-1", "--crash-at", crash_at, db=db, app=app, cwd=cli_cwd(db))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    at_crash, effects_at_crash = step_rows(db, "emp-1"), effects()

    target, point = crash_at.split(":")
    target_key = ONBOARDING_KEYS[target]
    assert at_crash[target_key] == ("COMPLETED" if point == "after" else "RUNNING", 1)
    assert effects_at_crash[target_key] == (1 if point == "after" else 0)

    resumed = run_cli("run", name, "emp-1", db=db, app=app, cwd=cli_cwd(db))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "emp-1 COMPLETED" in resumed.stdout
    completed_at_crash = {key for key, (status, _) in at_crash.items() if status == "COMPLETED"}
    assert resume_report(resumed.stdout) == {
        key: "replayed" if key in completed_at_crash else "ran" for key in ONBOARDING_KEYS.values()
    }
    final = step_rows(db, "emp-1")
    assert {key: status for key, (status, _) in final.items()} == dict.fromkeys(ONBOARDING_KEYS.values(), "COMPLETED")
    assert final[target_key][1] == (2 if point == "before" else 1)
    return completed_at_crash, effects_at_crash, effects()


# --------------------------------------------------------------------------- crash and resume


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_crash_at_step_boundary_then_resume_runs_each_completed_effect_once(
    tmp_path: Path, any_db: DbTarget, crash_at: str  # noqa: F811
) -> None:
    """tests/apps/core_flows.py's onboarding copy appends EVERY execution to its log (both backends)."""
    db, log = any_db, effects_log_of(str(any_db))
    try:
        completed, before, after = crash_and_resume(
            db, APPS / "__init__.py", "core_onboarding", crash_at, lambda: effect_counts(log)
        )
    finally:
        log.unlink(missing_ok=True)
    for key in ONBOARDING_KEYS.values():
        if key in completed:
            assert (before[key], after[key]) == (1, 1), key  # replayed, not run again
        else:
            # Re-run once; a sibling branch killed mid-step may have run once already (at-least-once).
            assert after[key] == before[key] + 1, key
            assert before[key] <= 1, key
    target = ONBOARDING_KEYS[crash_at.split(":")[0]]
    assert after[target] == 1


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_crash_and_resume_of_the_example_writes_one_effect_line_per_step(tmp_path: Path, crash_at: str) -> None:
    """examples/onboarding.py deduplicates by idempotency key: effects.log ends with one line per step."""
    db, log = tmp_path / "durable.db", tmp_path / "effects.log"
    _, _, after = crash_and_resume(db, EXAMPLES_APP, "onboarding", crash_at, lambda: effect_counts(log, "emp-1/"))
    assert after == Counter(ONBOARDING_KEYS.values())


# --------------------------------------------------------------------------- bad input


def snapshot(db: Path) -> object:
    """Everything recorded in ``db``: user_version and a full SQL dump, or the raw bytes if not SQLite."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(db)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            return version, "\n".join(conn.iterdump())
    except sqlite3.DatabaseError:
        return db.read_bytes()


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real database holding one completed workflow (built once, copied per test)."""
    db = tmp_path_factory.mktemp("populated") / "durable.db"
    done = run_cli("run", "core_greet", "w0", "--input", '{"name": "ada"}', db=db)
    assert done.returncode == 0, done.stderr
    assert not Path(f"{db}-wal").exists()  # fully checkpointed: the file alone is the database
    return db


def copy_db(populated: Path, folder: Path) -> Path:
    db = folder / "durable.db"
    shutil.copyfile(populated, db)
    return db


def newer_schema(populated: Path, folder: Path) -> Path:
    db = copy_db(populated, folder)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    return db


def read_only(populated: Path, folder: Path) -> Path:
    db = copy_db(populated, folder)
    db.chmod(0o444)
    return db


def not_sqlite(populated: Path, folder: Path) -> Path:
    db = folder / "durable.db"
    db.write_bytes(bytes(range(256)) * 16)
    return db


def missing_folder(populated: Path, folder: Path) -> Path:
    db = Path("/nonexistent/dir/x.db")
    assert not db.parent.exists()
    return db


RUN = ("run", "core_greet", "w1")

BAD_INPUT = [
    pytest.param(copy_db, ("run", "core_no_such_flow", "w1"), "unknown workflow 'core_no_such_flow'", id="unknown-name"),
    pytest.param(copy_db, (*RUN, "--input", "{not json"), "not valid JSON", id="malformed-json"),
    pytest.param(copy_db, (*RUN, "--input", "[1, 2]"), "must be a JSON object", id="input-list"),
    pytest.param(copy_db, (*RUN, "--input", '{"nobody": 1}'), "unexpected keyword argument 'nobody'", id="unknown-keyword"),
    pytest.param(missing_folder, RUN, "does not exist", id="missing-folder"),
    pytest.param(not_sqlite, RUN, "is not a durable_workers SQLite database", id="not-sqlite"),
    pytest.param(newer_schema, RUN, "schema version 99", id="newer-schema"),
    pytest.param(read_only, RUN, "read-only", id="read-only"),
    pytest.param(copy_db, ("steps", "no-such-id"), "no workflow with id 'no-such-id'", id="steps-unknown-id"),
    pytest.param(copy_db, ("steps", "no-such-id", "--json"), "no workflow with id 'no-such-id'", id="steps-json-unknown-id"),
]


@pytest.mark.parametrize("make_db, args, reason", BAD_INPUT)
def test_bad_input_is_one_error_line_and_changes_nothing(
    populated_db: Path, tmp_path: Path, make_db, args: tuple[str, ...], reason: str
) -> None:
    db = make_db(populated_db, tmp_path)
    before, mode = snapshot(db), db.stat().st_mode if db.exists() else None

    result = run_cli(*args, db=db, cwd=tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert reason in lines[0]
    assert snapshot(db) == before
    assert (db.stat().st_mode if db.exists() else None) == mode


# --------------------------------------------------------------------------- durable steps


def steps_output(db: DbTarget, workflow_id: str) -> tuple[list[tuple[str, str, int]], dict[str, dict]]:
    """``durable steps ID`` as (key, status, attempts) rows in printed order; ``--json`` must agree."""
    table = run_cli("steps", workflow_id, db=db, cwd=cli_cwd(db))
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "STATUS", "ATTEMPTS"]
    rows = [(key, status, int(attempts)) for key, status, attempts, *_ in (line.split() for line in lines)]

    as_json = run_cli("steps", workflow_id, "--json", db=db, cwd=cli_cwd(db))
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    assert [(r["step_key"], r["status"], r["attempts"]) for r in records] == rows
    return rows, {r["step_key"]: r for r in records}


def test_steps_shows_the_rerun_attempt_after_a_crash(any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    try:
        crashed = run_cli("run", "core_onboarding", "emp-1", "--crash-at", "create_record:before", db=db, cwd=cli_cwd(db))
        assert crashed.returncode == -signal.SIGKILL
        assert run_cli("run", "core_onboarding", "emp-1", db=db, cwd=cli_cwd(db)).returncode == 0
    finally:
        effects_log_of(str(db)).unlink(missing_ok=True)

    rows, records = steps_output(db, "emp-1")
    assert sorted(rows) == sorted(
        [
            ("create_record#1", "COMPLETED", 2),
            (ONBOARDING_KEYS["provision_laptop"], "COMPLETED", 1),
            (ONBOARDING_KEYS["provision_access"], "COMPLETED", 1),
            ("send_welcome_email#1", "COMPLETED", 1),
        ]
    )
    assert (rows[0][0], rows[-1][0]) == ("create_record#1", "send_welcome_email#1")  # start order
    assert records["create_record#1"]["output"] == {"action": "create_record", "key": "emp-1/create_record#1"}
    assert records["create_record#1"]["error"] is None


def test_steps_shows_a_failed_step_with_its_attempts_and_error(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    failing = json.dumps({"calls": str(tmp_path / "calls"), "fail_times": 5, "retries": 1})
    failed = run_cli("run", "core_retry", "flaky-1", "--input", failing, db=db, cwd=cli_cwd(db))
    assert failed.returncode == 1
    assert "flaky-1 FAILED: ConnectionError: attempt 2 failed" in failed.stdout

    rows, records = steps_output(db, "flaky-1")
    assert rows == [("flaky#1", "FAILED", 2)]
    assert (records["flaky#1"]["output"], records["flaky#1"]["error"]) == (None, "ConnectionError: attempt 2 failed")
