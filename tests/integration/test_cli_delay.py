"""``durable submit --delay`` / ``--at`` on SQLite and PostgreSQL: the start time is recorded on the
database's clock, ``durable status`` says "delayed until ...", a fleet starts the workflow no sooner,
and bad values are one line, exit 2, nothing written."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_db import MISSING_TABLE, db_exists
from tests.integration.fleet_support import (  # noqa: F401  (any_db, fleet: fixtures)
    APP,
    DbTarget,
    any_db,
    cli_cwd,
    fleet,
    on_both_backends,
    query,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _cli(db: DbTarget, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, db=db, app=APP, cwd=cli_cwd(db))


def _row(db: DbTarget, workflow_id: str) -> dict:
    return query(db, "SELECT run_at, created_at, status FROM workflows WHERE id = ?", (workflow_id,))[0]


def test_delay_and_at_record_the_start_and_status_shows_it(any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    values = json.dumps({"calls": "unused"})
    done = _cli(db, "submit", "sleep_flow", "later", "--input", values, "--delay", "2h")
    assert done.returncode == 0 and "(PENDING, delayed until " in done.stdout, done.stderr
    row = _row(db, "later")
    assert row["run_at"] - row["created_at"] == pytest.approx(7200, abs=5)
    shown = _cli(db, "status", "later")
    assert "delayed until " in shown.stdout and "(in 1h59m" in shown.stdout
    at = "2031-05-04T03:02:01Z"
    assert _cli(db, "submit", "sleep_flow", "fixed", "--input", values, "--at", at).returncode == 0
    assert _row(db, "fixed")["run_at"] == datetime(2031, 5, 4, 3, 2, 1, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("args, says", [
    (("--delay", "5x"), "is not a duration"),
    (("--delay", "-3s"), "is not a duration"),
    (("--at", "tomorrow"), "is not an ISO 8601 time"),
    (("--delay", "1m", "--at", "2031-01-01T00:00Z"), "give --delay or --at, not both"),
])  # fmt: skip
def test_bad_start_options_are_one_line_and_write_nothing(any_db: DbTarget, args: tuple, says: str) -> None:  # noqa: F811
    done = _cli(any_db, "submit", "sleep_flow", "bad", "--input", '{"calls": "x"}', *args)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    if db_exists(any_db):
        try:
            assert query(any_db, "SELECT id FROM workflows WHERE id = 'bad'") == []
        except MISSING_TABLE:
            pass


@on_both_backends
def test_a_fleet_starts_a_delayed_workflow_no_sooner_than_its_time(fleet, tmp_path: Path) -> None:
    fleet.start(workers=1)
    values = json.dumps({"calls": str(tmp_path / "calls"), "seconds": 0})
    assert _cli(fleet.db, "submit", "sleep_flow", "d", "--input", values, "--delay", "1s").returncode == 0
    wait_status(fleet.db, ["d"], "COMPLETED", 60)
    first = query(fleet.db, "SELECT min(started_at) AS t FROM steps WHERE workflow_id = 'd'")[0]["t"]
    assert first >= _row(fleet.db, "d")["run_at"]
