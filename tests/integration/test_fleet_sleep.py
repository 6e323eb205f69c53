"""Durable sleep through a real fleet, on SQLite and PostgreSQL (``on_both_backends``).

Workflows (tests/apps/primitive_flows.py ``sleep_flow``) record a step, sleep, record
another. While they all sleep no worker holds a lease; when due any worker resumes them
(a worker SIGKILLed between recording the wake time and suspending included),
each step having run once; a fleet restarted meanwhile still wakes them. Tests wait on
database rows with bounded polling and assert no timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.core_flows import calls_of
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    DbTarget,
    fleet,
    on_both_backends,
    query,
    submit,
    submit_many,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(180)]

COUNT = 4
SLEEP_S = 2.0


def _statuses(db: DbTarget, ids: list[str]) -> list[str]:
    rows = {r["id"]: r["status"] for r in query(db, "SELECT id, status FROM workflows")}
    return [rows.get(i, "") for i in ids]


def _submit(fleet, tmp_path: Path) -> list[str]:
    ids = [f"sleeper-{i}" for i in range(COUNT)]
    submit_many(fleet.db, "sleep_flow", {i: {"calls": str(tmp_path / i), "seconds": SLEEP_S} for i in ids})
    return ids


def _all_waiting_and_no_lease_held(db: DbTarget, ids: list[str]) -> bool:
    if _statuses(db, ids) != ["WAITING"] * len(ids):
        return False
    held = query(db, "SELECT count(*) AS n FROM leases WHERE worker_id IS NOT NULL")[0]["n"]
    assert held == 0, "a sleeping workflow still holds a lease"
    return True


def _each_step_ran_once(tmp_path: Path, ids: list[str]) -> None:
    for workflow_id in ids:
        assert calls_of(tmp_path / workflow_id) == ["before", "after"], workflow_id


def test_sleeping_workflows_free_their_workers_and_all_wake(fleet, tmp_path: Path) -> None:
    fleet.start(workers=2)
    ids = _submit(fleet, tmp_path)
    wait_for(lambda: _all_waiting_and_no_lease_held(fleet.db, ids), 60, "every workflow WAITING, no lease held")
    wait_status(fleet.db, ids, "COMPLETED", 60)
    _each_step_ran_once(tmp_path, ids)
    rows = query(fleet.db, "SELECT step_key FROM steps WHERE step_key LIKE 'durable:sleep%'")
    assert len(rows) == COUNT


def test_a_fleet_restarted_while_workflows_sleep_still_wakes_them(fleet, tmp_path: Path) -> None:
    first = fleet.start(workers=2)
    ids = _submit(fleet, tmp_path)
    wait_for(lambda: _all_waiting_and_no_lease_held(fleet.db, ids), 60, "every workflow WAITING, no lease held")
    first.terminate()
    assert first.wait_exit() == 0
    assert _statuses(fleet.db, ids) == ["WAITING"] * COUNT
    fleet.start(workers=2)
    wait_status(fleet.db, ids, "COMPLETED", 60)
    _each_step_ran_once(tmp_path, ids)


def test_a_worker_killed_between_recording_the_sleep_and_suspending_loses_nothing(fleet, tmp_path: Path) -> None:
    """SIGKILL right after the wake time is committed, before the suspend: the next worker resumes it."""
    fleet.start(workers=2)
    values = {"calls": str(tmp_path / "crashed"), "seconds": SLEEP_S}
    submit(fleet.db, "sleep_flow", "crashed", values, "--crash-at", "durable:sleep:after")
    wait_status(fleet.db, ["crashed"], "COMPLETED", 90)
    assert calls_of(tmp_path / "crashed") == ["before", "after"]
    row = query(fleet.db, "SELECT attempts FROM workflows WHERE id = 'crashed'")[0]
    assert row["attempts"] >= 2  # the killed attempt counted; the sleep step was replayed, not re-recorded
    assert len(query(fleet.db, "SELECT step_key FROM steps WHERE workflow_id = 'crashed' AND step_key LIKE 'durable:%'")) == 1
