"""Two "hosts" on one database: supervisors started with distinct ``--host-id`` form one fleet.

A whole-host kill (supervisor and workers SIGKILLed at once, mid-step) leaves nobody on that host
to reap its workers: the other host resumes its work when the leases expire by TTL on the
database clock. A live host's workers are never reaped by another host's supervisor, whatever
the two supervisors' TTLs. Both backends (``@on_both_backends``); everything synchronises on
database rows.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import (
    APP,
    Fleet,
    Supervisor,
    cli_cwd,
    fleet,  # noqa: F401  (fixture)
    ledger_count,
    on_both_backends,
    query,
    step_rows,
    submit_many,
    wait_for,
    wait_status,
    workflow_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), on_both_backends]


def hold_items(tmp_path: Path, prefix: str, n: int) -> dict[str, dict[str, Any]]:
    """``n`` fleet_hold workflows sharing the test's ledger and release file."""
    values = {"ledger": str(tmp_path / "ledger"), "release": str(tmp_path / "release")}
    return {f"{prefix}{i}": dict(values) for i in range(n)}


def holders(fleet: Fleet, workflow_ids: list[str]) -> dict[str, dict[str, Any]]:  # noqa: F811
    """The lease of each workflow joined with its holder's worker row (workflow id -> row)."""
    rows = query(
        fleet.db,
        "SELECT l.workflow_id, l.worker_id, l.token, w.host_id, w.state FROM leases l "
        "JOIN workers w ON w.id = l.worker_id",
    )
    return {r["workflow_id"]: r for r in rows if r["workflow_id"] in workflow_ids}


def wait_held_mid_step(fleet: Fleet, workflow_ids: list[str], host_id: str) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Wait until every workflow is RUNNING its ``hold`` step under a lease of ``host_id``."""

    def held() -> dict[str, dict[str, Any]] | None:
        leases = holders(fleet, workflow_ids)
        running = {
            wid for wid in workflow_ids if step_rows(fleet.db, wid).get("hold#1", {}).get("status") == "RUNNING"
        }
        ok = all(wid in leases and leases[wid]["host_id"] == host_id for wid in workflow_ids)
        return leases if ok and running == set(workflow_ids) else None

    return wait_for(held, 60, f"{workflow_ids} to be held mid-step by host {host_id}")


def kill_host(supervisor: Supervisor) -> list[int]:
    """SIGKILL a supervisor and all its workers at once (a host that dies entirely)."""
    pids = [supervisor.pid, *supervisor.worker_pids()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            pass
    supervisor.wait_exit(30)
    return pids


def test_a_dead_host_s_work_resumes_on_the_other_host(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    ttl = 1.0
    host_a = fleet.start(workers=2, ttl=ttl, host_id="host-a")
    on_a = hold_items(tmp_path, "a", 2)
    submit_many(fleet.db, "fleet_hold", on_a)
    wait_held_mid_step(fleet, list(on_a), "host-a")
    fleet.start(workers=2, ttl=ttl, host_id="host-b")
    on_b = hold_items(tmp_path, "b", 2)
    submit_many(fleet.db, "fleet_hold", on_b)
    wait_held_mid_step(fleet, list(on_b), "host-b")  # one fleet: both hosts claim work
    shown = run_cli("workers", db=fleet.db, app=APP, cwd=cli_cwd(fleet.db))
    assert shown.returncode == 0, shown.stderr
    assert {line.split()[0] for line in shown.stdout.splitlines()[1:]} == {"host-a", "host-b"}

    killed_at = time.monotonic()
    kill_host(host_a)
    (tmp_path / "release").touch()
    def taken_over() -> bool:
        leases = holders(fleet, list(on_a))
        return all(
            wid in leases and leases[wid]["host_id"] == "host-b" or workflow_status(fleet.db, wid) == "COMPLETED"
            for wid in on_a
        )

    wait_for(taken_over, ttl + 30, "host b to take over host a's workflows", interval=0.02)
    print(f"\nwhole-host kill: host-b took over host-a's work {time.monotonic() - killed_at:.2f}s after the kill (ttl {ttl}s)")

    everything = [*on_a, *on_b]
    wait_status(fleet.db, everything, "COMPLETED", timeout=60)
    ledger = tmp_path / "ledger"
    for wid in everything:
        steps = step_rows(fleet.db, wid)
        assert {k: s["status"] for k, s in steps.items()} == {"prep#1": "COMPLETED", "hold#1": "COMPLETED", "finish#1": "COMPLETED"}
        assert ledger_count(ledger, wid, "prep#1") == 1  # completed before the kill: never run again
        assert ledger_count(ledger, wid, "hold#1", "exit") == 1  # the result recorded once
        assert ledger_count(ledger, wid, "finish#1") == 1
    for wid in on_a:  # interrupted mid-step by the kill, run again on host b
        assert ledger_count(ledger, wid, "hold#1", "enter") == 2
    dead = query(fleet.db, "SELECT state FROM workers WHERE host_id = 'host-a'")
    wait_for(
        lambda: all(r["state"] == "dead" for r in query(fleet.db, "SELECT state FROM workers WHERE host_id = 'host-a'")),
        3 * ttl + 30,
        "host b's supervisor to mark host a's worker rows dead by TTL",
    )
    assert dead, "host a's worker rows exist"


def test_another_host_never_reaps_live_workers(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    # Host a heartbeats every 2 s (ttl 6); host b's own workers would count as dead after
    # 3 x 0.5 s. Host b must judge host a's rows by their own TTL, never by a local PID.
    slow_ttl, fast_ttl = 6.0, 0.5
    fleet.start(workers=2, ttl=slow_ttl, host_id="host-a")
    on_a = hold_items(tmp_path, "a", 2)
    submit_many(fleet.db, "fleet_hold", on_a)
    before = wait_held_mid_step(fleet, list(on_a), "host-a")
    host_b = fleet.start(workers=1, ttl=fast_ttl, host_id="host-b")

    def b_heartbeats_for(seconds: float) -> bool:
        rows = query(fleet.db, "SELECT started_at, heartbeat_at FROM workers WHERE host_id = 'host-b'")
        return any(r["heartbeat_at"] - r["started_at"] >= seconds for r in rows)

    wait_for(lambda: b_heartbeats_for(3 * slow_ttl / 3 + 2), 60, "host b to run through several of host a's heartbeats")
    after = holders(fleet, list(on_a))
    assert {wid: (r["worker_id"], r["token"], r["state"]) for wid, r in after.items()} == {
        wid: (r["worker_id"], r["token"], "running") for wid, r in before.items()
    }
    assert query(fleet.db, "SELECT count(*) AS n FROM workers WHERE host_id = 'host-a' AND state <> 'running'")[0]["n"] == 0
    assert "reaped dead worker" not in host_b.log()
    (tmp_path / "release").touch()
    wait_status(fleet.db, list(on_a), "COMPLETED", timeout=60)
    for wid in on_a:
        assert ledger_count(tmp_path / "ledger", wid, "hold#1", "enter") == 1  # never taken from host a
