"""Built-in workflows of the chaos experiment (``durable chaos``).

Workers of the experiment run with ``--app durable_workers.checkflows``.

``chaos_check`` exercises every shape of workflow code: sequential steps, a
parallel fan-out, a loop and a conditional. Each of its steps appends one row
to the side-effect ledger (``chaos_ledger``) in its own transaction *before*
doing its work, then returns a value unique to that execution (pid, fencing
token, a nonce). The verdict compares the ledger with the ``steps`` table:
a step executed twice has two ledger rows; a COMPLETED row must hold the value
one of those executions returned. Each attempt also writes an ``@begin`` row
(outside any step) so the verdict knows when a new lease holder took over.

Given ``hazard`` (the experiment's ``foreign`` fault), ``chaos_check`` also
calls a ``hazard`` step; when ``hazard`` names a foreign BaseException
(``KeyboardInterrupt``, ``SystemExit``) that step raises it on its first
execution only (its ledger row says ``raised``). The engine records the step
FAILED and the workflow sees a :class:`StepFailedError`, which it catches to
take the ``fallback`` branch; a hazard step that returned leads to ``proceed``.
Either way the branch follows the recorded outcome, so replay takes it again.

``chaos_short`` is the same with two steps and no work, for contention runs.

The bad-input workflows end in a documented state, with a clear error:

=========================  =========  =========================================
workflow                   state      error
=========================  =========  =========================================
``chaos_unserialisable``   FAILED     ``NotSerializableError`` (returns a set)
``chaos_raises``           FAILED     ``ValueError`` (a step raises, retried once)
``chaos_sleeper``          FAILED     ``StepTimeoutError`` (step sleeps past timeout)
``chaos_unknown`` (*)      PENDING    no live worker registers the name
=========================  =========  =========================================

(*) not registered here: the experiment submits it unchecked. The names and
documented states are listed in :data:`durable_workers.chaos.BAD_INPUT`.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from typing import Any

from .context import Context
from .errors import StepFailedError
from .registry import workflow

#: Starts allowed per check step. The experiment kills workers every few hundred
#: milliseconds, and a step blocked behind the lock fault is killed often; with
#: the default 3 a step could become a poison pill by chance. Check steps are
#: idempotent ledger appends, so they declare a generous limit.
CHECK_MAX_ATTEMPTS = 10


def _record(ctx: Context, key: str, value: dict[str, Any] | None) -> None:
    ctx._store.ledger_append(
        ctx.workflow_id,
        key,
        value_json=None if value is None else json.dumps(value, sort_keys=True),
        worker_id=ctx._worker_id,
        token=ctx._token,
        attempt=ctx.attempt,
    )


def effect(ctx: Context, work_s: float) -> dict[str, Any]:
    """The body of every check step: ledger row first, then ``work_s`` (±50 %) of work.

    The value records when the step function began (``began``), before its
    ledger write could wait for the database lock.
    """
    value = {
        "key": ctx.step_key,
        "pid": os.getpid(),
        "token": ctx._token,
        "nonce": uuid.uuid4().hex[:12],
        "began": time.time(),
    }
    _record(ctx, ctx.step_key, value)
    if work_s > 0:
        threading.Event().wait(work_s * random.uniform(0.5, 1.5))
    return value


def hazard_effect(ctx: Context, hazard: str) -> dict[str, Any]:
    """A hazard step: raises the BaseException named ``hazard`` on its first execution only.

    The ledger row of the raising execution is written first, with ``raised``
    set, so the verdict knows the step raised. Later executions (none, if the
    engine records the failure) and an empty ``hazard`` behave like :func:`effect`.
    """
    first = ctx._store.ledger_executions(ctx.workflow_id, ctx.step_key or "") == 0
    if not hazard or not first:
        return effect(ctx, 0.0)
    value = {"key": ctx.step_key, "pid": os.getpid(), "token": ctx._token, "raised": hazard, "began": time.time()}
    _record(ctx, ctx.step_key or "", value)
    raise {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[hazard]("chaos: foreign exception")


def hazard_branch(ctx: Context, hazard: str, work_s: float) -> tuple[list[dict[str, Any]], bool]:
    """The hazard step then ``proceed``, or ``fallback`` when the hazard step failed; (values, fell back)."""
    try:
        value = ctx.step("hazard", lambda: hazard_effect(ctx, hazard), max_attempts=CHECK_MAX_ATTEMPTS)
    except StepFailedError:
        return [check_step(ctx, "fallback", work_s)], True
    return [value, check_step(ctx, "proceed", work_s)], False


def begin(ctx: Context) -> None:
    """Mark in the ledger that an attempt (fencing token ``ctx._token``) starts."""
    _record(ctx, "@begin", None)


def check_step(ctx: Context, name: str, work_s: float) -> dict[str, Any]:
    """One check step: :func:`effect` as step ``name``."""
    return ctx.step(name, lambda: effect(ctx, work_s), max_attempts=CHECK_MAX_ATTEMPTS)


@workflow(name="chaos_check")
def chaos_check(
    ctx: Context, fan: int = 3, loop: int = 3, work_ms: float = 10.0, hazard: str | None = None
) -> dict[str, Any]:
    """Sequential steps, a fan-out of ``fan`` branches, a loop of ``loop`` steps, a conditional.

    With ``hazard`` (not None) also the hazard step and its branch (see :func:`hazard_branch`).
    """
    work = work_ms / 1000.0
    begin(ctx)
    first = check_step(ctx, "reserve", work)
    second = check_step(ctx, "charge", work)
    shipped = ctx.parallel(*[lambda: check_step(ctx, "ship", work) for _ in range(fan)])
    looped = [check_step(ctx, "notify", work) for _ in range(loop)]
    if int(first["nonce"], 16) % 2 == 0:  # decided by a recorded value: same branch on replay
        decided = check_step(ctx, "audit", work)
    else:
        decided = check_step(ctx, "skip_audit", work)
    hazarded, fell_back = hazard_branch(ctx, hazard, work) if hazard is not None else ([], False)
    last = check_step(ctx, "close", work)
    values = [first, second, *shipped, *looped, decided, *hazarded, last]
    result: dict[str, Any] = {"token": ctx._token, "nonces": {v["key"]: v["nonce"] for v in values}}
    if hazard is not None:
        result["fallback"] = fell_back
    return result


@workflow(name="chaos_short")
def chaos_short(ctx: Context) -> dict[str, Any]:
    """Two steps without work: a short workflow for contention runs."""
    begin(ctx)
    values = [check_step(ctx, "one", 0.0), check_step(ctx, "two", 0.0)]
    return {"token": ctx._token, "nonces": {v["key"]: v["nonce"] for v in values}}


@workflow(name="chaos_unserialisable")
def chaos_unserialisable(ctx: Context) -> Any:
    """Returns a set: FAILED with NotSerializableError, nothing recorded as its result."""
    ctx.step("prepare", lambda: "prepared")
    return {"tags": {"a", "b"}}


def _explode() -> None:
    raise ValueError("chaos: deliberate failure of a step")


@workflow(name="chaos_raises")
def chaos_raises(ctx: Context) -> Any:
    """A step that always raises (one retry): FAILED with ValueError."""
    ctx.step("prepare", lambda: "prepared")
    ctx.step("explode", _explode, retries=1, backoff=0.05)
    return "unreachable"


@workflow(name="chaos_sleeper")
def chaos_sleeper(ctx: Context, sleep_s: float = 3.0, timeout_s: float = 0.5) -> Any:
    """A step that sleeps past its timeout: FAILED with StepTimeoutError."""
    ctx.step("nap", lambda: threading.Event().wait(sleep_s), timeout=timeout_s)
    return "unreachable"
