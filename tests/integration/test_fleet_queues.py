"""Queue limits held by a real fleet under chaos, on both backends (``@on_both_backends``).

Real supervisors and worker processes share one database; the test kill -9s workers and
SIGSTOPs/SIGCONTs others while they are inside a step. Two independent witnesses check a limit:

- an *observer* thread with its own connection samples the database (RUNNING rows of the queue,
  per key, per worker) and keeps the largest value it ever saw;
- the *ledger* (tests/queue_app.py): every step execution appends ``enter``/``exit`` lines
  with its pid and the system-wide monotonic time. An execution is the interval between them; a
  pid killed by the test ends its intervals at the kill, and a pid stopped by the test does not
  execute between SIGSTOP and SIGCONT. The largest number of intervals open at one instant is
  compared with the limit.

Everything synchronises on database rows and ledger lines, bounded by deadlines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psutil
import pytest

from durable_workers import Client
from tests.queue_app import (
    QUEUE_APP,
    FOREVER,
    KEYED,
    LIMITED,
    PER_WORKER,
    PRIORITIES,
    Execution,
    executions,
    inside_step,
    most_at_once,
    most_at_once_by,
    read_entries,
)
from tests.integration.fleet_support import (
    DbTarget,
    Fleet,
    fleet,  # noqa: F401  (fixture)
    gone,
    suspend_outside_write,
    is_url,
    on_both_backends,
    pg_placeholders,
    query,
    wait_for,
    wait_status,
    workflow_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150), on_both_backends]

TTL = 1.0


# --------------------------------------------------------------------------- witnesses


class Observer(threading.Thread):
    """Samples ``sql`` (rows of one count each) on its own connection until stopped; keeps the largest count."""

    def __init__(self, db: DbTarget, sql: str, params: Iterable[Any] = ()) -> None:
        super().__init__(daemon=True, name="queue-observer")
        self.db, self.sql, self.params = db, sql, tuple(params)
        self.highest = 0
        self.samples = 0
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def _connect(self) -> tuple[Any, str]:
        if is_url(self.db):
            import psycopg

            return psycopg.connect(str(self.db), autocommit=True), pg_placeholders(self.sql)
        return sqlite3.connect(f"file:{self.db}?mode=rw", uri=True, timeout=30, isolation_level=None), self.sql

    def run(self) -> None:
        try:
            con, sql = self._connect()
            try:
                while not self._stop_event.is_set():
                    counts = [row[0] for row in con.execute(sql, self.params).fetchall()]
                    self.highest = max([self.highest, *counts])
                    self.samples += 1
                    self._stop_event.wait(0.005)
            finally:
                con.close()
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)

    def finish(self) -> int:
        """Stop sampling; the largest count seen (raises if sampling failed)."""
        self._stop_event.set()
        self.join(30)
        assert not self.errors, self.errors
        assert self.samples > 0, "the observer took no sample"
        return self.highest


@dataclass
class Faults:
    """What the test did to which worker pid, on the monotonic clock."""

    killed: dict[int, float] = field(default_factory=dict)
    #: pid -> [(stopped at, continued at or FOREVER)]
    stops: dict[int, list[tuple[float, float]]] = field(default_factory=dict)


def resumed_zombies(runs: list[Execution], faults: Faults) -> list[tuple[Execution, float]]:
    """Executions that went on after SIGCONT although another pid had started their workflow meanwhile.

    Each comes with the instant its pid was stopped: what it executed after that is the zombie's.
    """
    zombies = []
    for run in runs:
        for stopped, continued in faults.stops.get(run.pid, []):
            resumed = run.start < stopped and continued < run.end
            taken = [
                o for o in runs if o.workflow_id == run.workflow_id and o.pid != run.pid and stopped < o.start < run.end
            ]
            if resumed and taken:
                zombies.append((run, stopped))
                print(
                    f"zombie: workflow {run.workflow_id} attempt {run.attempt} in pid {run.pid} was stopped at "
                    f"{stopped:.3f}, taken by pid {taken[0].pid} (attempt {taken[0].attempt}) at {taken[0].start:.3f}, "
                    f"resumed at {continued:.3f} and went on executing its step until {run.end:.3f} "
                    f"(the copy ran until {taken[0].end:.3f}); all its executions (pid, attempt): "
                    f"{[(o.pid, o.attempt) for o in runs if o.workflow_id == run.workflow_id]}"
                )
    return zombies


def without_zombie_tails(runs: list[Execution], zombies: list[tuple[Execution, float]]) -> list[Execution]:
    """``runs`` with each zombie cut at the instant its pid was stopped (what it did before counts)."""
    cut = {id(run): stopped for run, stopped in zombies}
    trimmed = []
    for run in runs:
        if id(run) in cut:
            segments = [(a, min(b, cut[id(run)])) for a, b in run.segments if a < cut[id(run)]]
            run = Execution(run.workflow_id, run.pid, run.attempt, run.key, run.start, run.end, segments)
        trimmed.append(run)
    return trimmed


# --------------------------------------------------------------------------- chaos


def submit_all(db: DbTarget, name: str, items: dict[str, dict[str, Any]], **options: Any) -> list[str]:
    """Submit ``items`` (workflow id -> input) one by one, in order, with the same submit options."""
    client = Client(db=str(db), app=str(QUEUE_APP))
    try:
        for workflow_id, values in items.items():
            client.submit(name, workflow_id, values, **options)
    finally:
        client.close()
    return list(items)


def holding(db: DbTarget, queue: str, pid: int | None = None) -> set[int]:
    """Pids of the workers whose lease holds a RUNNING workflow of ``queue`` (only ``pid``, if given)."""
    sql = (
        "SELECT w.pid FROM leases l JOIN workers w ON w.id = l.worker_id JOIN workflows f ON f.id = l.workflow_id "
        "WHERE f.queue = ? AND f.status = 'RUNNING'"
    )
    rows = query(db, sql + (" AND w.pid = ?" if pid is not None else ""), (queue,) if pid is None else (queue, pid))
    return {r["pid"] for r in rows}


def completed(db: DbTarget, queue: str) -> int:
    return query(db, "SELECT COUNT(*) AS n FROM workflows WHERE queue = ? AND status = 'COMPLETED'", (queue,))[0]["n"]


def busy_pids(fleet: Fleet, queue: str, ledger: Path, faults: Faults) -> list[int]:  # noqa: F811
    """Live worker pids, neither killed nor left frozen by the test, inside a step of a ``queue`` workflow they hold."""
    live = {pid for sup in fleet.supervisors for pid in sup.worker_pids()}
    frozen = {pid for pid, periods in faults.stops.items() if periods[-1][1] == FOREVER}
    return sorted((holding(fleet.db, queue) & inside_step(ledger) & live) - set(faults.killed) - frozen)


def kill(pid: int, faults: Faults) -> None:
    """SIGKILL ``pid``; its executions end at the instant recorded after the signal was sent."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - died on its own meanwhile
        pass
    faults.killed[pid] = time.monotonic()


