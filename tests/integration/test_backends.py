"""Two databases in one process, end to end (issue 9, item 1; the reported bug).

A workflow step that opens a ``Client`` on another database file and submits
there used to re-point the process-wide database: the rest of the attempt wrote
into the other file, and the workflow vanished from its own. Here it runs both
in ``durable run`` (the CLI process) and in a supervised worker process, and
must complete in its own database, with the other file holding only what the
step submitted. The workflow's own database is a SQLite file or a PostgreSQL database
(``any_db``, ``on_both_backends``); the other one is a SQLite file, so the PostgreSQL runs also
mix the two backends in one process. Workflows: tests/apps/backend_flows.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.pg_cluster import free_port
from tests.integration.fleet_support import (
    DbTarget,
    any_db,  # noqa: F401  (fixture)
    cli_cwd,
    fleet,  # noqa: F401  (fixture)
    on_both_backends,
    query,
    step_rows,
    submit,
    wait_status,
    workflow_row,
)

pytestmark = pytest.mark.integration

STEPS = {"before#1", "submit_elsewhere#1", "after#1"}


def _other_database(tmp_path: Path) -> Path:
    """Another app's database with a row of its own (created by another process)."""
    other = tmp_path / "other-app.db"
    done = run_cli("submit", "backend_other_side", "theirs", db=other)
    assert done.returncode == 0, done.stderr
    return other


def _assert_both_sides(db: DbTarget, other: Path, workflow_id: str) -> None:
    row = workflow_row(db, workflow_id)
    assert row is not None and row["status"] == "COMPLETED", row
    result = json.loads(row["result"])
    assert result["before"] == "before" and result["after"] == "after", result
    assert result["seen"] == {"id": f"from-{workflow_id}", "status": "PENDING", "count": 2}, result
    steps = step_rows(db, workflow_id)
    assert set(steps) == STEPS and all(s["status"] == "COMPLETED" for s in steps.values()), steps
    # The other file holds its own row and the submitted one; none of this workflow's rows.
    assert sorted(r["id"] for r in query(other, "SELECT id FROM workflows")) == [f"from-{workflow_id}", "theirs"]
    assert query(other, "SELECT * FROM steps") == [] and query(other, "SELECT * FROM leases") == []
    assert [r["id"] for r in query(db, "SELECT id FROM workflows")] == [workflow_id]


def test_durable_run_of_a_step_that_submits_to_another_database(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    other = _other_database(tmp_path)
    values = json.dumps({"other_db": str(other)})
    done = run_cli("run", "backend_submit_elsewhere", "mine", "--input", values, db=any_db, cwd=cli_cwd(any_db))
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_both_sides(any_db, other, "mine")


@on_both_backends
def test_a_worker_whose_step_submits_to_another_database(tmp_path: Path, fleet) -> None:  # noqa: F811
    other = _other_database(tmp_path)
    fleet.start(workers=1)
    submit(fleet.db, "backend_submit_elsewhere", "mine", {"other_db": str(other)})
    wait_status(fleet.db, ["mine"], "COMPLETED", timeout=60)
    _assert_both_sides(fleet.db, other, "mine")


@pytest.mark.parametrize("command", [("status",), ("submit", "backend_other_side", "x")])
def test_a_postgresql_url_with_no_server_behind_it_is_one_line(db_path: Path, command: tuple[str, ...]) -> None:
    url = f"postgresql://durable@127.0.0.1:{free_port()}/durable"  # nothing listens there
    done = run_cli(*command, db=url, cwd=db_path.parent)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"Error: cannot connect to {url}: Connection refused"], done.stderr
