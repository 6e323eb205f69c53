"""``durable schedule add|list|pause|resume|remove|trigger`` on SQLite and PostgreSQL (``any_db``).

The real CLI runs in a subprocess on ``tests/schedule_app.py`` (``report`` takes ``day: int``;
``tick`` is declared with ``@workflow(schedule=...)``). Every command's effect is checked in the
database rows; every bad request is one ``Error:`` line on stderr, a non-zero exit, no traceback,
and leaves every table exactly as it was.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from durable_workers.backends import open_store
from durable_workers.config import SCHEDULER_ROLE
from durable_workers.schedules import new_schedule, slot_iso
from tests.conftest import ROOT, run_cli
from tests.integration.fleet_support import DbTarget, any_db, cli_cwd, query  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: The app, loaded only by the CLI processes (never imported here: see its docstring).
SCHEDULE_APP = ROOT / "tests" / "schedule_app.py"
#: Every table of the schema (what a refused command must leave as it was).
TABLES = ("workflows", "steps", "leases", "workers", "messages", "events", "queues", "schedules", "roles", "meta")
HOLDER = "host-a/supervisor-4242-0badf00d"
BERLIN = "Europe/Berlin"


def durable(db: DbTarget, *args: str) -> subprocess.CompletedProcess[str]:
    """``durable --db DB --app tests/schedule_app.py ARGS...``."""
    return run_cli(*args, db=db, app=SCHEDULE_APP, cwd=cli_cwd(db))


def ok(db: DbTarget, *args: str) -> str:
    """Run a command that must succeed; its stdout."""
    done = durable(db, *args)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def schedule_row(db: DbTarget, name: str) -> dict[str, Any] | None:
    rows = query(db, "SELECT * FROM schedules WHERE name = ?", (name,))
    return rows[0] if rows else None


def snapshot(db: DbTarget) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs."""
    return {table: sorted(repr(sorted(row.items())) for row in query(db, f"SELECT * FROM {table}")) for table in TABLES}


def seed(db: DbTarget, *, hold: bool) -> None:
    """A run-time schedule ``nightly``, the app's ``tick`` as its supervisor writes it, and (``hold``)
    the scheduler role held by :data:`HOLDER`."""
    store = open_store(str(db))
    try:
        now = store.now()
        store.add_schedule(new_schedule("nightly", "report", "0 2 * * *", input={"day": 1}, now=now), now=now)
        tick = new_schedule("tick", "tick", "* * * * * *", catchup="all", origin="app", now=now)
        store.add_schedule(tick, now=now)
        if hold:
            assert store.hold_role(SCHEDULER_ROLE, HOLDER, 600.0) is not None
    finally:
        store.close()


def test_add_list_pause_resume_trigger_remove(any_db: DbTarget) -> None:  # noqa: F811
    out = ok(any_db, "schedule", "add", "report", "0 9 * * MON-FRI", "--name", "daily", "--timezone", BERLIN,
             "--catchup", "all", "--input", '{"day": 3}')  # fmt: skip
    row = schedule_row(any_db, "daily")
    assert row is not None and out.startswith("schedule daily: report at '0 9 * * MON-FRI' Europe/Berlin")
    assert (row["workflow"], row["timezone"], row["catchup"], row["origin"]) == ("report", BERLIN, "all", "cli")
    assert json.loads(row["input"]) == {"day": 3} and not row["paused"] and row["last_slot"] is None
    expected = croniter("0 9 * * MON-FRI", datetime.fromtimestamp(row["created_at"], ZoneInfo(BERLIN))).get_next(float)
    assert row["next_at"] == expected
    local = datetime.fromtimestamp(row["next_at"], ZoneInfo(BERLIN))
    assert (local.weekday() < 5, local.hour, local.minute) == (True, 9, 0)

    listed = ok(any_db, "schedule", "list").splitlines()
    assert listed[0].startswith("daily: report at '0 9 * * MON-FRI' Europe/Berlin, catchup=all, cli; next ")
    assert f"next {slot_iso(row['next_at'])}" in listed[0] and f"= {local:%Y-%m-%d} 09:00 CE" in listed[0]
    assert listed[-1].startswith("scheduler lease: not held")
    as_json = json.loads(ok(any_db, "schedule", "list", "--json"))
    assert as_json["scheduler"] is None
    (item,) = as_json["schedules"]
    assert (item["name"], item["next_at"], item["next"], item["input"]) == ("daily", expected, slot_iso(expected), {"day": 3})

    assert "daily" in ok(any_db, "schedule", "pause", "daily") and schedule_row(any_db, "daily")["paused"]
    assert "daily: report at" in ok(any_db, "schedule", "list") and "; paused" in ok(any_db, "schedule", "list")
    ok(any_db, "schedule", "resume", "daily")
    resumed = schedule_row(any_db, "daily")
    assert not resumed["paused"] and resumed["next_at"] >= row["next_at"]

    submitted = ok(any_db, "schedule", "trigger", "daily").split()
    assert submitted[0] == "submitted" and submitted[1].startswith("daily@")
    (run,) = query(any_db, "SELECT * FROM workflows WHERE id = ?", (submitted[1],))
    assert run["name"] == "report" and json.loads(run["input"]) == {"day": 3} and run["status"] == "PENDING"

    assert ok(any_db, "schedule", "remove", "daily").strip() == "removed schedule daily"
    assert schedule_row(any_db, "daily") is None
    assert query(any_db, "SELECT id FROM workflows WHERE id = ?", (submitted[1],))  # its runs stay
    assert "no schedules" in ok(any_db, "schedule", "list")


