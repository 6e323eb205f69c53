"""Findings of the hostile review of the lifecycle work (issue 8, items 1, 11, 17).

Real CLI processes and hand-started workers; synchronisation on files and database rows. Every
test runs on a SQLite file and on a PostgreSQL database (``any_db``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.core_flows import calls_of
from tests.conftest import APPS, cli_env, run_cli
from tests.integration.fleet_support import (  # noqa: F401  (any_db: fixture)
    DbTarget,
    any_db,
    cli_cwd,
    submit,
    wait_for,
    wait_status,
    workflow_row,
)
from tests.integration.test_lifecycle_fleet import HandWorker, hand_workers  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
APP = APPS / "__init__.py"


def test_ctrl_c_during_durable_run_stops_before_the_next_step_and_a_rerun_resumes(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db_path = any_db
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    gate.touch()
    values = json.dumps({"calls": str(calls), "gate": str(gate)})
    command = [sys.executable, "-m", "durable_workers", "--db", str(db_path), "--app", str(APP),
               "run", "life_guarded", "wf", "--input", values]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path)
    try:
        wait_for(lambda: calls_of(str(calls)) == ["pay"], 60, "the step to start")
        run.send_signal(signal.SIGINT)  # Ctrl+C in the middle of the step
        gate.unlink()  # the step finishes; the run stops before `ship`
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3, out + err
    assert "wf interrupted:" in out and "run the same command again to resume" in out
    assert "Traceback" not in err
    assert workflow_row(db_path, "wf")["status"] == "PENDING"
    done = run_cli("run", "life_guarded", "wf", db=db_path, cwd=cli_cwd(db_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls_of(str(calls)) == ["pay", "ship"]  # pay was recorded before the stop: not re-run


def test_retry_of_a_workflow_its_own_body_failed_keeps_every_recorded_step(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db_path = any_db
    calls, flag = tmp_path / "calls", tmp_path / "flag"
    flag.touch()
    values = json.dumps({"calls": str(calls), "flag": str(flag)})
    first = run_cli("run", "life_caught_then_raise", "wf", "--input", values, db=db_path, cwd=cli_cwd(db_path))
    assert first.returncode == 1 and "the body says no" in first.stdout
    flag.unlink()
    assert run_cli("retry", "wf", db=db_path, cwd=cli_cwd(db_path)).returncode == 0
    again = run_cli("run", "life_caught_then_raise", "wf", db=db_path, cwd=cli_cwd(db_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert calls_of(str(calls)) == ["bad", "charge"]  # neither the caught failure nor charge ran again


def test_a_timed_out_steps_retry_never_runs_beside_the_timed_out_execution(
    tmp_path: Path, any_db: DbTarget, hand_workers: list[HandWorker]  # noqa: F811
) -> None:
    db_path = any_db
    calls = tmp_path / "calls"
    # The first worker's process outlives the timed-out step by several TTLs (``long`` keeps it
    # draining): an unrenewed lease would expire, and be taken, well before it exits.
    first = HandWorker(db_path, tmp_path / "a.log", "--concurrency", "2", "--ttl", "1")
    hand_workers.append(first)
    first.wait_registered()
    submit(db_path, "life_long", "long", {"seconds": 5})
    submit(db_path, "life_zombie", "zombie", {"calls": str(calls), "timeout_s": 0.5, "work_s": 3})
    first.wait_log(r"step timed out workflow_id=zombie")
    # A second worker is free right away; it must not run the retry while the first one's
    # timed-out thread (3 s) is still alive in its process.
    second = HandWorker(db_path, tmp_path / "b.log", "--ttl", "1")
    hand_workers.append(second)
    second.wait_registered()
    wait_status(db_path, ["zombie", "long"], "COMPLETED", 90)
    starts = Path(calls).read_text().splitlines()
    assert len(starts) == 2, starts
    assert starts[1].endswith("beside=False"), starts
