"""The supervisor and its worker fleet under real faults: kill -9, SIGSTOP/SIGCONT, poison, SIGTERM.

Real processes (``durable-supervisor`` and its ``python -m durable_workers worker`` children),
real signals (psutil), a real database per test: every test runs twice, on a SQLite file and
on a fresh PostgreSQL database (``on_both_backends``). Tests wait on database rows, files and
process exit with bounded polling; they never sleep to synchronise and never assert timings.
Workflows: tests/apps/fleet_flows.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.apps.fleet_flows import read_ledger
from tests.conftest import run_cli
from tests.integration.fleet_support import (
    APP,
    DbTarget,
    cli_cwd,
    fleet,  # noqa: F401  (fixture)
    gone,
    lease_row,
    ledger_count,
    ledger_pids,
    on_both_backends,
    query,
    running_step,
    step_rows,
    submit,
    submit_many,
    suspend_outside_write,
    wait_for,
    wait_status,
    worker_row,
    workflow_row,
)

pytestmark = [pytest.mark.integration, on_both_backends]


@pytest.fixture
def db(fleet) -> DbTarget:  # noqa: F811
    """The fleet's database: a SQLite path or a PostgreSQL URL."""
    return fleet.db


def hold_input(tmp_path: Path, name: str = "release") -> tuple[dict[str, str], Path, Path]:
    ledger, release = tmp_path / "ledger.txt", tmp_path / name
    return {"ledger": str(ledger), "release": str(release)}, ledger, release


def wait_holding(db: DbTarget, ledger: Path, workflow_id: str, attempts: int = 1, timeout: float = 60) -> dict:
    """Wait until attempt ``attempts`` of step hold#1 is inside the step function; return its row."""

    def inside() -> dict | None:
        row = running_step(db, workflow_id, "hold#1", attempts)
        if row is None or len(ledger_pids(ledger, workflow_id, "hold#1", "enter")) < attempts:
            return None
        return row

    return wait_for(inside, timeout, f"{workflow_id} to be inside hold#1 (attempt {attempts})")


@pytest.mark.timeout(240)
def test_kill9_worker_mid_step_resumes_on_another_worker(fleet, tmp_path, db):
    """kill -9 of the worker inside a step: another worker finishes; only that step re-runs."""
    sup = fleet.start(workers=2)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-kill", values)
    holding = wait_holding(db, ledger, "wf-kill")

    shown = run_cli("workers", "--json", db=db, app=APP, cwd=cli_cwd(db))
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    holders = [w for w in listed if "wf-kill" in w["workflows"]]
    assert len(holders) == 1, listed
    victim = holders[0]
    assert victim["id"] == holding["worker_id"]
    assert victim["pid"] in sup.worker_pids()
    assert ledger_pids(ledger, "wf-kill", "hold#1", "enter") == [victim["pid"]]

    psutil.Process(victim["pid"]).kill()

    retried = wait_holding(db, ledger, "wf-kill", attempts=2)
    assert retried["worker_id"] != victim["id"]
    release.touch()
    wait_status(db, ["wf-kill"], "COMPLETED", timeout=60)

    # Completed steps did not run again; the interrupted one ran twice, in two processes.
    assert ledger_count(ledger, "wf-kill", "prep#1") == 1
    enters = ledger_pids(ledger, "wf-kill", "hold#1", "enter")
    assert len(enters) == 2 and enters[0] == victim["pid"] and enters[1] != victim["pid"]
    assert ledger_pids(ledger, "wf-kill", "hold#1", "exit") == [enters[1]]
    assert ledger_count(ledger, "wf-kill", "finish#1") == 1
    steps = step_rows(db, "wf-kill")
    assert {k: (s["status"], s["attempts"]) for k, s in steps.items()} == {
        "prep#1": ("COMPLETED", 1),
        "hold#1": ("COMPLETED", 2),
        "finish#1": ("COMPLETED", 1),
    }
    assert steps["prep#1"]["worker_id"] == victim["id"]
    assert steps["hold#1"]["worker_id"] == retried["worker_id"]
    record = workflow_row(db, "wf-kill")
    assert record["attempts"] == 2
    assert json.loads(record["result"])["hold"] == enters[1]

    # The supervisor saw the death, reclaimed the workflow and respawned the slot.
    log = sup.wait_log(f"reclaimed workflow wf-kill from worker {victim['id']} (pid {victim['pid']})")
    assert f"worker pid={victim['pid']}" in log and "died (signal 9 (SIGKILL))" in log
    respawned = wait_for(
        lambda: len(sup.live_workers()) == 2 and sup.live_workers(), 60, "the killed worker's slot to be respawned"
    )
    assert victim["pid"] not in {w["pid"] for w in respawned}
    assert worker_row(db, victim["id"])["state"] == "dead"
    shown = run_cli("workers", "--json", db=db, app=APP, cwd=cli_cwd(db))
    assert victim["pid"] not in {w["pid"] for w in json.loads(shown.stdout)}


