"""Attempt lifecycle under hostile conditions (issue 8), with real supervisor and worker processes.

* A claim loop whose store keeps failing logs the error once (with a repeat count) and backs
  off, instead of a traceback per poll.
* A worker started by hand drains on Ctrl+C and exits at once on a second one.
* A frozen (SIGSTOPped) worker is killed by its supervisor and replaced; ``durable workers``
  marks its stale heartbeat meanwhile.
* ``kill -9`` of a worker takes the subprocesses its step started with it.
* Forced stops of the supervisor (shutdown timeout) do not count toward a step's
  ``max_attempts``: three of them during one long step, and the workflow still completes.

Every wait polls database rows, files, logs or process state with a bound (``wait_for``);
nothing asserts timings. Every test runs on a SQLite file and on a PostgreSQL database
(``any_db``, ``on_both_backends``). Workflows: tests/apps/fleet_flows.py, tests/apps/process_flows.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.conftest import cli_env, run_cli
from tests.integration.fleet_support import (
    APP,
    DbTarget,
    any_db,  # noqa: F401  (fixture)
    cli_cwd,
    db_exists,
    fleet,  # noqa: F401  (fixture)
    gone,
    is_url,
    ledger_count,
    on_both_backends,
    query,
    running_step,
    step_rows,
    submit,
    suspend_outside_write,
    wait_for,
    wait_status,
    worker_row,
    workflow_row,
)
from tests.apps.fleet_flows import read_ledger

pytestmark = pytest.mark.integration


class HandWorker:
    """``durable worker`` started by hand (no supervisor), its log in a file."""

    def __init__(self, db: DbTarget, log: Path, *args: str) -> None:
        self.db = db
        self.log_path = log
        self.worker_id = f"hand-{log.stem}"
        command = [
            sys.executable, "-m", "durable_workers", "--db", str(db), "--app", str(APP),
            "worker", "--worker-id", self.worker_id, *args,
        ]  # fmt: skip
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cli_cwd(db), env=cli_env()
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_registered(self) -> dict:
        def registered() -> dict | None:
            if self.popen.poll() is not None:
                raise AssertionError(f"worker exited with {self.popen.returncode}:\n{self.log()}")
            try:
                row = worker_row(self.db, self.worker_id) if db_exists(self.db) else None
            except Exception:  # tables not created yet
                return None
            return row if row and row["state"] == "running" else None

        return wait_for(registered, 60, f"worker {self.worker_id} to register")

    def wait_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        return wait_for(lambda: re.search(pattern, self.log(), re.MULTILINE), timeout, f"/{pattern}/ in the worker log")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
        self.popen.wait(30)


@pytest.fixture
def hand_workers() -> Iterator[list[HandWorker]]:
    started: list[HandWorker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


def hold_input(tmp_path: Path) -> tuple[Path, Path, dict]:
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    return ledger, release, {"ledger": str(ledger), "release": str(release)}


# --------------------------------------------------------------------------- item 4 and 14


@pytest.mark.timeout(180)
def test_claim_errors_are_logged_once_with_a_repeat_count_and_ctrl_c_stops_the_worker(
    tmp_path: Path, any_db: DbTarget, hand_workers: list[HandWorker]  # noqa: F811
) -> None:
    """The store fails every claim (its table is gone): a traceback per distinct error, counted
    repeats, recovery. (PostgreSQL quotes the failing statement, so two of the claim's statements
    failing are two distinct errors there; SQLite reports both alike.)"""
    db_path = any_db
    submit(db_path, "fleet_steps", "wf-before", {"ledger": str(tmp_path / "ledger.txt"), "n": 1})
    worker = HandWorker(db_path, tmp_path / "worker.log", "--ttl", "5", "--log-level", "DEBUG")
    hand_workers.append(worker)
    worker.wait_registered()
    wait_status(db_path, ["wf-before"], "COMPLETED", 60)

    query(db_path, "ALTER TABLE workflows RENAME TO workflows_away")
    try:
        worker.wait_log(r"claim worker_id=\S+ failed again: .* \(repeat 3\)")
    finally:
        query(db_path, "ALTER TABLE workflows_away RENAME TO workflows")
    worker.wait_log(r"claim worker_id=\S+ recovered after \d+ failed tries")

    text = worker.log()
    # One traceback per distinct error (the last line of a traceback names the exception's class).
    traced = re.findall(r"^durable_workers\.errors\.StoreUnavailable: .*(?:no such table|does not exist).*$", text, re.MULTILINE)
    assert traced and len(traced) == len(set(traced)), traced
    if not is_url(db_path):
        assert len(traced) == 1, traced
    assert len(re.findall(r"WARNING claim worker_id=\S+ failed: .*backing off", text)) == len(traced)
    assert re.search(r"WARNING claim worker_id=\S+ failed: .* \(repeated \d+ more times\)", text)
    submit(db_path, "fleet_steps", "wf-after", {"ledger": str(tmp_path / "ledger.txt"), "n": 1})
    wait_status(db_path, ["wf-after"], "COMPLETED", 60)

    worker.popen.send_signal(signal.SIGINT)  # by hand, no supervisor: Ctrl+C stops it gracefully
    assert worker.popen.wait(60) == 0, worker.log()[-2000:]
    assert worker_row(db_path, worker.worker_id)["state"] == "stopped"


@pytest.mark.timeout(180)
def test_ctrl_c_drains_a_worker_started_by_hand_and_a_second_one_forces_it(
    tmp_path: Path, any_db: DbTarget, hand_workers: list[HandWorker]  # noqa: F811
) -> None:
    db_path = any_db
    ledger, release, values = hold_input(tmp_path)
    submit(db_path, "fleet_hold", "wf-hold", values)
    worker = HandWorker(db_path, tmp_path / "worker.log", "--ttl", "5")
    hand_workers.append(worker)
    worker.wait_registered()
    wait_for(lambda: running_step(db_path, "wf-hold", "hold#1"), 60, "the hold step to run")

    worker.popen.send_signal(signal.SIGINT)
    wait_for(lambda: worker_row(db_path, worker.worker_id)["state"] == "draining", 60, "the worker to drain")
    assert worker.popen.poll() is None  # draining: the step is still running
    worker.popen.send_signal(signal.SIGINT)
    assert worker.popen.wait(60) == 128 + signal.SIGINT, worker.log()[-2000:]
    assert "interrupted twice" in worker.log()


# --------------------------------------------------------------------------- item 9


@pytest.mark.timeout(180)
def test_durable_workers_marks_a_frozen_workers_heartbeat_stale(
    tmp_path: Path, any_db: DbTarget, hand_workers: list[HandWorker]  # noqa: F811
) -> None:
    db_path = any_db
    worker = HandWorker(db_path, tmp_path / "worker.log", "--ttl", "1")
    hand_workers.append(worker)
    worker.wait_registered()

    def stale() -> bool | None:
        done = run_cli("workers", "--json", db=db_path, cwd=cli_cwd(db_path))
        assert done.returncode == 0, done.stderr
        rows = [r for r in json.loads(done.stdout) if r["id"] == worker.worker_id]
        return rows[0]["stale"] if rows else None

    assert stale() is False
    proc = psutil.Process(worker.popen.pid)
    suspend_outside_write(proc, db_path)
    try:
        wait_for(stale, 60, "`durable workers` to mark the frozen worker stale")
        text = run_cli("workers", db=db_path, cwd=cli_cwd(db_path)).stdout
        assert re.search(rf"^\S+\s+{worker.popen.pid}\s+running\s+yes\s+\S+s\s+STALE\b", text, re.MULTILINE), text
    finally:
        proc.resume()
    wait_for(lambda: stale() is False, 60, "the resumed worker's heartbeat to be fresh again")


@pytest.mark.timeout(240)
@on_both_backends
def test_supervisor_kills_and_replaces_a_frozen_worker(fleet, tmp_path: Path) -> None:  # noqa: F811
    db_path = fleet.db
    sup = fleet.start(workers=1, ttl=2)
    (frozen,) = sup.live_workers()
    suspend_outside_write(psutil.Process(frozen["pid"]), db_path)
    wait_for(lambda: gone(frozen["pid"]), 90, f"the frozen worker {frozen['pid']} to be killed")
    sup.wait_log("heartbeat is")
    replacement = wait_for(
        lambda: [w for w in sup.live_workers() if w["pid"] != frozen["pid"]], 90, "a replacement worker"
    )
    assert worker_row(db_path, frozen["id"])["state"] == "dead"
    ledger = tmp_path / "ledger.txt"
    submit(db_path, "fleet_steps", "wf-after", {"ledger": str(ledger), "n": 1})
    wait_status(db_path, ["wf-after"], "COMPLETED", 60)
    assert {p for _, _, p, _ in read_ledger(ledger)} == {replacement[0]["pid"]}


# --------------------------------------------------------------------------- item 10


@pytest.mark.timeout(240)
@on_both_backends
def test_kill_9_of_a_worker_kills_the_subprocess_its_step_started(fleet, tmp_path: Path) -> None:  # noqa: F811
    db_path = fleet.db
    ledger, release, values = hold_input(tmp_path)
    sup = fleet.start(workers=1)
    submit(db_path, "lifecycle_spawn", "wf-spawn", values)

    def children() -> list[int]:
        return [int(n.split("=")[1]) for w, k, _, n in read_ledger(ledger) if n.startswith("child=")]

    try:
        wait_for(children, 60, "the step to start its subprocess")
        (worker,) = sup.live_workers()
        first = children()[0]
        assert psutil.Process(first).ppid() == worker["pid"]
        os.kill(worker["pid"], signal.SIGKILL)
        wait_for(lambda: gone(first), 60, f"the step's subprocess {first} to die with its worker")
        wait_for(lambda: len(children()) == 2, 90, "the step to run again on the replacement worker")
        release.touch()
        wait_status(db_path, ["wf-spawn"], "COMPLETED", 60)
        assert step_rows(db_path, "wf-spawn")["spawn#1"]["attempts"] == 2
    finally:
        for pid in children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- item 15


@pytest.mark.timeout(400)
@on_both_backends
def test_forced_stops_of_the_supervisor_do_not_count_toward_max_attempts(
    fleet, tmp_path: Path  # noqa: F811
) -> None:
    """The hold step outlives ``--shutdown-timeout`` three times (max_attempts is 3); it still completes."""
    db_path = fleet.db
    ledger, release, values = hold_input(tmp_path)
    submit(db_path, "fleet_hold", "wf-deploys", values)
    for deploy in range(1, 4):
        sup = fleet.start(workers=1, shutdown_timeout=1)
        wait_for(
            lambda: ledger_count(ledger, "wf-deploys", "hold#1", "enter") == deploy,
            90,
            f"attempt {deploy} of the hold step",
        )
        sup.terminate()
        assert sup.wait_exit(120) == 0
        assert "forced stop" in sup.log()
        assert step_rows(db_path, "wf-deploys")["hold#1"]["interruptions"] == deploy
    fleet.start(workers=1)
    wait_for(lambda: ledger_count(ledger, "wf-deploys", "hold#1", "enter") == 4, 90, "the fourth attempt")
    release.touch()
    wait_status(db_path, ["wf-deploys"], "COMPLETED", 90)
    row = workflow_row(db_path, "wf-deploys")
    assert row["attempts"] == 1, row  # the three forced stops were not counted as claims