def freeze(pid: int, db: DbTarget, faults: Faults) -> bool:
    """SIGSTOP ``pid`` outside a write transaction (see fleet_support.suspend_outside_write); False if it is gone."""
    try:
        stopped = suspend_outside_write(psutil.Process(pid), db)
    except psutil.NoSuchProcess:
        return False
    faults.stops.setdefault(pid, []).append((stopped, FOREVER))
    return True


def thaw(pid: int, faults: Faults) -> None:
    """SIGCONT ``pid``; if its supervisor killed it while frozen, it never executed again."""
    stopped, _ = faults.stops[pid][-1]
    if gone(pid):
        faults.killed[pid] = time.monotonic()
        return
    faults.stops[pid][-1] = (stopped, time.monotonic())  # before the signal: it executed nothing earlier
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:  # pragma: no cover
        faults.killed[pid] = time.monotonic()


def wreak(fleet: Fleet, queue: str, ledger: Path, plan: list[str], seed: int) -> Faults:  # noqa: F811
    """Apply ``plan`` (``kill``, ``stop`` or ``pause``) to random workers inside a step of ``queue``, one at a time.

    ``kill``: SIGKILL. ``stop``: SIGSTOP until every workflow it held was taken by another worker (or
    its supervisor killed it as frozen), then SIGCONT. ``pause``: SIGSTOP until some other workflow of
    the queue completes, then SIGCONT. After each fault, wait for two more completions.
    """
    rng, faults = random.Random(seed), Faults()
    total = query(fleet.db, "SELECT COUNT(*) AS n FROM workflows WHERE queue = ?", (queue,))[0]["n"]

    def victims() -> list[int] | str:
        return busy_pids(fleet, queue, ledger, faults) or ("all done" if completed(fleet.db, queue) == total else [])

    for action in plan:
        found = wait_for(victims, 60, f"a worker inside a step of queue {queue}", interval=0.01)
        if found == "all done":
            break
        assert isinstance(found, list)
        pid, before = rng.choice(found), completed(fleet.db, queue)
        if action == "kill":
            kill(pid, faults)
        elif freeze(pid, fleet.db, faults):
            if action == "stop":
                wait_for(lambda: gone(pid) or not holding(fleet.db, queue, pid), 60, f"pid {pid}'s work taken over")
            else:
                wait_for(lambda: gone(pid) or completed(fleet.db, queue) > before, 60, "a completion while frozen")
            thaw(pid, faults)
        wait_for(lambda: completed(fleet.db, queue) >= min(total, before + 2), 60, f"progress after a {action}")
    return faults