@pytest.mark.timeout(300)
def test_kill9_supervisor_leaves_no_orphans_and_restart_finishes(fleet, tmp_path, db):
    """kill -9 of the supervisor: every worker drains and exits; a new supervisor finishes everything."""
    sup = fleet.start(workers=3)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-hold", values)
    wait_holding(db, ledger, "wf-hold")
    quick = [f"wf-q{i:02d}" for i in range(20)]
    submit_many(db, "fleet_steps", {w: {"ledger": str(ledger), "n": 3} for w in quick})
    wait_for(
        lambda: query(db, "SELECT COUNT(*) AS n FROM workflows WHERE status = 'COMPLETED'")[0]["n"] >= 1,
        60,
        "a first quick workflow to complete",
    )

    workers = sup.worker_pids()
    assert len(workers) == 3
    holder_pid = worker_row(db, lease_row(db, "wf-hold")["worker_id"])["pid"]
    psutil.Process(sup.pid).kill()
    assert sup.wait_exit(30) == -signal.SIGKILL

    # Workers without a step in flight exit on their own; the one inside hold#1 finishes that
    # step first (graceful drain), then exits too. None is left behind.
    others = [pid for pid in workers if pid != holder_pid]
    wait_for(lambda: all(gone(pid) for pid in others), 60, f"workers {others} to exit after the supervisor died")
    release.touch()
    wait_for(lambda: all(gone(pid) for pid in workers), 60, f"workers {workers} to exit after the supervisor died")
    assert not any(psutil.pid_exists(pid) and not gone(pid) for pid in workers)
    assert query(db, "SELECT * FROM leases WHERE worker_id IS NOT NULL") == []
    assert query(db, "SELECT * FROM steps WHERE status = 'RUNNING'") == []
    assert workflow_row(db, "wf-hold")["status"] == "PENDING"

    again = fleet.start(workers=3)
    wait_status(db, ["wf-hold", *quick], "COMPLETED", timeout=180)
    executions = Counter((w, k) for w, k, _, note in read_ledger(ledger) if note in ("", "enter"))
    expected = {("wf-hold", key) for key in ("prep#1", "hold#1", "finish#1")}
    expected |= {(w, f"s{i}#1") for w in quick for i in range(3)}
    assert set(executions) == expected
    assert {key: n for key, n in executions.items() if n != 1} == {}, "a completed step ran again"
    again.terminate()
    assert again.wait_exit(90) == 0


@pytest.mark.timeout(240)
def test_sigstopped_worker_is_fenced_after_takeover(fleet, tmp_path, db):
    """SIGSTOP past the TTL: another worker takes over; after SIGCONT every write of the old one is rejected."""
    sup = fleet.start(workers=2, ttl=1.5)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-stop", values)
    first = wait_holding(db, ledger, "wf-stop")
    lease = lease_row(db, "wf-stop")
    stopped_id = first["worker_id"]
    assert lease["worker_id"] == stopped_id
    stopped = psutil.Process(worker_row(db, stopped_id)["pid"])

    suspend_outside_write(stopped, db)  # SIGSTOP
    stopped_at = time.time()
    try:
        new = wait_for(
            lambda: (row := lease_row(db, "wf-stop"))
            and row["worker_id"] not in (None, stopped_id)
            and row["token"] > lease["token"]
            and row,
            60,
            "another worker to take the expired lease",
        )
        retried = wait_holding(db, ledger, "wf-stop", attempts=2)
        assert retried["worker_id"] == new["worker_id"]
        release.touch()
        wait_status(db, ["wf-stop"], "COMPLETED", timeout=60)
        assert stopped.status() == psutil.STATUS_STOPPED
        before = (workflow_row(db, "wf-stop"), step_rows(db, "wf-stop"), lease_row(db, "wf-stop"))
    finally:
        stopped.resume()  # SIGCONT

    # The resumed worker finishes its step function, tries to record it, and is fenced off.
    sup.wait_log(f"worker[{stopped.pid}] INFO workflow lost workflow_id=wf-stop")
    assert ledger_pids(ledger, "wf-stop", "hold#1", "exit").count(stopped.pid) == 1
    after = (workflow_row(db, "wf-stop"), step_rows(db, "wf-stop"), lease_row(db, "wf-stop"))
    assert after == before, "the fenced worker changed the database"

    record, steps, _ = after
    new_pid = worker_row(db, new["worker_id"])["pid"]
    assert json.loads(record["result"]) == {
        "prep": stopped.pid,  # recorded before the stop, replayed by the new owner
        "hold": new_pid,
        "finish": new_pid,
    }
    assert steps["hold#1"]["worker_id"] == new["worker_id"] and steps["hold#1"]["attempts"] == 2
    assert steps["finish#1"]["worker_id"] == new["worker_id"]
    for row in steps.values():
        if row["worker_id"] == stopped_id:
            assert row["started_at"] < stopped_at and row["finished_at"] < stopped_at, row
    assert ledger_pids(ledger, "wf-stop", "finish#1") == [new_pid]
    # The resumed worker is healthy and keeps serving.
    assert not gone(stopped.pid)
    submit(db, "fleet_steps", "wf-after", {"ledger": str(ledger), "n": 1})
    wait_status(db, ["wf-after"], "COMPLETED", timeout=60)


