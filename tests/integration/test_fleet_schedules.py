"""Cron schedules across a fleet of real supervisors, on SQLite and PostgreSQL (``on_both_backends``).

``tests/schedule_app.py`` declares ``tick`` with ``@workflow(schedule="* * * * * *", catchup="all")``
(a slot every second); its one step appends to a ledger file. Two ``durable-supervisor`` processes
share one database; only the holder of the ``scheduler`` role (a ``roles`` row, read with
``Store.get_role``; its holder string names the supervisor's pid) fires slots and runs retention.

- kill -9 of the holder: the other takes the role once it expires and fires every slot in between
  (catchup=all), so the fired slots are contiguous, each submitted once and run once;
- a clean stop (SIGTERM) releases the role: the other takes it at once, long before its TTL;
- retention (``--retention``) runs on the holder, and ``durable schedule list`` names it;
- catchup across downtime, driven in-process with explicit times (``Scheduler.turn(now, mono)``).

Every wait polls database rows, a log file or a process exit, with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from durable_workers import Client
from durable_workers.backends import Store, open_store
from durable_workers.config import SCHEDULER_INTERVAL, SCHEDULER_ROLE
from durable_workers.records import RoleRecord
from durable_workers.registry import Registry
from durable_workers.retention import RetentionSweep
from durable_workers.scheduler import Scheduler
from durable_workers.schedules import new_schedule, next_slot, scheduled_at, slot_workflow_id
from tests.conftest import ROOT, cli_env, run_cli
from tests.integration.fleet_support import (  # noqa: F401  (fleet, any_db: fixtures)
    BIN,
    DbTarget,
    Fleet,
    Supervisor,
    any_db,
    cli_cwd,
    fleet,
    on_both_backends,
    query,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The app, loaded only by the processes the tests start (see its docstring: never imported here).
SCHEDULE_APP = ROOT / "tests" / "schedule_app.py"
#: The environment variable ``tests/schedule_app.py`` reads its ledger file's path from.
LEDGER_ENV = "SCHEDULE_APP_LEDGER"
_HOLDER_PID = re.compile(r"/supervisor-(\d+)-")


def start_supervisor(fleet: Fleet, ledger: Path, ttl: float, *extra: str) -> Supervisor:  # noqa: F811
    """Start a ``durable-supervisor`` with one worker on the fleet's database, running ``tests/schedule_app.py``."""
    log = fleet.tmp_path / f"supervisor-{len(fleet.supervisors) + 1}.log"
    script = BIN / "durable-supervisor"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]
    command += ["--workers", "1", "--db", str(fleet.db), "--app", str(SCHEDULE_APP), "--ttl", str(ttl), *extra]
    cwd = fleet.tmp_path / "supervisor-cwd"
    cwd.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                 env=cli_env({LEDGER_ENV: str(ledger)}))  # fmt: skip
    supervisor = Supervisor(fleet, popen, log, workers=1)
    fleet.supervisors.append(supervisor)
    return supervisor


def start_two(fleet: Fleet, ledger: Path, ttl: float, *extra: str) -> list[Supervisor]:  # noqa: F811
    """Two supervisors started side by side; returns once both have their worker registered."""
    supervisors = [start_supervisor(fleet, ledger, ttl, *extra) for _ in range(2)]
    for supervisor in supervisors:
        supervisor.wait_ready()
    return supervisors


def ledger_ids(ledger: Path) -> list[str]:
    """The workflow id of each ledger line (``workflow_id step_key pid``), one per step execution."""
    return [line.split(" ")[0] for line in ledger.read_text().splitlines()] if ledger.exists() else []


def holder_pid(role: RoleRecord | None) -> int | None:
    """The pid in the role's holder string (``HOST/supervisor-PID-XXXX``), or None."""
    found = _HOLDER_PID.search(role.holder) if role is not None else None
    return int(found.group(1)) if found else None


def current_holder(store: Store, supervisors: list[Supervisor]) -> tuple[Supervisor, RoleRecord] | None:
    """The supervisor holding the scheduler role now (its lease not expired), with the role row."""
    role = store.get_role(SCHEDULER_ROLE)
    if role is None or role.expires_at <= store.now():
        return None
    pid = holder_pid(role)
    return next(((s, role) for s in supervisors if s.pid == pid), None)


def tick_rows(db: DbTarget) -> list[dict[str, Any]]:
    """The workflows ``tick``'s slots submitted, oldest slot first."""
    return query(db, "SELECT id, status FROM workflows WHERE name = 'tick' ORDER BY id")


