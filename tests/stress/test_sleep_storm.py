"""A sleep storm: 1,000 workflows each sleeping 1–3 s on a fleet of 4 workers, on both backends.

``sleep_flow`` (tests/apps/primitive_flows.py) records ``before``, sleeps, records ``after``.
The test samples the database throughout the storm (one query per sample, so one snapshot):
no WAITING workflow ever holds a lease; no worker holds more leases than its slots; and it
waits for a sample in which every unfinished workflow is WAITING and no worker holds any
lease (the fleet's running count is 0 while they sleep). Then every workflow COMPLETED with
each step run once and its sleep recorded once. Counts only, no timings.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.apps.core_flows import calls_of
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    fleet,
    on_both_backends,
    query,
    submit_many,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.stress, pytest.mark.integration, on_both_backends, pytest.mark.timeout(420)]

COUNT = 1000
WORKERS = 4
SEED = 10

SAMPLE = """SELECT w.status AS status, l.worker_id AS holder, count(*) AS n
    FROM workflows w LEFT JOIN leases l ON l.workflow_id = w.id AND l.worker_id IS NOT NULL
    GROUP BY w.status, l.worker_id"""


class Storm:
    """What the samples of the storm saw."""

    def __init__(self, db) -> None:  # type: ignore[no-untyped-def]
        self.db = db
        self.all_asleep = 0  # samples with every unfinished workflow WAITING and no lease held
        self.most_waiting = 0

    def sample(self) -> bool:
        """One snapshot; assert the invariants; True once every workflow COMPLETED."""
        by_status: dict[str, int] = {}
        per_worker: dict[str, int] = {}
        for row in query(self.db, SAMPLE):
            by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
            if row["holder"] is not None:
                assert row["status"] != "WAITING", f"{row['n']} WAITING workflow(s) hold a lease of {row['holder']}"
                per_worker[row["holder"]] = per_worker.get(row["holder"], 0) + row["n"]
        assert all(n <= 1 for n in per_worker.values()), per_worker  # one slot per worker (--concurrency 1)
        waiting, done = by_status.get("WAITING", 0), by_status.get("COMPLETED", 0)
        self.most_waiting = max(self.most_waiting, waiting)
        if waiting and waiting + done == COUNT and not per_worker:
            self.all_asleep += 1
        assert set(by_status) <= {"PENDING", "RUNNING", "WAITING", "COMPLETED"}, by_status
        return done == COUNT


def test_a_storm_of_1000_sleepers_holds_no_slot_while_asleep_and_all_wake(fleet, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    fleet.start(workers=WORKERS)
    calls = tmp_path / "calls"
    calls.mkdir()
    ids = [f"storm-{i}" for i in range(COUNT)]
    submit_many(fleet.db, "sleep_flow", {i: {"calls": str(calls / i), "seconds": rng.uniform(1, 3)} for i in ids})
    storm = Storm(fleet.db)
    wait_for(storm.sample, 360, "every workflow of the storm to complete", interval=0.01)
    wait_status(fleet.db, ids, "COMPLETED", 10)
    assert storm.all_asleep > 0, f"no sample saw every unfinished workflow asleep (at most {storm.most_waiting} waiting)"
    for workflow_id in ids:
        assert calls_of(calls / workflow_id) == ["before", "after"], workflow_id
    sleeps = query(fleet.db, "SELECT count(*) AS n FROM steps WHERE step_key = 'durable:sleep#1' AND status = 'COMPLETED'")
    assert sleeps[0]["n"] == COUNT
