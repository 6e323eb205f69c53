"""Step timeouts with real processes: the engine's timeout, the supervisor's kill, ``durable run``.

* A step that sleeps past its ``timeout`` fails that attempt with ``StepTimeoutError`` (the
  engine stops waiting for its helper thread), is retried per its policy, and then fails its
  workflow. The worker that saw the timeout (its step thread may still be running) drains,
  exits, and the supervisor replaces it; other workflows keep flowing.
* A step that freezes its whole worker (SIGSTOP) leaves no thread to act on the timeout: the
  supervisor kills the worker once the step is past its deadline plus the grace period, notes
  the timeout on the step row, and the step runs again on a fresh worker until
  ``max_attempts`` fails the workflow with that note as its last error.
* ``durable run`` (no supervisor): a step that times out once and succeeds on its retry
  completes the workflow with ``attempts`` 2 for that step.

Real supervisor and worker processes, a real database per test (the fleet tests run on SQLite
and PostgreSQL, ``on_both_backends``; ``durable run`` on SQLite); every wait polls database
rows, files or process state with a bound (``wait_for``); nothing asserts timings.
Workflows: tests/apps/timeout_flows.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import (
    APP,
    DbTarget,
    cli_cwd,
    fleet,  # noqa: F401  (fixture)
    gone,
    ledger_count,
    ledger_pids,
    on_both_backends,
    query,
    step_rows,
    submit,
    submit_many,
    wait_for,
    wait_status,
    workflow_row,
    workflow_status,
)

pytestmark = pytest.mark.integration


def workers_with_pids(db: DbTarget, pids: set[int]) -> list[dict]:
    marks = ",".join("?" * len(pids))
    return query(db, f"SELECT * FROM workers WHERE pid IN ({marks})", sorted(pids))


def wait_log_match(sup, pattern: str, timeout: float = 60) -> re.Match[str]:
    """Wait until a line of the supervisor's log (its workers log there too) matches ``pattern``."""
    return wait_for(
        lambda: re.search(pattern, sup.log(), re.MULTILINE), timeout, f"/{pattern}/ in the supervisor log"
    )


def wait_fleet_replaced(sup, old_pids: set[int], timeout: float = 90) -> list[dict]:
    """Wait until every slot has a live, registered worker and none of them is in ``old_pids``."""

    def replaced() -> list[dict] | None:
        live = sup.live_workers()
        if len(live) == sup.workers and not old_pids & {w["pid"] for w in live}:
            return live
        return None

    return wait_for(replaced, timeout, f"the fleet to be whole again without pids {sorted(old_pids)}")


@pytest.mark.integration
@on_both_backends
@pytest.mark.timeout(300)
def test_step_timeout_fails_attempt_retries_then_fails_workflow_and_worker_is_replaced(fleet, tmp_path):
    """timeout=1, retries=1, the step sleeps 30 s: 2 attempts, FAILED; its worker exits and is replaced."""
    db_path = fleet.db  # a SQLite path or a PostgreSQL URL
    sup = fleet.start(workers=2)
    initial_pids = {w["pid"] for w in sup.live_workers()}
    ledger = tmp_path / "ledger.txt"
    submit(db_path, "timeout_sleeper", "wf-nap", {"ledger": str(ledger), "timeout_s": 1, "retries": 1})
    others = [f"wf-ok{i:02d}" for i in range(20)]
    submit_many(db_path, "fleet_steps", {w: {"ledger": str(ledger), "n": 2} for w in others})

    wait_status(db_path, ["wf-nap"], "FAILED", timeout=180)
    wait_status(db_path, others, "COMPLETED", timeout=180)

    # The timeout is the workflow's error, and the step ran exactly retries + 1 times.
    record = workflow_row(db_path, "wf-nap")
    assert record["error"].startswith("StepTimeoutError: step nap#1 did not finish within 1s"), record["error"]
    steps = step_rows(db_path, "wf-nap")
    assert {k: (s["status"], s["attempts"]) for k, s in steps.items()} == {
        "before#1": ("COMPLETED", 1),
        "nap#1": ("FAILED", 2),
    }
    stored = json.loads(steps["nap#1"]["error"])
    assert stored["type"] == "durable_workers.errors.StepTimeoutError"
    assert "did not finish within 1s" in stored["message"]
    nappers = ledger_pids(ledger, "wf-nap", "nap#1", "enter")
    assert len(nappers) == 2, nappers
    # The retry never ran in the process whose timed-out execution may still be running.
    assert len(set(nappers)) == 2, nappers
    assert ledger_count(ledger, "wf-nap", "before#1") == 1
    assert ledger_count(ledger, "wf-nap", "after#1") == 0

    # Each worker that saw a timeout drained and exited cleanly (it was not killed) ...
    timed_out = set(nappers)
    wait_for(lambda: all(gone(pid) for pid in timed_out), 90, f"timed-out workers {sorted(timed_out)} to exit")
    rows = workers_with_pids(db_path, timed_out)
    assert {r["pid"] for r in rows} == timed_out
    wait_for(
        lambda: all(r["state"] == "stopped" for r in workers_with_pids(db_path, timed_out)),
        60,
        "the timed-out workers' rows to be marked stopped",
    )
    log = sup.log()
    assert "step timed out workflow_id=wf-nap step=nap#1" in log
    for pid in timed_out:  # the supervisor reaped it as a clean exit, not a death
        wait_log_match(sup, rf"worker pid={pid} slot=\d+ exited \(exit code 0\)")
    assert "ran past its timeout" not in sup.log()  # the engine handled it; the supervisor killed nothing

    # ... and the supervisor replaced it: new pids, the old ones gone, the fleet whole.
    live = wait_fleet_replaced(sup, timed_out)
    assert {w["pid"] for w in live} - initial_pids
    assert timed_out & initial_pids  # the first attempt ran on a worker of the original fleet
    assert sup.popen.poll() is None

    # The workflows submitted alongside completed, each step exactly once.
    for workflow_id in others:
        assert ledger_count(ledger, workflow_id, "s0#1") == 1
        assert ledger_count(ledger, workflow_id, "s1#1") == 1
    assert not query(db_path, "SELECT id FROM workflows WHERE status NOT IN ('COMPLETED', 'FAILED')")