def fired_after(db: DbTarget, when: float, status: str = "COMPLETED") -> int:
    """How many ``tick`` slots later than ``when`` have a workflow in ``status``."""
    return sum(1 for row in tick_rows(db) if row["status"] == status and _slot(row["id"]) > when)


def _slot(workflow_id: str) -> float:
    at = scheduled_at(workflow_id)
    assert at is not None and workflow_id.startswith("tick@"), workflow_id
    return at.timestamp()


def pause_and_drain(db: DbTarget, store: Store, holder: Supervisor) -> None:
    """Pause ``tick``, wait for a scheduler turn that began after the pause (no firing is left in
    flight), then for every submitted slot to be COMPLETED."""
    done = run_cli("schedule", "pause", "tick", db=db, app=SCHEDULE_APP, cwd=cli_cwd(db))
    assert done.returncode == 0, done.stderr
    paused_at = store.now()

    def turned() -> bool:
        role = store.get_role(SCHEDULER_ROLE)
        return role is not None and role.renewed_at > paused_at + SCHEDULER_INTERVAL

    wait_for(turned, 30, "a scheduler turn begun after the pause")
    assert holder_pid(store.get_role(SCHEDULER_ROLE)) == holder.pid
    wait_status(db, [row["id"] for row in tick_rows(db)], "COMPLETED", 60)


def assert_each_slot_ran_once(db: DbTarget, store: Store, ledger: Path) -> list[float]:
    """Fired slots are contiguous per the cron, each one workflow COMPLETED whose step ran once; the slots."""
    rows = tick_rows(db)
    slots = sorted(_slot(row["id"]) for row in rows)
    schedule = store.get_schedule("tick")
    assert schedule is not None and schedule.catchup == "all"
    assert slots[0] == next_slot(schedule, schedule.created_at) and slots[-1] == schedule.last_slot
    missing = [a for a, b in pairwise(slots) if next_slot(schedule, a) != b]
    assert not missing, f"slots missing after {missing}: {[row['id'] for row in rows]}"
    assert len(set(slots)) == len(rows) and {row["status"] for row in rows} == {"COMPLETED"}
    assert [row["id"] for row in rows] == [slot_workflow_id("tick", slot) for slot in slots]
    ran: dict[str, int] = {}
    for workflow_id in ledger_ids(ledger):
        ran[workflow_id] = ran.get(workflow_id, 0) + 1
    assert ran == {row["id"]: 1 for row in rows}, "each slot's side effect must run exactly once"
    return slots


