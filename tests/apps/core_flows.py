"""Workflows for the core-engine tests (tests/unit/test_core_engine.py, tests/integration/test_run_cli.py).

Side effects append one line per *execution* to a file, without any deduplication, so a step
that ran twice is visible. A ``halt`` step raises :class:`SimulatedCrash` while its
``halt_file`` exists: that stands in for ``kill -9`` inside the test process (the step row
stays RUNNING, the workflow stays RUNNING), and deleting the file lets the next run finish.
Every name here starts with ``core_`` so it cannot collide with other test apps.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from durable_workers import Context, DurableError, DurableInterrupt, NotSerializableError, step, workflow


class SimulatedCrash(DurableInterrupt):
    """A crash inside the test process: neither the engine nor a workflow catches it.

    An interrupt the engine has no handler for propagates out of the attempt
    without recording or releasing anything, as ``kill -9`` would. (A foreign
    ``BaseException`` would be recorded as the step's failure instead.)
    """


def record_call(path: str, label: str) -> int:
    """Append ``label`` to ``path`` (no deduplication); return how many times ``label`` is there now."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(label + "\n")
    return calls_of(path).count(label)


def calls_of(path: str | os.PathLike[str]) -> list[str]:
    """The labels appended by :func:`record_call`, in order."""
    target = Path(path)
    return target.read_text(encoding="utf-8").splitlines() if target.exists() else []


def halt(halt_file: str | None) -> None:
    """Step body: crash while ``halt_file`` exists, otherwise do nothing."""
    if halt_file and os.path.exists(halt_file):
        raise SimulatedCrash(halt_file)


def _jitter() -> None:
    """A random pause, so that parallel branches interleave differently on every run."""
    time.sleep(random.uniform(0, 0.003))


# --------------------------------------------------------------------------- onboarding copy


def effects_log_of(db: str) -> Path:
    """The side-effect file of database ``db``: next to a SQLite file; for a PostgreSQL URL, a
    file named after the database in the temporary folder (the caller removes it)."""
    if "://" in db:
        return Path(tempfile.gettempdir()) / f"core_effects-{urlsplit(db).path.lstrip('/')}.log"
    return Path(db).parent / "core_effects.log"


def core_effects_log(ctx: Context) -> Path:
    """The side-effect file of the database this workflow runs on."""
    return effects_log_of(str(ctx.database_path))


def _effect(ctx: Context, action: str) -> dict[str, str]:
    """Append ``step_key<TAB>action`` for every execution (deliberately NOT idempotent)."""
    fd = os.open(core_effects_log(ctx), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.step_key}\t{action}\n".encode())
    finally:
        os.close(fd)
    return {"action": action, "key": ctx.idempotency_key}


@workflow
def core_onboarding(ctx: Context, employee_id: str | None = None) -> dict:
    """examples/onboarding.py with non-idempotent effects: a double execution shows in the log."""
    emp = employee_id or ctx.workflow_id
    record = ctx.step("create_record", lambda: _effect(ctx, "create_record"))
    laptop, access = ctx.parallel(
        lambda: ctx.step("provision_laptop", lambda: _effect(ctx, "provision_laptop")),
        lambda: ctx.step("provision_access", lambda: _effect(ctx, "provision_access")),
    )
    ctx.step("send_welcome_email", lambda: _effect(ctx, "send_welcome_email"))
    return {"employee": emp, "record": record["key"], "laptop": laptop["key"], "access": access["key"]}


@workflow
def core_greet(ctx: Context, name: str = "world") -> str:
    """The smallest real workflow: one step."""
    return ctx.step("greet", lambda: f"hello {name}")


# --------------------------------------------------------------------------- memoization


@workflow
def core_counted(ctx: Context, calls: str, halt_file: str | None = None) -> dict:
    """Two steps with unpredictable results; each execution is counted in ``calls``."""
    first = ctx.step("first", lambda: {"call": record_call(calls, "first"), "token": uuid.uuid4().hex})
    second = ctx.step("second", lambda: {"call": record_call(calls, "second"), "token": uuid.uuid4().hex})
    ctx.step("halt", lambda: halt(halt_file))
    return {"first": first, "second": second}


# --------------------------------------------------------------------------- step keys


def _own_key(ctx: Context) -> str:
    _jitter()
    return ctx.step_key


@workflow
def core_shapes(ctx: Context, big: bool = True, halt_file: str | None = None) -> list:
    """A loop, a conditional, a parallel with a loop in one branch and a nested parallel in the other."""
    for _ in range(3):
        ctx.step("charge", lambda: _own_key(ctx))
    if big:
        ctx.step("approve", lambda: _own_key(ctx))
    ctx.step("pay", lambda: _own_key(ctx))

    def laptop_branch() -> list:
        _jitter()
        keys = [ctx.step("provision_laptop", lambda: _own_key(ctx))]
        for _ in range(2):
            keys.append(ctx.step("ping", lambda: _own_key(ctx)))
        return keys

    def x_branch() -> str:
        _jitter()
        return ctx.step("x", lambda: _own_key(ctx))

    def nested_branch() -> list:
        _jitter()
        keys = ctx.parallel(x_branch, x_branch)
        keys.append(ctx.step("after_inner", lambda: _own_key(ctx)))
        return keys

    def notify_branch() -> str:
        _jitter()
        return ctx.step("notify", lambda: _own_key(ctx))

    laptop, nested = ctx.parallel(laptop_branch, nested_branch)
    notified = ctx.parallel(notify_branch, notify_branch)  # the root's second parallel
    ctx.step("finish", lambda: _own_key(ctx))
    ctx.step("halt", lambda: halt(halt_file))
    return laptop + nested + notified


def core_fetch_rate() -> float:
    """A module-level function used as ``ctx.step(core_fetch_rate)``."""
    return 1.5


@workflow
def core_auto_ids(ctx: Context) -> list:
    """Steps without explicit ids: named function, local function, lambdas (one in a loop)."""

    def local_helper() -> str:
        return "local"

    values = [ctx.step(core_fetch_rate), ctx.step(local_helper)]
    values.append(ctx.step(lambda: "single"))  # AUTO-ID single lambda
    for i in range(2):
        values.append(ctx.step(lambda i=i: i))  # AUTO-ID looped lambda
    return values


@workflow
def core_keys_inside(ctx: Context) -> dict:
    """``ctx.step_key`` / ``ctx.idempotency_key`` inside steps (plain, repeated, timed, in a branch)."""

    def probe() -> list:
        return [ctx.step_key, ctx.idempotency_key]

    try:
        outside = ctx.step_key
    except DurableError as exc:
        outside = f"{type(exc).__name__}: {exc}"
    probes = [ctx.step("probe", probe), ctx.step("probe", probe), ctx.step("probe", probe, timeout=30)]
    probes += ctx.parallel(lambda: ctx.step("probe", probe))
    empty = ctx.parallel()
    return {"outside": outside, "probes": probes, "empty": empty}


# --------------------------------------------------------------------------- determinism

#: Step names each variant calls, in order; ``v1`` is the recorded version. A name ending in
#: ``?`` is called inside ``try/except DurableError`` (the code swallows the error); one ending
#: in ``||`` is called in a parallel branch (a scope with nothing recorded).
VERSIONS: dict[str, list[str]] = {
    "v1": ["a", "b", "halt"],
    "renamed": ["a", "c", "halt"],
    "swapped": ["b", "a", "halt"],
    "looped": ["a", "a", "halt"],
    "shortened": ["a"],
    "swallowed": ["a", "c?", "d||"],
}


def _crash() -> None:
    raise SimulatedCrash("v1 always stops at its halt step")


@workflow
def core_versioned(ctx: Context, version_file: str, calls: str) -> list:
    """Its code 'changes' when the test rewrites ``version_file`` between runs."""
    version = Path(version_file).read_text(encoding="utf-8").strip()
    done: list = []
    for spec in VERSIONS[version]:
        name = spec.rstrip("?|")
        body: Callable[[], Any] = _crash if name == "halt" else (lambda name=name: record_call(calls, name))
        if spec.endswith("||"):
            done += ctx.parallel(lambda name=name, body=body: ctx.step(name, body))
        elif spec.endswith("?"):
            try:
                done.append(ctx.step(name, body))
            except DurableError as exc:
                done.append(type(exc).__name__)
        else:
            done.append(ctx.step(name, body))
    return done


# --------------------------------------------------------------------------- retries and failures


def _flaky(calls: str, fail_times: int) -> int:
    attempt = record_call(calls, "flaky")
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@workflow
def core_retry(ctx: Context, calls: str, fail_times: int, retries: int = 2) -> int:
    """``ctx.step(..., retries=, backoff=)``: fails ``fail_times`` times, then succeeds."""
    return ctx.step("flaky", lambda: _flaky(calls, fail_times), retries=retries, backoff=0.01)


@step(retries=2, backoff=0.01)
def core_decorated_charge(calls: str, fail_times: int) -> int:
    """A durable step by decorator, with its own retry policy."""
    return _flaky(calls, fail_times)


@workflow
def core_retry_decorated(ctx: Context, calls: str, fail_times: int) -> int:
    """Calls the ``@step`` function like a plain function."""
    return core_decorated_charge(calls, fail_times)


class CoreDeclined(Exception):
    """A custom error whose arguments rebuild it on replay."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(what, code)
        self.what, self.code = what, code

    def __str__(self) -> str:
        return f"{self.what} declined with code {self.code}"


class CoreOpaque(Exception):
    """An error that cannot be rebuilt from its args (keyword-only constructor)."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"opaque failure {code}")


FAILURES: dict[str, Callable[[], Exception]] = {
    "builtin": lambda: ValueError("card 42 declined"),
    "custom": lambda: CoreDeclined("card", 42),
    "opaque": lambda: CoreOpaque(code=7),
}


def _fail(calls: str, kind: str) -> None:
    record_call(calls, "charge")
    raise FAILURES[kind]()


@workflow
def core_catcher(ctx: Context, calls: str, kind: str, halt_file: str | None = None) -> dict:
    """Catches a failing step and takes a compensation branch; reports the exception it saw."""
    branch, seen, first_seen = "paid", None, None
    try:
        ctx.step("charge", lambda: _fail(calls, kind))
    except Exception as exc:
        seen = {"type": type(exc).__name__, "message": str(exc)}
        first_seen = ctx.step("refund", lambda: seen)
        branch = "refund"
    ctx.step("halt", lambda: halt(halt_file))
    return {"branch": branch, "seen": seen, "first_seen": first_seen}


# --------------------------------------------------------------------------- JSON rule


@workflow
def core_json(ctx: Context, halt_file: str | None = None) -> dict:
    """A step returning a tuple: the workflow sees a list on the first run and on replay."""
    pair = ctx.step("pair", lambda: (1, "two"))
    first_run = ctx.step("seen", lambda: type(pair).__name__)
    ctx.step("halt", lambda: halt(halt_file))
    return {"pair": pair, "first_run": first_run, "this_run": type(pair).__name__}


UNSERIALISABLE: dict[str, Callable[[], Any]] = {
    "set": lambda: {1, 2},
    "object": object,
    "bytes": lambda: b"raw",
    "nan": lambda: float("nan"),
}


@workflow
def core_unserialisable(ctx: Context, kind: str, calls: str) -> dict:
    """A step returning a value JSON cannot encode; the workflow catches the error."""
    try:
        ctx.step("bad", lambda: (record_call(calls, "bad"), UNSERIALISABLE[kind]())[1])
    except NotSerializableError as exc:
        return {"caught": type(exc).__name__, "message": str(exc)}
    return {"caught": None}


@workflow
def core_bad_result(ctx: Context) -> Any:
    """The workflow itself returns a set."""
    ctx.step("fine", lambda: 1)
    return {1, 2, 3}