@pytest.mark.integration
@pytest.mark.timeout(300)
# timeout_freeze on both backends; timeout_freeze_locked opens its own sqlite3 connection on the
# database file to hold SQLite's write lock while frozen: SQLite-only by nature.
@pytest.mark.parametrize(
    "name, fleet",
    [("timeout_freeze", "sqlite"), ("timeout_freeze", "postgresql"), ("timeout_freeze_locked", "sqlite")],
    indirect=["fleet"],
)
def test_step_that_freezes_its_worker_is_killed_by_supervisor_until_max_attempts(fleet, tmp_path, name):
    """SIGSTOP inside a step with timeout=1: killed after timeout + grace, re-run, FAILED after 2 starts.

    ``timeout_freeze_locked`` freezes while holding the SQLite write lock: the supervisor must
    still kill the worker (which frees the lock) instead of waiting for the lock itself.
    """
    db_path = fleet.db  # a SQLite path or a PostgreSQL URL
    ledger = tmp_path / "ledger.txt"
    # Everything is submitted before the fleet starts: once a worker freezes holding the write
    # lock, no one (this test included) can write until the supervisor kills it.
    submit(db_path, name, "wf-freeze", {"ledger": str(ledger), "timeout_s": 1, "max_attempts": 2})
    others = [f"wf-ok{i:02d}" for i in range(20)]
    submit_many(db_path, "fleet_steps", {w: {"ledger": str(ledger), "n": 2} for w in others})
    sup = fleet.start(workers=2)

    def ended() -> bool:
        if sup.popen.poll() is not None:
            raise AssertionError(f"the supervisor exited with {sup.popen.returncode}:\n{sup.log()}")
        return workflow_status(db_path, "wf-freeze") in ("FAILED", "COMPLETED", "CANCELLED")

    wait_for(ended, 180, "wf-freeze to end")
    wait_status(db_path, ["wf-freeze"], "FAILED", timeout=10)
    wait_status(db_path, others, "COMPLETED", timeout=180)

    # The workflow failed on max_attempts, and its error carries the supervisor's timeout note.
    record = workflow_row(db_path, "wf-freeze")
    error = record["error"]
    assert "step freeze#1 failed 2 attempts (max_attempts=2)" in error, error
    assert "StepTimeoutError" in error and "past its timeout; its worker was killed" in error, error
    steps = step_rows(db_path, "wf-freeze")
    assert {k: (s["status"], s["attempts"]) for k, s in steps.items()} == {
        "before#1": ("COMPLETED", 1),
        "freeze#1": ("FAILED", 2),
    }
    assert "past its timeout; its worker was killed" in steps["freeze#1"]["error"]
    shown = run_cli("status", "wf-freeze", db=db_path, app=APP, cwd=cli_cwd(db_path))
    assert shown.returncode == 0, shown.stderr
    assert "FAILED" in shown.stdout and "past its timeout; its worker was killed" in shown.stdout

    # The step ran twice, each time in a different worker process, and each of those was killed.
    frozen = ledger_pids(ledger, "wf-freeze", "freeze#1", "enter")
    assert len(frozen) == 2 and len(set(frozen)) == 2, frozen
    assert ledger_count(ledger, "wf-freeze", "before#1") == 1
    assert ledger_count(ledger, "wf-freeze", "after#1") == 0
    if name == "timeout_freeze_locked":
        assert ledger_pids(ledger, "wf-freeze", "freeze#1", "locked") == frozen
    wait_for(lambda: all(gone(pid) for pid in frozen), 90, f"frozen workers {frozen} to be gone")
    for pid in frozen:
        sup.wait_log(f"killing worker pid={pid}: step freeze#1 of workflow wf-freeze ran past its timeout")
        killed = r"killed: step freeze#1 of wf-freeze ran past its timeout"
        wait_log_match(sup, rf"worker pid={pid} slot=\d+ died \({killed}\)")
        wait_log_match(sup, rf"reclaimed workflow wf-freeze from worker \S+ \(pid {pid}\)")
    log = sup.log()
    assert log.count("killing worker pid=") == 2, log
    wait_for(
        lambda: {r["state"] for r in workers_with_pids(db_path, set(frozen))} == {"dead"},
        60,
        "the killed workers' rows to be marked dead",
    )

    # The fleet is whole again and the supervisor never stopped.
    wait_fleet_replaced(sup, set(frozen))
    assert sup.popen.poll() is None
    for workflow_id in others:
        assert ledger_count(ledger, workflow_id, "s0#1") == 1
        assert ledger_count(ledger, workflow_id, "s1#1") == 1


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_durable_run_step_times_out_once_then_succeeds_on_retry(tmp_path, db_path):
    """``durable run`` in-process: the first attempt times out and the run stops (exit 3), so the
    retry never runs beside the timed-out thread; running it again resumes and the retry succeeds."""
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "marker"
    values = {"ledger": str(ledger), "marker": str(marker), "timeout_s": 1}
    first = run_cli("run", "timeout_once", "wf-once", "--input", json.dumps(values), db=db_path, timeout=90)
    assert first.returncode == 3, first.stdout + first.stderr
    timed_out = r"retrying\s+nap#1\s+attempt 1 failed: StepTimeoutError: step nap#1 did not finish within 1s"
    assert re.search(timed_out, first.stdout), first.stdout
    assert "wf-once interrupted: step nap#1 timed out (attempt 1)" in first.stdout, first.stdout
    assert "run the same command again to resume" in first.stdout, first.stdout
    # The attempt kept its lease until the process was gone (its timed-out thread may have run on);
    # the process has exited, so the lease is free for the next run.
    assert workflow_row(db_path, "wf-once")["status"] == "RUNNING"

    done = run_cli("run", "timeout_once", "wf-once", db=db_path, timeout=90)  # recorded input
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"ran\s+nap#1\s+attempt 2", done.stdout), done.stdout
    assert "wf-once COMPLETED" in done.stdout, done.stdout

    # Each attempt ran in its own `durable run` process; the second returned its pid.
    runs = ledger_pids(ledger, "wf-once", "nap#1", "enter")
    assert len(runs) == 2 and len(set(runs)) == 2, runs
    assert ledger_count(ledger, "wf-once", "after#1") == 1
    record = workflow_row(db_path, "wf-once")
    assert record["status"] == "COMPLETED" and record["attempts"] == 2  # two claims: nothing was handed back
    assert json.loads(record["result"]) == {"nap": runs[1], "after": runs[1]}

    shown = run_cli("steps", "wf-once", "--json", db=db_path)
    assert shown.returncode == 0, shown.stderr
    table = {row["step_key"]: row for row in json.loads(shown.stdout)}
    assert {k: (r["status"], r["attempts"]) for k, r in table.items()} == {
        "nap#1": ("COMPLETED", 2),
        "after#1": ("COMPLETED", 1),
    }
    assert table["nap#1"]["error"] is None  # the retry's success cleared the timeout
    text = run_cli("steps", "wf-once", db=db_path)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^nap#1\s+COMPLETED\s+2\s", text.stdout, re.MULTILINE), text.stdout