@on_both_backends
def test_every_slot_fires_once_through_a_kill_of_the_lease_holder(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    ledger = tmp_path / "ledger"
    supervisors = start_two(fleet, ledger, 1.5)
    store = open_store(str(fleet.db), create=False)
    try:
        wait_for(lambda: fired_after(fleet.db, 0) >= 3, 60, "three slots fired and run")
        victim, role = wait_for(lambda: current_holder(store, supervisors), 30, "a supervisor to hold the role")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait_exit(30)
        killed_at = store.now()
        survivor = next(s for s in supervisors if s is not victim)
        new = wait_for(lambda: (current_holder(store, [survivor]) or (None, None))[1], 30, "the survivor takes over")
        assert new.token == role.token + 1
        wait_for(lambda: fired_after(fleet.db, killed_at) >= 3, 60, "three slots fired after the kill")
        pause_and_drain(fleet.db, store, survivor)
        survivor.terminate()
        assert survivor.wait_exit(60) == 0, survivor.log()
        slots = assert_each_slot_ran_once(fleet.db, store, ledger)
        assert slots[0] < killed_at < slots[-1]
    finally:
        store.close()


@on_both_backends
def test_a_clean_stop_hands_the_lease_over_at_once(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    ttl = 90.0  # far beyond the waits below: only a released role can change hands in time
    ledger = tmp_path / "ledger"
    supervisors = start_two(fleet, ledger, ttl)
    store = open_store(str(fleet.db), create=False)
    try:
        first, role = wait_for(lambda: current_holder(store, supervisors), 30, "a supervisor to hold the role")
        wait_for(lambda: fired_after(fleet.db, 0) >= 2, 60, "two slots fired by the first holder")
        first.terminate()
        assert first.wait_exit(60) == 0, first.log()
        stopped_at = store.now()
        after = store.get_role(SCHEDULER_ROLE)
        # Released: expired at once (either still the first's row, or already the second's).
        assert after is not None and (after.holder != role.holder or after.expires_at < after.renewed_at + ttl)
        second = next(s for s in supervisors if s is not first)
        new = wait_for(lambda: (current_holder(store, [second]) or (None, None))[1], 30, "the other takes over")
        assert new.token == role.token + 1 and new.renewed_at < role.renewed_at + ttl
        wait_for(lambda: fired_after(fleet.db, stopped_at) >= 2, 60, "two slots fired by the new holder")
        pause_and_drain(fleet.db, store, second)
        assert_each_slot_ran_once(fleet.db, store, ledger)
    finally:
        store.close()


def _deleted_lines(supervisor: Supervisor) -> int:
    return supervisor.log().count("retention: deleted")


@on_both_backends
def test_retention_runs_on_the_lease_holder(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    ledger = tmp_path / "ledger"
    supervisors = start_two(fleet, ledger, 90.0, "--retention", "1s")
    store = open_store(str(fleet.db), create=False)
    try:
        holder, role = wait_for(lambda: current_holder(store, supervisors), 30, "a supervisor to hold the role")
        other = next(s for s in supervisors if s is not holder)
        # tick's finished slots are swept one sweep after another while new ones keep coming.
        wait_for(lambda: _deleted_lines(holder) >= 3, 60, "three sweeps that deleted finished slots")
        schedule = store.get_schedule("tick")
        assert schedule is not None and schedule.last_slot is not None
        first = slot_workflow_id("tick", next_slot(schedule, schedule.created_at))
        assert not query(fleet.db, "SELECT id FROM workflows WHERE id = ?", (first,))  # swept
        assert _deleted_lines(other) == 0, other.log()
        listed = run_cli("schedule", "list", db=fleet.db, app=SCHEDULE_APP, cwd=cli_cwd(fleet.db))
        assert listed.returncode == 0, listed.stderr
        assert f"scheduler lease: {role.holder} (renewed " in listed.stdout
        assert f"/supervisor-{holder.pid}-" in role.holder
        assert (store.get_role(SCHEDULER_ROLE) or role).token == role.token  # held throughout
    finally:
        store.close()


# --------------------------------------------------------------------------- catchup, in-process

T0 = 1_899_997_200.0  # 2030-03-17T17:00:00Z: on the hour
HOUR = 3600.0


def _beat(ctx: Any) -> None:
    """A workflow the in-process scheduler submits (nothing runs it here)."""


def test_catchup_after_downtime_follows_each_mode(any_db: DbTarget) -> None:  # noqa: F811
    store = open_store(str(any_db))
    registry = Registry()
    registry.register(_beat, "beat")
    client = Client(db=str(any_db), store=store, registry=registry)
    for mode in ("latest", "all", "none"):
        store.add_schedule(new_schedule(mode, "beat", "0 * * * *", catchup=mode, now=T0 - 1), now=T0 - 1)
    scheduler = Scheduler(client, "test/supervisor-0-catchup", 60.0, RetentionSweep(None))
    try:
        assert scheduler.turn(T0 + 5, 0.0) == 3  # each on time: all three fire slot T0
        assert scheduler.turn(T0 + 6, 1.0) == 0  # nothing new
        # Down from T0 + 6 until 3 h 20 min later: slots T0+1h, +2h and +3h were missed.
        assert scheduler.turn(T0 + 3 * HOUR + 1200, 2.0) == 1 + 3 + 0
        # Back on time: every mode fires the next slot.
        assert scheduler.turn(T0 + 4 * HOUR + 2, 3.0) == 3
        rival = Scheduler(client, "test/supervisor-1-rival", 60.0, RetentionSweep(None))
        assert rival.turn(T0 + 4 * HOUR + 3, 4.0) == 0 and rival.token is None  # the role is held
        fired = {row["id"] for row in query(any_db, "SELECT id FROM workflows WHERE name = 'beat'")}
        slots = {
            "latest": [T0, T0 + 3 * HOUR, T0 + 4 * HOUR],
            "all": [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR],
            "none": [T0, T0 + 4 * HOUR],
        }
        assert fired == {slot_workflow_id(mode, slot) for mode, times in slots.items() for slot in times}
        assert {s.name: s.next_at for s in store.list_schedules()} == dict.fromkeys(slots, T0 + 5 * HOUR)
        assert {s.name: s.last_slot for s in store.list_schedules()} == dict.fromkeys(slots, T0 + 4 * HOUR)
    finally:
        scheduler.release()
        store.close()
