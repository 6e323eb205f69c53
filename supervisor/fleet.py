"""The supervisor's settings and the bookkeeping of its processes: slots, process groups, step clocks.

Every duration here is measured on the monotonic clock (``time.monotonic()``),
so a wall-clock jump can neither make the supervisor kill a healthy worker nor
stall a respawn or a shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field

from durable_workers.liveness import FROZEN_HEARTBEAT_TTLS
from durable_workers.records import StepRecord


@dataclass(frozen=True)
class SupervisorOptions:
    """Fleet settings.

    ``workers``: processes kept alive. ``concurrency``: workflows per worker.
    ``ttl``: lease lifetime. ``shutdown_timeout``: seconds a graceful stop may
    take before SIGKILL. ``timeout_grace``: extra seconds a step may overrun
    its ``timeout`` before its worker is killed. ``frozen_after_ttls``: a
    worker whose heartbeat is older than that many of its TTLs (plus any
    recent database stall) is killed and replaced. ``worker_retention``:
    seconds a dead or stopped worker row is kept; ``prune_interval``: seconds
    between two prunes.
    """

    workers: int = 4
    concurrency: int = 1
    ttl: float = 15.0
    shutdown_timeout: float = 30.0
    respawn_backoff: float = 0.5
    respawn_backoff_max: float = 30.0
    stable_after: float = 10.0
    reap_interval: float = 1.0
    timeout_grace: float = 2.0
    frozen_after_ttls: float = FROZEN_HEARTBEAT_TTLS
    worker_retention: float = 3600.0
    prune_interval: float = 60.0
    log_level: str = "INFO"


#: (workflow_id, step_key, attempts): one attempt of one step.
StepAttempt = tuple[str, str, int]


@dataclass
class Slot:
    """One place in the fleet and the process currently filling it (times are monotonic)."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    worker_id: str | None = None
    started: float = 0.0
    backoff: float = 0.0
    respawn_at: float = 0.0
    deaths: int = 0
    killed_for: str | None = field(default=None)

    def alive(self) -> bool:
        """True while the slot's process runs (not yet reaped by ``poll``)."""
        return self.process is not None and self.process.poll() is None


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``signal 9 (SIGKILL)``."""
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> bool:
    """Send ``signum`` to process group ``pgid``; False when the group no longer exists.

    Workers are spawned with ``start_new_session``, so a worker's pgid is its
    pid, and the subprocesses its steps started are in the group. Linux does
    not hand out a PID that is still some group's id, so the group of a reaped
    worker is still that worker's for as long as any member lives.
    """
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_group_if_exited(proc: subprocess.Popen[bytes]) -> None:
    """If ``proc`` has exited but is not reaped yet, SIGKILL what is left of its process group.

    Checked with ``waitid(WNOWAIT)``: while the worker is an unreaped zombie
    its PID (the group id) cannot be reused, so the kill cannot reach an
    unrelated process. ``proc.poll()`` reaps it afterwards.
    """
    if proc.returncode is not None:
        return
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return
    if info is not None:
        kill_group(proc.pid)


class StepWatch:
    """When the supervisor first saw each step attempt RUNNING, on its monotonic clock.

    A step's timeout is ``deadline - started_at`` (both written by its worker,
    so wall-clock steps cancel out); how long it has run is measured from the
    supervisor's first sighting. A supervisor that starts late sees a step
    late and only ever kills later, never sooner.
    """

    def __init__(self) -> None:
        self._first_seen: dict[StepAttempt, float] = {}

    def overdue(self, rows: list[StepRecord], *, mono: float, grace: float) -> list[tuple[StepRecord, float]]:
        """The rows that ran past their timeout plus ``grace``, each with the seconds seen running.

        Forgets attempts that are no longer in ``rows``.
        """
        seen: dict[StepAttempt, float] = {}
        late = []
        for row in rows:
            if row.deadline is None:
                continue
            key = (row.workflow_id, row.step_key, row.attempts)
            first = self._first_seen.get(key, mono)
            seen[key] = first
            timeout = row.deadline - (row.started_at if row.started_at is not None else row.deadline)
            if mono - first > timeout + grace:
                late.append((row, mono - first))
        self._first_seen = seen
        return late
