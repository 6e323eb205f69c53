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
import uuid
from typing import Any

from .context import Context
from .registry import workflow

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
    """The body of every check step: ledger row first, then ``work_s`` (±50 %) of work."""
    value = {"key": ctx.step_key, "pid": os.getpid(), "token": ctx._token, "nonce": uuid.uuid4().hex[:12]}
    _record(ctx, ctx.step_key, value)
    if work_s > 0:
        threading.Event().wait(work_s * random.uniform(0.5, 1.5))
    return value


def begin(ctx: Context) -> None:
    """Mark in the ledger that an attempt (fencing token ``ctx._token``) starts."""
    _record(ctx, "@begin", None)


@workflow(name="chaos_check")
def chaos_check(ctx: Context, fan: int = 3, loop: int = 3, work_ms: float = 10.0) -> dict[str, Any]:
    """Sequential steps, a fan-out of ``fan`` branches, a loop of ``loop`` steps, a conditional."""
    work = work_ms / 1000.0
    begin(ctx)
    first = ctx.step("reserve", lambda: effect(ctx, work))
    second = ctx.step("charge", lambda: effect(ctx, work))

    def branch() -> dict[str, Any]:
        return ctx.step("ship", lambda: effect(ctx, work))

    shipped = ctx.parallel(*[branch for _ in range(fan)])
    looped = [ctx.step("notify", lambda: effect(ctx, work)) for _ in range(loop)]
    if int(first["nonce"], 16) % 2 == 0:  # decided by a recorded value: same branch on replay
        decided = ctx.step("audit", lambda: effect(ctx, work))
    else:
        decided = ctx.step("skip_audit", lambda: effect(ctx, work))
    last = ctx.step("close", lambda: effect(ctx, work))
    values = [first, second, *shipped, *looped, decided, last]
    return {"token": ctx._token, "nonces": {v["key"]: v["nonce"] for v in values}}


@workflow(name="chaos_short")
def chaos_short(ctx: Context) -> dict[str, Any]:
    """Two steps without work: a short workflow for contention runs."""
    begin(ctx)
    values = [ctx.step("one", lambda: effect(ctx, 0)), ctx.step("two", lambda: effect(ctx, 0))]
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
