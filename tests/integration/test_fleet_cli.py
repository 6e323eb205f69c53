"""The command line against a running supervisor: durable-submit --crash-at --wait, status,
workers, cancel, retry, idempotent submit, and workflows no worker can run. Every test runs on
a SQLite file and on a PostgreSQL database (``on_both_backends``).
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import (
    APP,
    cli_cwd,
    fleet,  # noqa: F401  (fixture)
    ledger_count,
    ledger_pids,
    on_both_backends,
    run_submit_script,
    running_step,
    step_rows,
    submit,
    wait_for,
    wait_status,
    worker_row,
    workflow_row,
)

pytestmark = pytest.mark.integration


def cli(db, *args: str, ok: bool = True):
    done = run_cli(*args, db=db, app=APP, cwd=cli_cwd(db))
    if ok:
        assert done.returncode == 0, f"durable {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def cli_json(db, *args: str):
    return json.loads(cli(db, *args, "--json").stdout)


@pytest.mark.timeout(240)
@on_both_backends
def test_submit_crash_at_after_wait_recovers_on_another_worker(fleet, tmp_path):
    db = fleet.db
    sup = fleet.start(workers=2)
    ledger = tmp_path / "ledger.txt"
    done = run_submit_script(
        "fleet_steps", "wf-crash",
        "--input", json.dumps({"ledger": str(ledger), "n": 3}),
        "--crash-at", "s1:after",
        "--wait",
        db=db, timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "submitted fleet_steps wf-crash" in out
    for key in ("s0#1", "s1#1", "s2#1"):
        assert key in out
    assert "wf-crash COMPLETED" in out

    shown = cli_json(db, "status", "wf-crash")
    assert shown["status"] == "COMPLETED" and shown["attempts"] == 2
    steps = {s["step_key"]: s for s in shown["steps"]}
    assert [(k, steps[k]["status"], steps[k]["attempts"]) for k in ("s0#1", "s1#1", "s2#1")] == [
        ("s0#1", "COMPLETED", 1),
        ("s1#1", "COMPLETED", 1),
        ("s2#1", "COMPLETED", 1),
    ]
    crashed = steps["s1#1"]["worker_id"]
    assert steps["s0#1"]["worker_id"] == crashed
    assert steps["s2#1"]["worker_id"] != crashed
    assert worker_row(db, crashed)["state"] == "dead"
    # Completed before the crash: not run again after it.
    assert [ledger_count(ledger, "wf-crash", k) for k in ("s0#1", "s1#1", "s2#1")] == [1, 1, 1]
    sup.wait_log(f"reclaimed workflow wf-crash from worker {crashed}")


@pytest.mark.timeout(240)
@on_both_backends
def test_status_workers_cancel_and_retry_a_cancelled_workflow(fleet, tmp_path):
    db = fleet.db
    sup = fleet.start(workers=2)
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    submit(db, "fleet_hold", "wf-cancel", {"ledger": str(ledger), "release": str(release)})
    holding = wait_for(
        lambda: running_step(db, "wf-cancel", "hold#1") and ledger_pids(ledger, "wf-cancel", "hold#1", "enter")
        and running_step(db, "wf-cancel", "hold#1"),
        60,
        "wf-cancel to be inside hold#1",
    )
    holder = holding["worker_id"]

    listed = cli_json(db, "workers")
    assert sorted(w["pid"] for w in listed) == sorted(sup.worker_pids())
    assert all(w["alive"] and w["state"] == "running" for w in listed)
    assert {w["id"]: w["workflows"] for w in listed}[holder] == ["wf-cancel"]

    shown = cli_json(db, "status", "wf-cancel")
    assert shown["status"] == "RUNNING" and shown["lease"]["worker_id"] == holder
    assert {s["step_key"]: s["status"] for s in shown["steps"]} == {"prep#1": "COMPLETED", "hold#1": "RUNNING"}
    overview = cli_json(db, "status")
    assert overview["counts"]["RUNNING"] == 1
    assert "wf-cancel" in cli(db, "status").stdout

    done = cli(db, "cancel", "wf-cancel")
    assert "wf-cancel CANCELLED" in done.stdout
    assert workflow_row(db, "wf-cancel")["status"] == "CANCELLED"
    release.touch()  # the holder finishes its step function and is fenced off at its next write
    holder_pid = worker_row(db, holder)["pid"]
    sup.wait_log(f"worker[{holder_pid}] INFO workflow lost workflow_id=wf-cancel")
    assert workflow_row(db, "wf-cancel")["status"] == "CANCELLED"
    assert step_rows(db, "wf-cancel")["hold#1"]["status"] == "RUNNING"  # its result was not recorded
    assert ledger_count(ledger, "wf-cancel", "finish#1") == 0

    again = cli(db, "cancel", "wf-cancel", ok=False)
    assert again.returncode != 0 and "already CANCELLED" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    done = cli(db, "retry", "wf-cancel")
    assert "wf-cancel PENDING" in done.stdout
    wait_status(db, ["wf-cancel"], "COMPLETED", timeout=60)
    assert ledger_count(ledger, "wf-cancel", "prep#1") == 1  # kept
    assert ledger_count(ledger, "wf-cancel", "hold#1", "enter") == 2  # its result was never recorded
    assert ledger_count(ledger, "wf-cancel", "finish#1") == 1
    assert cli_json(db, "status", "wf-cancel")["status"] == "COMPLETED"


@pytest.mark.timeout(240)
@on_both_backends
def test_retry_of_failed_workflow_keeps_completed_steps(fleet, tmp_path):
    db = fleet.db
    fleet.start(workers=2)
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "failed-once"
    submit(db, "fleet_flaky", "wf-flaky", {"ledger": str(ledger), "marker": str(marker)})
    wait_status(db, ["wf-flaky"], "FAILED", timeout=60)
    shown = cli_json(db, "status", "wf-flaky")
    assert "fleet_flaky fails on its first run" in shown["error"]
    assert {s["step_key"]: s["status"] for s in shown["steps"]} == {"prep#1": "COMPLETED", "flaky#1": "FAILED"}
    assert "fleet_flaky fails on its first run" in cli(db, "status", "wf-flaky").stdout

    done = cli(db, "retry", "wf-flaky")
    assert "wf-flaky PENDING" in done.stdout
    wait_status(db, ["wf-flaky"], "COMPLETED", timeout=60)
    assert ledger_count(ledger, "wf-flaky", "prep#1") == 1
    assert ledger_count(ledger, "wf-flaky", "flaky#1") == 2
    assert ledger_count(ledger, "wf-flaky", "finish#1") == 1
    steps = step_rows(db, "wf-flaky")
    assert {k: (s["status"], s["attempts"]) for k, s in steps.items()} == {
        "prep#1": ("COMPLETED", 1),
        "flaky#1": ("COMPLETED", 1),
        "finish#1": ("COMPLETED", 1),
    }

    retried = cli(db, "retry", "wf-flaky", ok=False)
    assert retried.returncode != 0 and "only FAILED or CANCELLED" in retried.stderr
    assert len(retried.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(240)
@on_both_backends
def test_submit_existing_id_is_idempotent_and_a_different_input_is_an_error(fleet, tmp_path):
    db = fleet.db
    fleet.start(workers=2)
    values = json.dumps({"ledger": str(tmp_path / "ledger.txt"), "n": 2})
    first = run_submit_script("fleet_steps", "wf-dup", "--input", values, "--wait", db=db)
    assert first.returncode == 0, first.stderr
    assert "wf-dup COMPLETED" in first.stdout

    same = run_submit_script("fleet_steps", "wf-dup", "--input", values, db=db)
    assert same.returncode == 0, same.stderr
    assert "submitted fleet_steps wf-dup (COMPLETED)" in same.stdout
    waited = run_submit_script("fleet_steps", "wf-dup", "--input", values, "--wait", db=db)
    assert waited.returncode == 0 and "wf-dup COMPLETED" in waited.stdout

    other = json.dumps({"ledger": str(tmp_path / "ledger.txt"), "n": 5})
    clash = run_submit_script("fleet_steps", "wf-dup", "--input", other, db=db)
    assert clash.returncode != 0
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 1 and "wf-dup already exists" in lines[0], clash.stderr
    assert "Traceback" not in clash.stderr + clash.stdout
    assert ledger_count(tmp_path / "ledger.txt", "wf-dup", "s0#1") == 1
    assert json.loads(workflow_row(db, "wf-dup")["input"])["n"] == 2


@pytest.mark.timeout(240)
@on_both_backends
def test_workflow_no_worker_registers_stays_pending_and_status_says_so(fleet, tmp_path):
    db = fleet.db
    fleet.start(workers=2)
    # A newer app on the submitting side: it knows a workflow the running workers do not.
    other_app = tmp_path / "newer_app" / "fleet_newer_app.py"
    other_app.parent.mkdir()
    other_app.write_text(textwrap.dedent(
        """
        from durable_workers import workflow

        @workflow
        def fleet_unserved(ctx):
            return ctx.step("only", lambda: 1)
        """
    ))
    done = run_cli("submit", "fleet_unserved", "wf-nobody", db=db, app=other_app, cwd=cli_cwd(db))
    assert done.returncode == 0, done.stderr

    # A later workflow the fleet does serve completes: the workers have polled past wf-nobody.
    submit(db, "fleet_steps", "wf-served", {"ledger": str(tmp_path / "ledger.txt"), "n": 1})
    wait_status(db, ["wf-served"], "COMPLETED", timeout=60)
    record = workflow_row(db, "wf-nobody")
    assert record["status"] == "PENDING" and record["attempts"] == 0

    assert "no live worker registers 'fleet_unserved'" in cli(db, "status").stdout
    assert "no live worker registers 'fleet_unserved'" in cli(db, "status", "wf-nobody").stdout
    assert cli_json(db, "status")["unserved_names"] == ["fleet_unserved"]
    assert cli_json(db, "status", "wf-nobody")["status"] == "PENDING"
