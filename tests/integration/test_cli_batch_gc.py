"""``durable-submit --batch`` and ``durable gc`` as a user meets them: real CLI processes on SQLite files.

Bad input (a malformed line, an unknown workflow, a conflicting id, a bad duration or
status) is one ``Error:`` line naming the line or option, a non-zero exit, and nothing
written: no database created, no row added or deleted. A good batch is idempotent.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.integration.test_cli_surface import TEST_APP, run_program

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GOOD = [
    {"name": "backend_submit_elsewhere", "id": "a", "input": {"other_db": "x"}},
    {"name": "backend_other_side", "id": "b", "options": {"delay": 60, "timeout": 600}},
]


def _batch(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _submit(tmp_path: Path, db: Path, lines: list[str]):  # type: ignore[no-untyped-def]
    return run_program("durable-submit", "--batch", _batch(tmp_path, lines), "--db", str(db), "--app", str(TEST_APP),
                       cwd=tmp_path)  # fmt: skip


def _ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(row[0] for row in conn.execute("SELECT id FROM workflows"))


def _one_line(done, *parts: str) -> None:  # type: ignore[no-untyped-def]
    assert done.returncode != 0 and done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_a_good_batch_is_submitted_once_and_again_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    lines = [json.dumps(line) for line in GOOD] + [json.dumps(GOOD[0])]  # the same workflow twice: one
    for _ in range(2):
        done = _submit(tmp_path, db, lines)
        assert done.returncode == 0 and "submitted 2 workflows from" in done.stdout and "(3 lines)" in done.stdout, done.stderr
    assert _ids(db) == ["a", "b"]


@pytest.mark.parametrize(
    ("bad_line", "parts"),
    [
        ("{not json", ("line 3:",)),
        ('["a list"]', ("line 3:", "JSON object")),
        ('{"name": "no_such_flow", "id": "c"}', ("line 3:", "unknown workflow 'no_such_flow'")),
        ('{"name": "backend_other_side", "id": "c", "colour": 1}', ("line 3:", "unknown keys")),
        ('{"name": "backend_other_side", "id": "c", "options": {"delay": -1}}', ("line 3:", "delay")),
        ('{"name": "backend_submit_elsewhere", "id": "c", "input": {"nope": 1}}', ("line 3:", "input")),
        ('{"name": "backend_submit_elsewhere", "id": "a", "input": {"other_db": "y"}}', ("line 3:", "workflow a")),
    ],
)
def test_a_bad_line_is_one_error_naming_it_and_nothing_is_written(bad_line: str, parts: tuple[str, ...],
                                                                  tmp_path: Path) -> None:  # fmt: skip
    db = tmp_path / "durable.db"
    lines = [json.dumps(GOOD[0]), "", bad_line, json.dumps({"name": "backend_other_side", "id": "d"})]
    _one_line(_submit(tmp_path, db, lines), *parts)
    assert not db.exists() or _ids(db) == []  # not a row, whichever line is bad


def test_a_conflict_with_a_stored_workflow_writes_no_line_of_the_batch(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    assert _submit(tmp_path, db, [json.dumps(GOOD[0])]).returncode == 0
    conflict = {"name": "backend_submit_elsewhere", "id": "a", "input": {"other_db": "changed"}}
    _one_line(_submit(tmp_path, db, [json.dumps(GOOD[1]), json.dumps(conflict)]), "line 2:", "workflow a already exists")
    assert _ids(db) == ["a"]


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (("--older-than", "30 days"), "--older-than must be a duration"),
        (("--older-than", "0s"), "--older-than must be a duration"),
        (("--older-than", "30d", "--status", "RUNNING"), "--status takes terminal statuses"),
    ],
)
def test_gc_bad_options_are_one_line_and_delete_nothing(args: tuple[str, ...], part: str, tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    assert _submit(tmp_path, db, [json.dumps(line) for line in GOOD]).returncode == 0
    done = run_program("durable", "gc", *args, "--db", str(db), "--app", str(TEST_APP), cwd=tmp_path)
    _one_line(done, part)
    assert _ids(db) == ["a", "b"]


def test_gc_dry_run_counts_and_gc_never_takes_pending_work(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    assert _submit(tmp_path, db, [json.dumps(line) for line in GOOD]).returncode == 0
    cancelled = run_program("durable", "cancel", "a", "--db", str(db), "--app", str(TEST_APP), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    with sqlite3.connect(db) as conn:  # ended long ago
        conn.execute("UPDATE workflows SET created_at = created_at - 864000, updated_at = updated_at - 864000")
    command = ("durable", "gc", "--older-than", "1d", "--db", str(db), "--app", str(TEST_APP))
    dry = run_program(*command, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "would delete 1 workflows" in dry.stdout, dry.stderr
    assert _ids(db) == ["a", "b"]
    done = run_program(*command, cwd=tmp_path)
    assert done.returncode == 0 and "deleted 1 workflows" in done.stdout, done.stderr
    assert _ids(db) == ["b"]