def test_list_names_the_lease_holder_and_each_next_fire_time(any_db: DbTarget) -> None:  # noqa: F811
    seed(any_db, hold=True)
    lines = ok(any_db, "schedule", "list").splitlines()
    rows = {name: schedule_row(any_db, name) for name in ("nightly", "tick")}
    assert [line.split(":")[0] for line in lines[:2]] == ["nightly", "tick"]
    for line, (name, row) in zip(lines, rows.items()):
        assert row is not None and f"next {slot_iso(row['next_at'])}" in line, line
    assert "catchup=all, app;" in lines[1]
    assert lines[2].startswith(f"scheduler lease: {HOLDER} (renewed ")
    as_json = json.loads(ok(any_db, "schedule", "list", "--json"))
    assert as_json["scheduler"] == HOLDER
    assert {s["name"]: s["next_at"] for s in as_json["schedules"]} == {n: r["next_at"] for n, r in rows.items()}


#: Refused requests: (id, arguments after ``durable``).
REFUSED = [
    ("bad-cron", ("schedule", "add", "report", "* * * *", "--name", "x")),
    ("bad-cron-value", ("schedule", "add", "report", "61 * * * *", "--name", "x")),
    ("bad-timezone", ("schedule", "add", "report", "* * * * *", "--name", "x", "--timezone", "Mars/Olympus")),
    ("bad-catchup", ("schedule", "add", "report", "* * * * *", "--name", "x", "--catchup", "sometimes")),
    ("unknown-workflow", ("schedule", "add", "payroll", "* * * * *")),
    ("bad-input-json", ("schedule", "add", "report", "* * * * *", "--name", "x", "--input", '{"day": 3')),
    ("input-not-an-object", ("schedule", "add", "report", "* * * * *", "--name", "x", "--input", "[3]")),
    ("input-unknown-argument", ("schedule", "add", "report", "* * * * *", "--name", "x", "--input", '{"month": 3}')),
    ("bad-name", ("schedule", "add", "report", "* * * * *", "--name", "x@y")),
    ("name-taken", ("schedule", "add", "report", "* * * * *", "--name", "nightly")),
    ("app-name-taken", ("schedule", "add", "tick", "* * * * *", "--replace")),
    ("remove-app-schedule", ("schedule", "remove", "tick")),
    ("remove-unknown", ("schedule", "remove", "weekly")),
    ("pause-unknown", ("schedule", "pause", "weekly")),
    ("resume-unknown", ("schedule", "resume", "weekly")),
    ("trigger-unknown", ("schedule", "trigger", "weekly")),
]


@pytest.mark.parametrize("args", [args for _, args in REFUSED], ids=[name for name, _ in REFUSED])
def test_a_refused_request_is_one_error_line_and_changes_nothing(any_db: DbTarget, args: tuple[str, ...]) -> None:  # noqa: F811
    seed(any_db, hold=False)
    before = snapshot(any_db)
    done = durable(any_db, *args)
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("Error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(any_db) == before