@pytest.mark.timeout(360)
def test_poison_step_fails_its_workflow_while_others_complete(fleet, tmp_path, db):
    """A step that SIGKILLs its worker fails its workflow after 3 starts; 50 others complete."""
    sup = fleet.start(workers=2)
    ledger = tmp_path / "ledger.txt"
    submit(db, "fleet_poison", "wf-poison", {"ledger": str(ledger)})
    others = [f"wf-ok{i:02d}" for i in range(50)]
    submit_many(db, "fleet_steps", {w: {"ledger": str(ledger), "n": 2} for w in others})

    wait_status(db, ["wf-poison"], "FAILED", timeout=240)
    wait_status(db, others, "COMPLETED", timeout=240)
    record = workflow_row(db, "wf-poison")
    assert "crashed the worker 3 times" in record["error"]
    steps = step_rows(db, "wf-poison")
    assert steps["poison#1"]["status"] == "FAILED" and steps["poison#1"]["attempts"] == 3
    assert steps["before#1"]["status"] == "COMPLETED" and steps["before#1"]["attempts"] == 1
    killed = ledger_pids(ledger, "wf-poison", "poison#1")
    assert len(killed) == 3 and len(set(killed)) == 3
    assert ledger_count(ledger, "wf-poison", "before#1") == 1
    assert all(gone(pid) for pid in killed)
    assert sup.log().count("died (signal 9 (SIGKILL))") == 3
    shown = run_cli("status", "wf-poison", db=db, app=APP, cwd=cli_cwd(db))
    assert shown.returncode == 0 and "crashed the worker 3 times" in shown.stdout
    # The fleet is whole again and was never stopped by the poison pill.
    wait_for(lambda: len(sup.live_workers()) == 2, 60, "both slots to be filled again")
    assert sup.popen.poll() is None


@pytest.mark.timeout(240)
def test_sigterm_drains_and_restart_finishes(fleet, tmp_path, db):
    """SIGTERM: the current step finishes, the workflow goes back to PENDING, everything exits 0."""
    sup = fleet.start(workers=2)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-drain", values)
    holding = wait_holding(db, ledger, "wf-drain")
    holder = worker_row(db, holding["worker_id"])
    workers = sup.worker_pids()

    sup.terminate()
    wait_for(
        lambda: worker_row(db, holder["id"])["state"] == "draining", 60, "the holding worker to be draining"
    )
    release.touch()  # let the step in flight finish; the next step must not start
    assert sup.wait_exit(120) == 0
    wait_for(lambda: all(gone(pid) for pid in workers), 30, "every worker to exit")

    assert query(db, "SELECT * FROM steps WHERE status = 'RUNNING'") == []
    assert query(db, "SELECT * FROM leases WHERE worker_id IS NOT NULL") == []
    assert {r["state"] for r in query(db, "SELECT state FROM workers")} == {"stopped"}
    record = workflow_row(db, "wf-drain")
    assert record["status"] == "PENDING"
    steps = step_rows(db, "wf-drain")
    assert {k: s["status"] for k, s in steps.items()} == {"prep#1": "COMPLETED", "hold#1": "COMPLETED"}
    log = sup.log()
    assert f"worker[{holder['pid']}] INFO workflow released workflow_id=wf-drain" in log
    assert "forced stop" not in log and "supervisor stopped" in log

    again = fleet.start(workers=2)
    wait_status(db, ["wf-drain"], "COMPLETED", timeout=60)
    assert ledger_count(ledger, "wf-drain", "prep#1") == 1
    assert ledger_count(ledger, "wf-drain", "hold#1", "enter") == 1
    assert ledger_count(ledger, "wf-drain", "finish#1") == 1
    assert step_rows(db, "wf-drain")["finish#1"]["worker_id"] != holder["id"]
    again.terminate()
    assert again.wait_exit(90) == 0


