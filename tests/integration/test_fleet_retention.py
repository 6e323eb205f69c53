"""Retention beside a live fleet, on SQLite and PostgreSQL (``on_both_backends``).

A supervisor started with ``--retention 1s`` sweeps every second while its workers run:
finished workflows (submitted as one ``durable submit --batch`` file) disappear with their
steps, while a workflow blocked in a step (RUNNING, holding its lease) and one waiting for a
message (WAITING) keep every row; once released they finish normally, and are swept in turn.
A ``durable gc`` run by hand meanwhile changes nothing of theirs either. Every wait is on
database rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    APP,
    cli_cwd,
    fleet,
    lease_row,
    ledger_count,
    on_both_backends,
    query,
    running_step,
    step_rows,
    wait_for,
    workflow_row,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(240)]


def _cli(db, *args: str):  # type: ignore[no-untyped-def]
    done = run_cli(*args, db=db, app=APP, cwd=cli_cwd(db))
    assert done.returncode == 0, done.stderr
    return done


def _present(db, ids: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    marks = ",".join("?" * len(ids))
    return {row["id"] for row in query(db, f"SELECT id FROM workflows WHERE id IN ({marks})", ids)}


def _orphans(db) -> int:  # type: ignore[no-untyped-def]
    """Steps, leases, messages and events whose workflow is gone."""
    return sum(
        query(db, f"SELECT count(*) AS n FROM {table} WHERE workflow_id NOT IN (SELECT id FROM workflows)")[0]["n"]
        for table in ("steps", "leases", "messages", "events")
    )


def test_the_supervisor_sweeps_finished_work_and_never_touches_running_work(fleet, tmp_path: Path) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    quick = [f"quick-{n}" for n in range(6)]
    lines = [{"name": "fleet_steps", "id": wid, "input": {"ledger": str(ledger), "n": 2}} for wid in quick]
    lines.append({"name": "fleet_hold", "id": "held", "input": {"ledger": str(ledger), "release": str(release)}})
    lines.append({"name": "approval_flow", "id": "ask", "input": {"calls": str(tmp_path / "ask")}})
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    fleet.start(workers=2, extra=("--retention", "1s"))
    assert "submitted 8 workflows" in _cli(fleet.db, "submit", "--batch", str(batch)).stdout

    wait_for(lambda: running_step(fleet.db, "held", "hold#1"), 90, "held blocked in its hold step")
    wait_for(lambda: (workflow_row(fleet.db, "ask") or {}).get("status") == "WAITING", 90, "ask WAITING")
    wait_for(lambda: not _present(fleet.db, quick), 90, "the finished workflows swept by the supervisor")
    assert all(ledger_count(ledger, wid, "s1#1") == 1 for wid in quick)  # they did finish first
    held_steps, ask_steps = step_rows(fleet.db, "held"), step_rows(fleet.db, "ask")
    assert set(held_steps) >= {"prep#1", "hold#1"} and ask_steps
    _cli(fleet.db, "gc", "--older-than", "1s")  # by hand too, beside the fleet
    assert workflow_row(fleet.db, "held")["status"] == "RUNNING" and (lease_row(fleet.db, "held") or {}).get("worker_id")
    assert set(step_rows(fleet.db, "held")) >= set(held_steps) and step_rows(fleet.db, "ask").keys() == ask_steps.keys()
    assert workflow_row(fleet.db, "ask")["status"] == "WAITING" and _orphans(fleet.db) == 0

    release.write_text("go")
    _cli(fleet.db, "send", "ask", "approval", "--payload", '{"ok": true}')
    wait_for(lambda: ledger_count(ledger, "held", "finish#1") == 1, 90, "held to run its last step")
    wait_for(lambda: not _present(fleet.db, ["held", "ask"]), 90, "held and ask swept once finished")
    assert _orphans(fleet.db) == 0
    assert ledger_count(ledger, "held", "hold#1", "enter") == 1  # its blocked step ran once: nothing was taken from it
