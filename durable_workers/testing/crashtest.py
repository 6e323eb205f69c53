"""The crash test: a workflow killed at every step boundary must end as if it never crashed.

:func:`verify` runs the workflow once cleanly, then once per crash point —
before, after-returning and after-recording every step the clean run recorded
(parallel branches, sleeps, message waits and child starts included: they are
steps too), and around its first suspend when it waits — each time in a real
subprocess that SIGKILLs itself there and is resumed to the end. Each point is
judged (:class:`PointResult`): the same end (status, result, error type) as the
clean run; no step that was COMPLETED at the kill started again; no declared
side effect (:func:`~durable_workers.testing.effect`) ran twice for one step
call unless both runs gave it the same idempotency key.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..attempt import CRASH_POINTS, SUSPEND_POINT
from ..registry import default_registry
from .effects import Effect
from .runs import Plan, RunEnd, VerifyError, run_to_end, stop_all

#: Defaults of :func:`verify`: seconds one process may take, crash points run at once.
DEFAULT_TIMEOUT, DEFAULT_JOBS = 120.0, 2


@dataclass(frozen=True)
class CrashPoint:
    """Where a run is killed: ``point`` (before, returned, after) of step ``target``, or around the suspend."""

    target: str
    point: str

    @property
    def spec(self) -> str:
        """The ``--crash-at`` value."""
        return f"{self.target}:{self.point}"

    @property
    def label(self) -> str:
        """``before charge#1``, ``returned charge#1``, ``after charge#1``, ``before suspend``."""
        return f"{self.point} {'suspend' if self.target == SUSPEND_POINT else self.target}"


@dataclass
class PointResult:
    """How the run killed at one crash point ended, against the clean run."""

    point: CrashPoint
    end: RunEnd
    same_end: bool
    reexecuted: list[str] = field(default_factory=list)  # steps COMPLETED at the kill that started again
    doubled: list[str] = field(default_factory=list)  # side effects run twice without one idempotency key
    deduplicated: list[str] = field(default_factory=list)  # run twice, but under the same key (harmless)

    @property
    def reached(self) -> bool:
        """The run really died at this point (a run that took another path never reaches it)."""
        return self.end.killed

    @property
    def ok(self) -> bool:
        """Reached, same end, nothing completed ran again, no side effect doubled."""
        return self.reached and self.same_end and not self.reexecuted and not self.doubled


@dataclass
class CrashReport:
    """A crash test's outcome: the clean run and every crash point's result."""

    name: str
    input: dict[str, Any] | None
    clean: RunEnd
    points: list[PointResult]

    @property
    def ok(self) -> bool:
        """Every crash point passed."""
        return all(p.ok for p in self.points)

    def problems(self) -> list[str]:
        """One line per failed check, naming the crash point."""
        found = []
        for p in self.points:
            if not p.reached:
                found.append(f"{p.point.label}: never reached (the run took another path than the clean run)")
            if p.reached and not p.same_end:
                found.append(f"{p.point.label}: {_difference(p.end, self.clean)}")
            found += [f"{p.point.label}: completed step {key} executed again" for key in p.reexecuted]
            found += [f"{p.point.label}: {text}" for text in p.doubled]
        return found

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (``durable verify --json``)."""
        return {
            "name": self.name, "input": self.input, "ok": self.ok,
            "clean": {"status": self.clean.status, "result": self.clean.result, "error": self.clean.error,
                      "steps": self.clean.order},
            "points": [
                {"crash_at": p.point.spec, "reached": p.reached, "same_end": p.same_end, "status": p.end.status,
                 "reexecuted": p.reexecuted, "doubled": p.doubled, "deduplicated": p.deduplicated, "ok": p.ok}
                for p in self.points
            ],
            "problems": self.problems(),
        }  # fmt: skip


def _end_text(end: RunEnd) -> str:
    return end.status + (f" ({end.error})" if end.error else "")


def _difference(end: RunEnd, clean: RunEnd) -> str:
    """How a crashed run's end differs from the clean run's, in one line."""
    if (end.status, end.error) != (clean.status, clean.error):
        return f"ended {_end_text(end)}, the clean run {_end_text(clean)}"
    ours, theirs = _result_text(end), _result_text(clean)
    return f"ended {end.status} with the result {ours[:120]}, the clean run {theirs[:120]}"


def crash_points(clean: RunEnd) -> list[CrashPoint]:
    """Every crash point of the clean run's steps, in order; the suspend's two when it waited.

    A step that ended FAILED in the clean run has only ``before``: its function never returned.
    """
    found = [
        CrashPoint(key, point) for key in clean.order
        for point in (CRASH_POINTS if key in clean.completed else CRASH_POINTS[:1])
    ]  # fmt: skip
    if clean.waited:  # it really suspended (a sleep of 0 or a message already there does not)
        found += [CrashPoint(SUSPEND_POINT, "before"), CrashPoint(SUSPEND_POINT, "after")]
    return found


def _normal(text: str, workflow_id: str) -> str:
    """``text`` with the run's workflow id replaced, so runs under different ids compare."""
    return text.replace(workflow_id, "<id>")


