"""The example's whole onboarding story through ``durable run``, on SQLite and PostgreSQL (``any_db``).

``employee_onboarding`` (examples/onboarding.py) sleeps until the start date, provisions two
devices as child workflows, waits for the manager's approval with reminders, then sends the
welcome email. The run is SIGKILLed while it waits for the approval and run again; the
approval is sent with ``durable send``. Every side effect happens once, each child once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, run_cli
from tests.integration.fleet_db import MISSING_TABLE, db_exists
from tests.integration.fleet_support import DbTarget, any_db, query, wait_for  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXAMPLES_APP = ROOT / "examples" / "__init__.py"
STORY_INPUT = {"start_in": 0.5, "remind_every": 0.5}


def _stage(db: DbTarget) -> str | None:
    if not db_exists(db):
        return None
    try:
        rows = query(db, "SELECT value FROM events WHERE workflow_id = 'emp-7' AND key = 'stage'")
    except MISSING_TABLE:
        return None
    return json.loads(rows[0]["value"]) if rows else None


def _run(db: DbTarget, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "durable_workers", "--db", str(db), "--app", str(EXAMPLES_APP),
               "run", "employee_onboarding", "emp-7", *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_onboarding_story_survives_a_kill_while_waiting_for_approval(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    first = _run(db, cwd, "--input", json.dumps(STORY_INPUT))
    wait_for(lambda: _stage(db) == "waiting for approval", 90, "the story waiting for approval")
    wait_for(lambda: query(db, "SELECT count(*) AS n FROM steps WHERE workflow_id = 'emp-7' AND name = 'remind_manager'")[0]["n"] >= 1,
             30, "a reminder sent")  # fmt: skip
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    second = _run(db, cwd)  # resumes with the recorded input
    sent = run_cli("send", "emp-7", "approval", "--payload", '{"approved": true, "by": "m-1"}', "--key", "a-1",
                   db=db, app=EXAMPLES_APP, cwd=cwd)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out
    rows = {r["id"]: r for r in query(db, "SELECT id, status, parent_id, result FROM workflows")}
    assert {r["status"] for r in rows.values()} == {"COMPLETED"} and len(rows) == 3
    assert json.loads(rows["emp-7"]["result"])["by"] == "m-1"
    assert _stage(db) == "done"
    log = cwd / "effects.log" if "://" in str(db) else Path(db).parent / "effects.log"
    actions = Counter(line.split("\t")[1] for line in log.read_text().splitlines())
    reminders = actions.pop("remind_manager")
    assert reminders >= 1
    assert actions == Counter({name: 1 for name in (
        "create_record", "order_laptop", "confirm_laptop", "order_access", "confirm_access", "send_welcome_email",
    )})  # fmt: skip
