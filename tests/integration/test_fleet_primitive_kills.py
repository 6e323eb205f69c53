"""Kill -9 at every boundary of ``ctx.sleep`` and ``ctx.recv``, through a real fleet, on both backends.

``boundary_flow`` (tests/apps/primitive_flows.py) records ``before``, sleeps or waits for a
message on 'go', records ``after``. Each test SIGKILLs at one boundary:

- just before the WAITING state is committed, and just after it (``--crash-at
  durable:suspend:before|after``: the first attempt's worker kills itself there);
- during the wait (every process of the fleet, supervisor included; a new fleet takes over);
- after the send (recv) or the wake time (sleep), before any worker woke the workflow;
- right after the wake claim: the worker holding the woken workflow, inside its first new step
  (held at a gate file so that its side effect has not happened); and by the crash hook, in
  the resuming attempt (recv: after it consumed the message, before recording it).

Each asserts the workflow COMPLETED, every step's side effect happened once, the wait was
recorded once, and exactly the first message was consumed. Tests wait on database rows.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.apps.core_flows import calls_of
from tests.conftest import run_cli
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    APP,
    DbTarget,
    cli_cwd,
    fleet,
    gone,
    on_both_backends,
    query,
    running_step,
    submit,
    wait_for,
    wait_status,
    workflow_row,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(180)]

WF = "edge"
KINDS = ("sleep", "recv")
SLEEP_S = 3.0


def _values(tmp_path: Path, kind: str, **extra: object) -> dict[str, object]:
    return {"calls": str(tmp_path / "calls"), "kind": kind, "seconds": SLEEP_S, **extra}


def _send(db: DbTarget, payload: str, late_ok: bool = False) -> None:
    sent = run_cli("send", WF, "go", "--payload", payload, db=db, app=APP, cwd=cli_cwd(db))
    if late_ok and "is already COMPLETED" in sent.stderr:
        return  # the workflow finished on the first message already
    assert sent.returncode == 0, sent.stderr


def _waiting_without_lease(db: DbTarget) -> bool:
    row = workflow_row(db, WF)
    if not row or row["status"] != "WAITING":
        return False
    held = query(db, "SELECT count(*) AS n FROM leases WHERE workflow_id = ? AND worker_id IS NOT NULL", (WF,))
    assert held[0]["n"] == 0, "a waiting workflow still holds a lease"
    return True


def _kill_fleet(fleet) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL every supervisor of the test and all their workers; wait until they are gone."""
    for supervisor in fleet.supervisors:
        victims = [supervisor.pid, *supervisor.worker_pids()]
        for pid in victims:
            try:
                psutil.Process(pid).send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        supervisor.popen.wait(30)
        wait_for(lambda: all(gone(p) for p in victims), 30, "the killed fleet to be gone")


def _check_outcome(db: DbTarget, tmp_path: Path, kind: str) -> None:
    wait_status(db, [WF], "COMPLETED", 120)
    assert calls_of(tmp_path / "calls") == ["before", "after"]  # no step ran twice, none was lost
    waits = query(db, "SELECT step_key FROM steps WHERE workflow_id = ? AND step_key LIKE 'durable:%'", (WF,))
    expected = ["durable:sleep#1"] if kind == "sleep" else ["durable:recv#1", "durable:recv-wait#1"]
    assert sorted(r["step_key"] for r in waits) == expected  # the wait was recorded once
    result = json.loads(workflow_row(db, WF)["result"])
    if kind == "recv":
        consumed = query(db, "SELECT payload FROM messages WHERE workflow_id = ? AND consumed_by_step IS NOT NULL", (WF,))
        assert [r["payload"] for r in consumed] == ["1"] and result == 1  # the first message, once
    else:
        assert result is None


def _send_both(db: DbTarget) -> None:
    """Send "1" then "2": one recv, so "2" must never be consumed (it may come after the end)."""
    _send(db, "1")
    _send(db, "2", late_ok=True)