# --------------------------------------------------------------------------- tests

RUNNING_IN_QUEUE = "SELECT COUNT(*) FROM workflows WHERE queue = ? AND status = 'RUNNING'"


def test_a_queue_s_concurrency_holds_across_two_supervisors_under_kills_and_stops(
    fleet: Fleet, tmp_path: Path  # noqa: F811
) -> None:
    """At most ``concurrency`` workflows of the queue RUNNING, fleet-wide, whatever is killed or frozen.

    The database never shows more than the limit RUNNING; the ledger never shows more executions at
    once, with one documented exception that the engine cannot prevent: a worker frozen (SIGSTOP)
    mid-step loses its lease after the TTL, another worker takes the workflow over (it keeps its
    RUNNING slot), and when the frozen worker is resumed its step thread runs on until the step
    function returns; only its checkpoint is fenced. That resumed *zombie* can overlap its own copy
    and the other holders, one execution above the limit. The ledger check cuts each such zombie at
    the instant it was frozen and prints it as evidence; everything else must stay within the limit.
    """
    limit, ledger = LIMITED.concurrency, tmp_path / "ledger"
    assert limit is not None
    for _ in range(2):
        fleet.start(workers=3, ttl=TTL, ready=False, extra=("--concurrency", "2"), app=QUEUE_APP)
    for supervisor in fleet.supervisors:
        supervisor.wait_ready()
    ids = submit_all(fleet.db, "qf_limited", {f"c{i}": {"ledger": str(ledger), "hold": 0.3} for i in range(40)})
    observer = Observer(fleet.db, RUNNING_IN_QUEUE, (LIMITED.name,))
    observer.start()
    faults = wreak(fleet, LIMITED.name, ledger, ["kill", "stop", "kill", "pause", "kill", "stop", "kill"], seed=11)
    wait_status(fleet.db, ids, "COMPLETED", timeout=90)
    assert observer.finish() == limit  # the limit was reached, never exceeded

    runs = executions(read_entries(ledger), faults.killed, faults.stops)
    zombies = resumed_zombies(runs, faults)
    print(
        f"\nledger: {len(runs)} executions, at most {most_at_once(runs)} at once; {len(faults.killed)} pids killed, "
        f"{len(faults.stops)} stopped ({sum(p[-1][1] < FOREVER for p in faults.stops.values())} resumed), "
        f"{len(zombies)} resumed zombie(s)"
    )
    assert most_at_once(without_zombie_tails(runs, zombies)) == limit
    for zombie, _ in zombies:  # what the engine does guarantee: the zombie's result was fenced out
        recorded = json.loads(workflow_row(fleet.db, zombie.workflow_id)["result"])["work"]
        assert recorded != {"pid": zombie.pid, "attempt": zombie.attempt}, recorded
    stops = sum(len(periods) for periods in faults.stops.values())  # one pid may be picked twice
    assert len(faults.killed) >= 4 and stops >= 2, faults
    assert {r.workflow_id for r in runs} == set(ids)


