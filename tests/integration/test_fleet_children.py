"""Child workflows and deadlines through a real fleet, on SQLite and PostgreSQL (``on_both_backends``).

A parent waiting on its children holds no lease while they run on other workers; a
worker SIGKILLed at each boundary of a child (its start recorded or not, its result
recorded or not) loses nothing and starts no second child; cancelling a parent cancels
its running children (their worker is fenced out); a deadline ends a workflow and its
children CANCELLED. Gate files hold a child inside its step; tests wait on database rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apps.core_flows import calls_of
from tests.conftest import run_cli
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    APP,
    DbTarget,
    cli_cwd,
    fleet,
    on_both_backends,
    query,
    submit,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(240)]


def _rows(db: DbTarget) -> dict[str, dict]:
    return {r["id"]: r for r in query(db, "SELECT id, status, parent_id, error FROM workflows")}


def _children(db: DbTarget, parent: str) -> list[dict]:
    return [r for r in _rows(db).values() if r["parent_id"] == parent]


def _held_leases(db: DbTarget) -> set[str]:
    return {r["workflow_id"] for r in query(db, "SELECT workflow_id FROM leases WHERE worker_id IS NOT NULL")}


def _cli(db: DbTarget, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, db=db, app=APP, cwd=cli_cwd(db))


def test_children_run_while_their_parent_waits_holding_no_slot(fleet, tmp_path: Path) -> None:
    fleet.start(workers=3)
    gate = tmp_path / "gate"
    gate.touch()
    calls = str(tmp_path / "calls")
    submit(fleet.db, "parent_flow", "p", {"calls": calls, "gate": str(gate), "fail": "badge"})

    def parked() -> bool:
        children = _children(fleet.db, "p")
        running = [c for c in children if c["status"] == "RUNNING"]
        return _rows(fleet.db)["p"]["status"] == "WAITING" and len(running) == 2 and "p" not in _held_leases(fleet.db)

    wait_for(parked, 90, "the parent WAITING without a lease while both children run")
    gate.unlink()
    wait_status(fleet.db, ["p"], "COMPLETED", 90)
    result = json.loads(query(fleet.db, "SELECT result FROM workflows WHERE id = 'p'")[0]["result"])
    assert result == {
        "p/child:child_device#1": {"device": "laptop", "status": "laptop-ok"},
        "p/child:child_device#2": "failed: FAILED",
    }
    assert sorted(calls_of(calls)) == ["parent-after", "parent-before", "provision-badge", "provision-laptop"]
    shown = _cli(fleet.db, "status", "p/child:child_device#1")
    assert shown.returncode == 0 and "parent: p" in shown.stdout
    family = _cli(fleet.db, "status", "p")
    assert "children (2):" in family.stdout and "p/child:child_device#2  child_device  FAILED" in family.stdout


#: Crash points around a child: its start (before and after it is recorded) and its result.
CRASH_POINTS = (
    "durable:child:child_device:before",
    "durable:child:child_device:after",
    "durable:child-result:before",
    "durable:child-result:after",
)


def test_a_worker_killed_at_each_child_boundary_loses_nothing_and_starts_one_child(fleet, tmp_path: Path) -> None:
    fleet.start(workers=2)
    ids = [f"crash-{i}" for i in range(len(CRASH_POINTS))]
    for workflow_id, point in zip(ids, CRASH_POINTS):
        submit(fleet.db, "call_flow", workflow_id, {"calls": str(tmp_path / workflow_id)}, "--crash-at", point)
    wait_status(fleet.db, ids, "COMPLETED", 150)
    for workflow_id, point in zip(ids, CRASH_POINTS):
        assert [c["status"] for c in _children(fleet.db, workflow_id)] == ["COMPLETED"], point
        assert calls_of(tmp_path / workflow_id) == ["provision-phone"], point
        attempts = query(fleet.db, f"SELECT attempts FROM workflows WHERE id = '{workflow_id}'")[0]["attempts"]
        assert attempts >= 2, f"{point}: the crash did not happen"
        result = query(fleet.db, f"SELECT result FROM workflows WHERE id = '{workflow_id}'")[0]["result"]
        assert json.loads(result) == {"device": "phone", "status": "phone-ok"}


def test_cancelling_a_parent_cancels_its_running_children(fleet, tmp_path: Path) -> None:
    fleet.start(workers=3)
    gate = tmp_path / "gate"
    gate.touch()
    calls = str(tmp_path / "calls")
    submit(fleet.db, "nested_flow", "top", {"calls": calls, "gate": str(gate)})
    def grandchildren_running() -> bool:
        rows = _rows(fleet.db).values()
        return sum(r["status"] == "RUNNING" and r["parent_id"] not in (None, "top") for r in rows) == 2

    wait_for(grandchildren_running, 90, "both grandchildren running")
    done = _cli(fleet.db, "cancel", "top")
    assert done.returncode == 0, done.stderr
    gate.unlink()  # the grandchildren's steps finish, but their worker is fenced out
    wait_for(lambda: not _held_leases(fleet.db), 60, "every lease released")
    rows = _rows(fleet.db)
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"CANCELLED"}
    assert rows["top"]["error"] == "cancelled"
    assert all("cancelled (parent " in (r["error"] or "") for i, r in rows.items() if i != "top")
    assert "parent-after" not in calls_of(calls)


def test_deadlines_end_workflows_and_their_children_cancelled(fleet, tmp_path: Path) -> None:
    fleet.start(workers=3)
    gate = tmp_path / "gate"
    gate.touch()
    submit(fleet.db, "deadline_flow", "sleeper", {"calls": str(tmp_path / "sleeper")})
    submit(fleet.db, "deadline_parent_flow", "family", {"calls": str(tmp_path / "family"), "gate": str(gate)},
           "--timeout", "2")  # fmt: skip
    submit(fleet.db, "child_timeout_flow", "impatient", {"calls": str(tmp_path / "impatient"), "gate": str(gate), "wait_s": 1})
    wait_status(fleet.db, ["sleeper", "family"], "CANCELLED", 90)
    wait_status(fleet.db, ["impatient"], "COMPLETED", 90)
    rows = _rows(fleet.db)
    assert rows["sleeper"]["error"] == rows["family"]["error"] == "deadline exceeded"
    assert calls_of(tmp_path / "sleeper") == ["before"]
    (child,) = _children(fleet.db, "family")
    assert child["status"] == "CANCELLED" and child["error"] == "cancelled: deadline exceeded (parent family)"
    assert json.loads(query(fleet.db, "SELECT result FROM workflows WHERE id = 'impatient'")[0]["result"]) == "gave up"
    (slow,) = _children(fleet.db, "impatient")
    assert slow["status"] == "RUNNING"  # a child waited for in vain goes on running
    gate.unlink()
    wait_status(fleet.db, [slow["id"]], "COMPLETED", 60)