@pytest.mark.parametrize("point", ("before", "after"))
@pytest.mark.parametrize("kind", KINDS)
def test_killed_just_before_or_after_the_suspend_commit(fleet, tmp_path: Path, kind: str, point: str) -> None:
    supervisor = fleet.start(workers=2)
    first_pids = set(supervisor.worker_pids())
    submit(fleet.db, "boundary_flow", WF, _values(tmp_path, kind), "--crash-at", f"durable:suspend:{point}")
    if kind == "recv":
        wait_for(lambda: _waiting_without_lease(fleet.db), 90, "WAITING for a message, no lease held")
        _send_both(fleet.db)
    _check_outcome(fleet.db, tmp_path, kind)
    assert any(gone(pid) for pid in first_pids), "no worker was killed at the suspend"
    # A suspend gives its claim back (it does not count): only an attempt killed before it does.
    assert workflow_row(fleet.db, WF)["attempts"] == (2 if point == "before" else 1)


def _start_and_kill_while_waiting(fleet, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    fleet.start(workers=2)
    submit(fleet.db, "boundary_flow", WF, _values(tmp_path, kind))
    wait_for(lambda: _waiting_without_lease(fleet.db), 60, "WAITING, no lease held")
    _kill_fleet(fleet)


@pytest.mark.parametrize("kind", KINDS)
def test_the_whole_fleet_killed_during_the_wait(fleet, tmp_path: Path, kind: str) -> None:
    _start_and_kill_while_waiting(fleet, tmp_path, kind)
    assert workflow_row(fleet.db, WF)["status"] == "WAITING", "the wait ended before the kill; see SLEEP_S"
    fleet.start(workers=2)
    if kind == "recv":
        _send_both(fleet.db)
    _check_outcome(fleet.db, tmp_path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_killed_after_the_send_or_the_wake_time_before_the_wake(fleet, tmp_path: Path, kind: str) -> None:
    _start_and_kill_while_waiting(fleet, tmp_path, kind)
    if kind == "recv":
        _send_both(fleet.db)
    else:
        wake_at = workflow_row(fleet.db, WF)["wake_at"]
        wait_for(lambda: time.time() > wake_at, 30, "the wake time to pass")
    assert workflow_row(fleet.db, WF)["status"] == "WAITING"  # due, and nobody has woken it
    fleet.start(workers=2)
    _check_outcome(fleet.db, tmp_path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_killed_right_after_the_wake_claim(fleet, tmp_path: Path, kind: str) -> None:
    gate = tmp_path / "gate"
    fleet.start(workers=2)
    submit(fleet.db, "boundary_flow", WF, _values(tmp_path, kind, gate=str(gate)))
    wait_for(lambda: _waiting_without_lease(fleet.db), 60, "WAITING, no lease held")
    if kind == "recv":
        _send_both(fleet.db)
    wait_for(lambda: running_step(fleet.db, WF, "after#1"), 60, "the woken workflow's last step to start")
    holder = query(
        fleet.db, "SELECT w.pid FROM leases l JOIN workers w ON w.id = l.worker_id WHERE l.workflow_id = ?", (WF,)
    )
    assert len(holder) == 1, holder
    psutil.Process(holder[0]["pid"]).send_signal(signal.SIGKILL)
    wait_for(lambda: gone(holder[0]["pid"]), 30, "the killed worker to be gone")
    assert calls_of(tmp_path / "calls") == ["before"]  # the gate held the side effect back
    gate.touch()
    _check_outcome(fleet.db, tmp_path, kind)
    assert query(fleet.db, "SELECT attempts FROM steps WHERE workflow_id = ? AND step_key = 'after#1'", (WF,))[0]["attempts"] == 2


@pytest.mark.parametrize(("kind", "point"), (("sleep", "after:before"), ("recv", "durable:recv:before")))
def test_the_resuming_attempt_killed_by_the_hook_after_the_wake_claim(fleet, tmp_path: Path, kind: str, point: str) -> None:
    """A suspend does not count as an attempt, so a crash point past the wait fires in the claim that
    resumes it: for recv, after that claim consumed the message and before ``durable:recv`` is recorded."""
    supervisor = fleet.start(workers=2)
    first_pids = set(supervisor.worker_pids())
    submit(fleet.db, "boundary_flow", WF, _values(tmp_path, kind), "--crash-at", point)
    wait_for(lambda: _waiting_without_lease(fleet.db), 60, "WAITING, no lease held")
    if kind == "recv":
        _send_both(fleet.db)
    _check_outcome(fleet.db, tmp_path, kind)
    assert any(gone(pid) for pid in first_pids), "no worker was killed in the resuming attempt"
    assert workflow_row(fleet.db, WF)["attempts"] == 2  # the killed resuming attempt, then the last one
