"""Workflows and queues for the fleet tests of queue limits (tests/integration/test_fleet_queues.py).

Each workflow has one step, ``work``, that appends an ``enter`` line to a *ledger* file, holds
for a while (a fixed time, or until a release file exists) and appends an ``exit`` line. Lines
are single ``O_APPEND`` writes, never deduplicated, so a test can rebuild every execution of a
step as an interval of the system-wide monotonic clock and count how many overlapped::

    enter|exit  WORKFLOW_ID  PID  ATTEMPT  MONOTONIC_TIME  KEY

``executions`` turns the ledger into those intervals, given what the test did to which pid
(SIGKILL, SIGSTOP/SIGCONT), and ``most_at_once`` counts the largest overlap.
The queues are declared here, the way an application declares them: every worker of this app
(``--app tests/queue_app.py``) records their limits when it starts. Kept out of ``tests/apps/``,
which every fleet test loads: their claims need not pay for limits they do not use.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from durable_workers import Context, Queue, workflow
from tests.ledger_file import append_line

#: At most this many of its workflows RUNNING at once, fleet-wide.
#: This module as an ``--app`` path.
QUEUE_APP = Path(__file__).resolve()
LIMITED = Queue("qf_limited", concurrency=3)
#: At most one RUNNING workflow per ``concurrency_key``.
KEYED = Queue("qf_keyed", per_key_concurrency=1)
#: At most one RUNNING workflow per worker process.
PER_WORKER = Queue("qf_per_worker", worker_concurrency=1)
#: No limit: claims are ordered by priority only.
PRIORITIES = Queue("qf_priorities")

#: A held step gives up after this long, so a forgotten test never leaves a worker busy forever.
HOLD_LIMIT = 120.0
#: Starts allowed to a step: a chaos test may kill or freeze the same step several times.
MAX_ATTEMPTS = 20
#: The end of an interval that has none.
FOREVER = float("inf")


@dataclass(frozen=True)
class Entry:
    """One ledger line: a step execution entering or leaving ``work``."""

    event: str
    workflow_id: str
    pid: int
    attempt: int
    at: float
    key: str


def _append(ledger: str, ctx: Context, event: str, key: str) -> None:
    line = f"{event} {ctx.workflow_id} {os.getpid()} {ctx.attempt} {time.monotonic():.6f} {key or '-'}\n"
    append_line(ledger, line)


def read_entries(ledger: str | os.PathLike[str]) -> list[Entry]:
    """The ledger's lines in the order they were written (none if it does not exist yet)."""
    path = Path(ledger)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        event, workflow_id, pid, attempt, at, key = line.split(" ")
        entries.append(Entry(event, workflow_id, int(pid), int(attempt), float(at), "" if key == "-" else key))
    return entries


@dataclass
class Execution:
    """One step execution from the ledger: the instants it was executing (its pauses removed)."""

    workflow_id: str
    pid: int
    attempt: int
    key: str
    start: float
    end: float
    segments: list[tuple[float, float]]


def executions(
    entries: list[Entry],
    killed: dict[int, float] | None = None,
    stops: dict[int, list[tuple[float, float]]] | None = None,
) -> list[Execution]:
    """Every execution in the ledger, its pid's pauses removed.

    ``killed``: pid -> when it was SIGKILLed (its executions end then). ``stops``: pid -> its
    ``(SIGSTOP, SIGCONT)`` instants (``FOREVER``: never continued); it executed nothing in between.
    An execution with no ``exit`` line must belong to a killed pid. The instants are the test's
    bounds: a kill and a SIGSTOP are timed after the signal is sent, a SIGCONT before it.
    """
    killed, stops = killed or {}, stops or {}
    opened: dict[tuple[str, int, int], Entry] = {}
    spans: list[tuple[Entry, float]] = []
    for entry in entries:
        ident = (entry.workflow_id, entry.pid, entry.attempt)
        if entry.event == "enter":
            opened[ident] = entry
        else:
            spans.append((opened.pop(ident), entry.at))
    spans += [(entry, FOREVER) for entry in opened.values()]  # killed (or frozen for good) mid-step
    runs = []
    for entry, end in spans:
        death = killed.get(entry.pid, FOREVER)
        if death > entry.at:  # else the pid was reused by a later process
            end = min(end, death)
        assert end < FOREVER, f"execution of {entry.workflow_id} in pid {entry.pid} never ended"
        segments, begin = [], entry.at
        for stopped, continued in sorted(stops.get(entry.pid, [])):
            if stopped >= end or continued <= begin:
                continue  # a pause before or after this execution
            if begin < stopped:
                segments.append((begin, stopped))
            begin = max(begin, continued)
        if begin < end:
            segments.append((begin, end))
        runs.append(Execution(entry.workflow_id, entry.pid, entry.attempt, entry.key, entry.at, end, segments))
    return runs


def most_at_once(runs: Iterable[Execution]) -> int:
    """The largest number of executions executing at one instant (touching intervals do not overlap)."""
    edges = sorted((t, delta) for run in runs for a, b in run.segments for t, delta in ((a, 1), (b, -1)))
    level = highest = 0
    for _, delta in edges:
        level += delta
        highest = max(highest, level)
    return highest


def most_at_once_by(runs: list[Execution], group: Callable[[Execution], Any]) -> int:
    """``most_at_once`` within each group of ``runs``; the largest."""
    groups: dict[Any, list[Execution]] = {}
    for run in runs:
        groups.setdefault(group(run), []).append(run)
    return max((most_at_once(members) for members in groups.values()), default=0)


def inside_step(ledger: str | os.PathLike[str]) -> set[int]:
    """Pids with a step execution open in the ledger now."""
    opened: dict[tuple[str, int, int], int] = {}
    for entry in read_entries(ledger):
        ident = (entry.workflow_id, entry.pid, entry.attempt)
        if entry.event == "enter":
            opened[ident] = entry.pid
        else:
            opened.pop(ident, None)
    return set(opened.values())


def _hold(ledger: str, ctx: Context, seconds: float, release: str, key: str) -> dict[str, int]:
    """Record the entry; wait ``seconds``, then until ``release`` exists (if given); record the exit.

    Returns which execution this was: its ``pid`` and workflow ``attempt``.
    """
    _append(ledger, ctx, "enter", key)
    pause = threading.Event()
    pause.wait(seconds)
    deadline = time.monotonic() + HOLD_LIMIT
    while release and not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"release file {release} never appeared")
        pause.wait(0.02)
    _append(ledger, ctx, "exit", key)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@workflow(queue=LIMITED)
def qf_limited(ctx: Context, ledger: str, hold: float) -> dict:
    """A workflow of the ``qf_limited`` queue by declaration: its step holds ``hold`` seconds."""
    return {"work": ctx.step("work", lambda: _hold(ledger, ctx, hold, "", ""), max_attempts=MAX_ATTEMPTS)}


@workflow
def qf_step(ctx: Context, ledger: str, hold: float = 0.0, release: str = "", key: str = "") -> dict:
    """A workflow for any queue (``submit(queue=...)``): its step holds ``hold`` s, then until ``release`` exists.

    ``key`` is only written to the ledger (pass the submit's ``concurrency_key``).
    """
    return {"work": ctx.step("work", lambda: _hold(ledger, ctx, hold, release, key), max_attempts=MAX_ATTEMPTS)}