def _result_text(end: RunEnd) -> str:
    """The result as JSON, the run's id and its recorded ``now``/``uuid4``/``random`` values masked."""
    text = json.dumps(end.result, sort_keys=True)
    for key, output in sorted(end.recorded.items(), key=lambda item: -len(item[1])):
        text = text.replace(output, f"<{key}>")
    return _normal(text, end.workflow_id)


def _end_of(end: RunEnd) -> tuple[str, str, str | None]:
    return end.status, _result_text(end), end.error


def _effect_groups(end: RunEnd) -> dict[tuple[str, str, str], list[Effect]]:
    groups: dict[tuple[str, str, str], list[Effect]] = defaultdict(list)
    for e in end.effects:
        groups[(_normal(e.workflow_id, end.workflow_id), e.step_key, e.name)].append(e)
    return groups


def judge(point: CrashPoint, end: RunEnd, clean: RunEnd) -> PointResult:
    """Compare the run killed at ``point`` with the clean run."""
    result = PointResult(point, end, same_end=_end_of(end) == _end_of(clean))
    result.reexecuted = [k for k, starts in end.completed_at_kill.items() if end.attempts.get(k, 0) > starts]
    baseline = Counter({k: len(v) for k, v in _effect_groups(clean).items()})
    for (workflow, step_key, name), runs in _effect_groups(end).items():
        if len(runs) <= baseline[(workflow, step_key, name)]:
            continue
        keys = {None if e.key is None else _normal(e.key, end.workflow_id) for e in runs}
        where = f'"{name}" in step {step_key}' + ("" if workflow == "<id>" else f" of {workflow}")
        if None in keys:
            result.doubled.append(f"{where} ran {len(runs)} times without an idempotency key")
        elif len(keys) > 1:
            result.doubled.append(f"{where} ran {len(runs)} times under different idempotency keys")
        else:
            result.deduplicated.append(f"{where} ran {len(runs)} times under one idempotency key")
    return result


def _app_of(name: str) -> str:
    module = default_registry.get(name).fn.__module__
    if module == "__main__":
        raise VerifyError(f"workflow {name!r} is defined in __main__; define it in a module the test can import")
    return module


def verify(
    name: str,
    input: dict[str, Any] | None = None,
    *,
    app: str | None = None,
    db: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int = DEFAULT_JOBS,
    on_point: Callable[[PointResult, int, int], None] | None = None,
) -> CrashReport:
    """Crash-test workflow ``name`` with ``input``: one clean run, then one run per crash point.

    ``app``: the module or ``.py`` file defining it (default: the module the
    registered function comes from). ``db``: a ``postgresql://`` URL or SQLite
    path for the runs (default: a SQLite file in a temporary folder, removed
    afterwards); each run has its own workflow id. ``timeout``: seconds one
    process may take. ``jobs``: crash points run at once. ``on_point`` is
    called with each point's result as it ends, the number ended so far and
    the number of points (for progress output; from the pool's threads, one
    call at a time).
    Raises :class:`VerifyError` when a run cannot be made at all.
    """
    folder = Path(tempfile.mkdtemp(prefix="durable-verify-"))
    try:
        plan = Plan(name, input, app or _app_of(name), db or str(folder / "verify.db"), folder, timeout)
        run_id = f"verify-{secrets.token_hex(4)}"
        clean = run_to_end(plan, f"{run_id}-clean")
        points = crash_points(clean)
        ended, lock = [0], threading.Lock()

        def one(numbered: tuple[int, CrashPoint]) -> PointResult:
            index, point = numbered
            result = judge(point, run_to_end(plan, f"{run_id}-{index:04d}", point.spec), clean)
            with lock:
                ended[0] += 1
                if on_point is not None:
                    on_point(result, ended[0], len(points))
            return result

        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            results = list(pool.map(one, enumerate(points)))
        except BaseException:  # a run that cannot be made, or Ctrl-C: stop the others at once
            pool.shutdown(wait=False, cancel_futures=True)
            stop_all()
            raise
        pool.shutdown()
        return CrashReport(name, input, clean, results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_crash_safe(name: str, input: dict[str, Any] | None = None, **options: Any) -> CrashReport:
    """:func:`verify`, raising ``AssertionError`` with every problem when a crash point fails; returns the report."""
    report = verify(name, input, **options)
    if not report.ok:
        raise AssertionError(f"{name} is not crash-safe:\n  " + "\n  ".join(report.problems()))
    return report