@pytest.mark.timeout(240)
def test_restart_after_whole_fleet_killed_reaps_dead_workers_without_waiting_for_ttl(fleet, tmp_path, db):
    """Power cut: supervisor and workers all die at once. A new supervisor reaps the dead
    worker rows by PID and resumes their workflows at once, long before the 10-minute TTL."""
    sup = fleet.start(workers=2, ttl=600)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-power", values)
    holding = wait_holding(db, ledger, "wf-power")
    dead = worker_row(db, holding["worker_id"])

    tree = [psutil.Process(sup.pid), *(psutil.Process(pid) for pid in sup.worker_pids())]
    for proc in tree:  # freeze first, so nobody sees the others die and reacts
        proc.suspend()
    for proc in tree:
        proc.kill()
    sup.wait_exit(30)
    wait_for(lambda: all(gone(proc.pid) for proc in tree), 30, "the whole fleet to be dead")
    lease = lease_row(db, "wf-power")
    assert lease["worker_id"] == dead["id"] and lease["expires_at"] > time.time() + 60
    assert step_rows(db, "wf-power")["hold#1"]["status"] == "RUNNING"

    again = fleet.start(workers=2, ttl=600)
    retried = wait_holding(db, ledger, "wf-power", attempts=2, timeout=90)
    assert retried["worker_id"] != dead["id"]
    release.touch()
    wait_status(db, ["wf-power"], "COMPLETED", timeout=60)
    log = again.wait_log(f"reaped dead worker {dead['id']} (pid {dead['pid']})")
    assert f"reclaimed workflow wf-power from worker {dead['id']}" in log
    assert worker_row(db, dead["id"])["state"] == "dead"
    assert ledger_count(ledger, "wf-power", "prep#1") == 1
    assert ledger_count(ledger, "wf-power", "finish#1") == 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize("force", ["second-sigterm", "shutdown-timeout"])
def test_forced_stop_kills_the_fleet_and_restart_reruns_the_step(fleet, tmp_path, db, force):
    """A drain that does not end (step still blocked) is cut short by a second SIGTERM or by
    --shutdown-timeout: SIGKILL to the workers, exit 0, no orphan; the step re-runs later."""
    sup = fleet.start(workers=2, shutdown_timeout=2.0 if force == "shutdown-timeout" else 600.0)
    values, ledger, release = hold_input(tmp_path)
    submit(db, "fleet_hold", "wf-forced", values)
    holding = wait_holding(db, ledger, "wf-forced")
    holder = worker_row(db, holding["worker_id"])
    workers = sup.worker_pids()

    sup.terminate()
    wait_for(lambda: worker_row(db, holder["id"])["state"] == "draining", 60, "the holder to be draining")
    if force == "second-sigterm":
        sup.terminate()
    assert sup.wait_exit(120) == 0
    wait_for(lambda: all(gone(pid) for pid in workers), 30, "every worker to be gone")
    log = sup.log()
    assert "forced stop: SIGKILL" in log
    assert f"worker pid={holder['pid']}" in log and "died (signal 9 (SIGKILL))" in log
    lease = lease_row(db, "wf-forced")
    assert lease["worker_id"] == holder["id"] and lease["expires_at"] == 0  # reclaimable at once
    assert worker_row(db, holder["id"])["state"] == "dead"

    release.touch()
    fleet.start(workers=2)
    wait_status(db, ["wf-forced"], "COMPLETED", timeout=60)
    assert ledger_count(ledger, "wf-forced", "hold#1", "enter") == 2
    assert step_rows(db, "wf-forced")["hold#1"]["attempts"] == 2
    assert ledger_count(ledger, "wf-forced", "prep#1") == 1