def test_per_key_concurrency_holds_under_kills(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    """``per_key_concurrency=1``: never two workflows of one ``concurrency_key`` at once, while workers are killed."""
    ledger = tmp_path / "ledger"
    fleet.start(workers=3, ttl=TTL, extra=("--concurrency", "2"), app=QUEUE_APP)
    ids = []
    for k in range(4):
        items = {f"k{k}-{i}": {"ledger": str(ledger), "hold": 0.3, "key": f"key{k}"} for i in range(5)}
        ids += submit_all(fleet.db, "qf_step", items, queue=KEYED.name, concurrency_key=f"key{k}")
    per_key = RUNNING_IN_QUEUE + " AND concurrency_key IS NOT NULL GROUP BY concurrency_key"
    observer = Observer(fleet.db, per_key, (KEYED.name,))
    observer.start()
    faults = wreak(fleet, KEYED.name, ledger, ["kill"] * 4, seed=12)
    wait_status(fleet.db, ids, "COMPLETED", timeout=90)
    assert observer.finish() == KEYED.per_key_concurrency == 1

    runs = executions(read_entries(ledger), faults.killed, faults.stops)
    assert most_at_once_by(runs, lambda r: r.key) == 1
    assert most_at_once(runs) >= 2  # the keys ran side by side: the limit is per key, not per queue
    assert len(faults.killed) >= 3, faults


def test_priority_orders_claims_fifo_within_a_priority(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    """One worker, one slot, busy with a blocker: what was submitted meanwhile starts by priority, then in order."""
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    fleet.start(workers=1, ttl=TTL, app=QUEUE_APP)
    blocker = {"blocker": {"ledger": str(ledger), "release": str(release)}}
    submit_all(fleet.db, "qf_step", blocker, queue=PRIORITIES.name)
    wait_for(lambda: inside_step(ledger), 60, "the blocker to be inside its step")
    priorities = [0, 5, 1, 5, -3, 9, 0, 1, 5, 9, 0]
    ids = [f"p{n:02d}-prio{priority}" for n, priority in enumerate(priorities)]
    values = {"ledger": str(ledger)}
    for workflow_id, priority in zip(ids, priorities):  # one submit each: FIFO is by submit time
        submit_all(fleet.db, "qf_step", {workflow_id: values}, queue=PRIORITIES.name, priority=priority)
    release.touch()
    wait_status(fleet.db, ["blocker", *ids], "COMPLETED", timeout=60)

    expected = sorted(ids, key=lambda wid: (-priorities[ids.index(wid)], ids.index(wid)))
    started = [e.workflow_id for e in read_entries(ledger) if e.event == "enter"]
    assert started == ["blocker", *expected]
    rows = query(fleet.db, "SELECT id FROM workflows WHERE queue = ? ORDER BY started_at", (PRIORITIES.name,))
    assert [r["id"] for r in rows] == ["blocker", *expected]


def test_worker_concurrency_caps_each_worker_of_a_wider_fleet(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    """``worker_concurrency=1`` on workers with 4 slots each: never two of the queue's workflows in one worker."""
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    fleet.start(workers=2, ttl=TTL, extra=("--concurrency", "4"), app=QUEUE_APP)
    held = {"ledger": str(ledger), "release": str(release)}
    free = submit_all(fleet.db, "qf_step", {f"free{i}": dict(held) for i in range(4)})
    wait_for(lambda: len(read_entries(ledger)) == 4, 60, "the 4 free workflows to be inside their step")
    sql = (
        "SELECT COUNT(*) FROM workflows f JOIN leases l ON l.workflow_id = f.id "
        "WHERE f.queue = ? AND f.status = 'RUNNING' GROUP BY l.worker_id"
    )
    observer = Observer(fleet.db, sql, (PER_WORKER.name,))
    observer.start()
    items = {f"w{i}": {"ledger": str(ledger), "hold": 0.3} for i in range(8)}
    capped = submit_all(fleet.db, "qf_step", items, queue=PER_WORKER.name)
    wait_status(fleet.db, capped, "COMPLETED", timeout=60)
    release.touch()
    wait_status(fleet.db, free, "COMPLETED", timeout=60)
    assert observer.finish() == PER_WORKER.worker_concurrency == 1

    runs = executions(read_entries(ledger))
    assert most_at_once_by([r for r in runs if r.workflow_id in capped], lambda r: r.pid) == 1
    assert most_at_once_by(runs, lambda r: r.pid) >= 2  # a worker did run several workflows at once
