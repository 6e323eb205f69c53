"""Running one workflow in real subprocesses, killed at a crash point and resumed to its end.

Each run is ``python -m durable_workers run NAME ID`` (the code path of
``durable run``): the first process is given ``--crash-at POINT`` and SIGKILLs
itself there; the same command without it resumes the workflow, again while it
asks to be resumed (exit 3), until it ends. :func:`run_to_end` returns what the
database and the effects file hold afterwards (:class:`RunEnd`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import Client
from ..codec import summarize_error
from ..config import NO_TIMEOUT_WAKE_AT
from ..errors import DurableError
from ..records import TERMINAL, Status, StepStatus, WorkflowRecord
from .effects import EFFECTS_ENV, Effect, read_effects

#: ``durable run`` exit codes (see durable_workers.cli): ended, ended FAILED/CANCELLED, to resume.
EXIT_DONE, EXIT_FAILED, EXIT_RESUME = 0, 1, 3
#: Steps whose recorded value differs from run to run by design (masked when results are compared).
RECORDED_VALUES = ("durable:now", "durable:uuid4", "durable:random")
#: Resumes of one run before it counts as stuck (a resume that makes no progress repeats forever).
MAX_RESUMES = 8


class VerifyError(DurableError):
    """The crash test itself could not run (the app does not import, a run hung, ...)."""


@dataclass(frozen=True)
class Plan:
    """What every run of one crash test shares."""

    name: str
    input: dict[str, Any] | None
    app: str
    db: str
    workdir: Path
    timeout: float  # seconds one process may take


@dataclass
class RunEnd:
    """One run's end: the workflow's row, its steps' start counts and the effects its processes declared."""

    workflow_id: str
    killed: bool  # the first process died by SIGKILL at its crash point
    processes: int
    status: str
    result: Any
    error: str | None
    attempts: dict[str, int] = field(default_factory=dict)  # step key -> starts recorded
    order: list[str] = field(default_factory=list)  # step keys, in the order they were recorded
    names: dict[str, str] = field(default_factory=dict)  # step key -> step name
    completed: set[str] = field(default_factory=set)  # keys of the steps that ended COMPLETED
    effects: list[Effect] = field(default_factory=list)
    completed_at_kill: dict[str, int] = field(default_factory=dict)  # step key -> starts, when it was killed
    waited: bool = False  # the workflow suspended (WAITING) at least once
    recorded: dict[str, str] = field(default_factory=dict)  # key -> output of each recorded now/uuid4/random


def _command(plan: Plan, workflow_id: str, *, first: bool, crash_at: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "durable_workers", "run", plan.name, workflow_id, "--db", plan.db, "--app", plan.app]
    if first and plan.input is not None:
        cmd += ["--input", json.dumps(plan.input)]
    if crash_at is not None:
        cmd += ["--crash-at", crash_at]
    return cmd


def _environment(effects: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[EFFECTS_ENV] = str(effects)
    # the user's modules import in the subprocess as they do here (tests run from anywhere)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path, env.get("PYTHONPATH", "")] if p)
    return env


_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()


def stop_all() -> None:
    """SIGKILL every run's process still going (a crash test that stops early leaves none behind)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _run_process(plan: Plan, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a session of its own (a Ctrl-C of the caller reaches only the caller), within the timeout."""
    proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    with _live_lock:
        _live.add(proc)
    try:
        out, err = proc.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise VerifyError(
            f"a run of {plan.name} took over {plan.timeout:g}s (does it sleep long?); raise --timeout or shorten its sleeps"
        ) from None
    finally:
        with _live_lock:
            _live.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _state(plan: Plan, workflow_id: str, proc: subprocess.CompletedProcess[str]) -> WorkflowRecord:
    """The workflow's row after a process ended; :class:`VerifyError` with that process's last line when it has none."""
    client = Client(db=plan.db, create=False)
    try:
        return client.get(workflow_id)
    except DurableError:
        raise VerifyError(f"durable run {plan.name} failed: {_last_line(proc)}") from None
    finally:
        client.close()


def _ended(plan: Plan, workflow_id: str, proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether the process left the workflow ended; raises :class:`VerifyError` when it never can here."""
    if proc.returncode == EXIT_DONE:
        return True
    if proc.returncode not in (-signal.SIGKILL, EXIT_RESUME, EXIT_FAILED):
        raise VerifyError(f"durable run {plan.name} failed: {_last_line(proc)}")
    record = _state(plan, workflow_id, proc)
    if record.status in TERMINAL:
        return True
    if record.status == Status.WAITING.value and (record.wake_at or 0.0) >= NO_TIMEOUT_WAKE_AT:
        raise VerifyError(
            f"{plan.name} waits for a message with no timeout, which nobody sends in a crash test: "
            "verify it with an input that does not wait, or give ctx.recv a timeout"
        )
    return False  # killed, handed back (exit 3), or stopped by a busy store (exit 1): resume it


def run_to_end(plan: Plan, workflow_id: str, crash_at: str | None = None) -> RunEnd:
    """Run ``workflow_id`` (first killed at ``crash_at``, if given) and resume it until it ends."""
    effects = plan.workdir / f"{workflow_id}.effects"
    env = _environment(effects)
    proc = _run_process(plan, _command(plan, workflow_id, first=True, crash_at=crash_at), env)
    killed = proc.returncode == -signal.SIGKILL
    at_kill = _completed_steps(plan, workflow_id) if killed else {}
    processes = 1
    while not _ended(plan, workflow_id, proc):
        if processes > MAX_RESUMES:
            raise VerifyError(f"{workflow_id} did not end after {MAX_RESUMES} resumes: {_last_line(proc)}")
        proc = _run_process(plan, _command(plan, workflow_id, first=False, crash_at=None), env)
        processes += 1
    end = _read_end(plan, workflow_id, killed, processes, effects)
    end.completed_at_kill = at_kill
    return end


def _completed_steps(plan: Plan, workflow_id: str) -> dict[str, int]:
    """Step key -> starts of every step COMPLETED when the first process was killed."""
    client = Client(db=plan.db, create=False)
    try:
        return {s.step_key: s.attempts for s in client.steps(workflow_id) if s.status == StepStatus.COMPLETED.value}
    finally:
        client.close()


def _read_end(plan: Plan, workflow_id: str, killed: bool, processes: int, effects: Path) -> RunEnd:
    client = Client(db=plan.db, create=False)
    try:
        record = client.get(workflow_id)
        steps = sorted(client.steps(workflow_id), key=lambda s: (s.started_at or 0.0, s.step_key))
    finally:
        client.close()
    error = summarize_error(record.error).split(":", 1)[0] or None  # the error's type, not its text
    return RunEnd(
        workflow_id=workflow_id, killed=killed, processes=processes, status=record.status, result=record.result,
        error=error, attempts={s.step_key: s.attempts for s in steps}, order=[s.step_key for s in steps],
        names={s.step_key: s.name for s in steps}, effects=read_effects(effects),
        completed={s.step_key for s in steps if s.status == StepStatus.COMPLETED.value},
        waited=record.wake_at is not None,
        recorded={s.step_key: s.output for s in steps if s.name in RECORDED_VALUES and s.output is not None},
    )  # fmt: skip
