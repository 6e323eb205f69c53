"""Workflows of the durable primitives' tests: sleep, recorded values, patches.

``calls`` files count step executions (:func:`record_call`); ``halt`` stands in for a
crash (see core_flows). ``CODE_VERSION`` selects which code of ``patch_flow`` runs,
as a deploy would.
"""

from __future__ import annotations

import os
import time
from typing import Any

from durable_workers import Context, workflow
from tests.apps.core_flows import halt, record_call

#: Which version of ``patch_flow`` is deployed (1: before the patch, 2: patched, 3: patch deprecated).
CODE_VERSION = 2
#: How long ``boundary_flow``'s last step waits for its gate file at most.
GATE_WAIT_S = 120.0


@workflow
def sleep_flow(ctx: Context, calls: str, seconds: float = 0.5) -> str:
    """Record a step, sleep durably, record another."""
    ctx.step("before", lambda: record_call(calls, "before"))
    ctx.sleep(seconds)
    ctx.step("after", lambda: record_call(calls, "after"))
    return "woke"


@workflow
def recorded_values_flow(ctx: Context, halt_file: str | None = None) -> list[Any]:
    """Take a recorded time, UUID and random number, then (maybe) crash."""
    values = [ctx.now(), ctx.uuid4(), ctx.random()]
    ctx.step("halt", lambda: halt(halt_file))
    return values


@workflow
def patch_flow(ctx: Context, calls: str, halt_file: str | None = None) -> str:
    """Version 1: a, old, halt, b. Version 2 patches ``old`` into ``new``; version 3 deprecates the patch."""
    ctx.step("a", lambda: record_call(calls, "a"))
    if CODE_VERSION == 1:
        branch = ctx.step("old", lambda: "old")
    elif CODE_VERSION == 2:
        branch = ctx.step("new", lambda: "new") if ctx.patched("use-new") else ctx.step("old", lambda: "old")
    else:
        ctx.deprecate_patch("use-new")
        branch = ctx.step("new", lambda: "new")
    ctx.step("halt", lambda: halt(halt_file))
    ctx.step("b", lambda: record_call(calls, "b"))
    return branch


@workflow
def parallel_sleep_flow(ctx: Context, calls: str) -> list[Any]:
    """Two branches sleeping different times and one that does not; then a last step."""

    def branch(label: str, seconds: float) -> str:
        ctx.step(f"{label}-before", lambda: record_call(calls, f"{label}-before"))
        if seconds:
            ctx.sleep(seconds)
        ctx.step(f"{label}-after", lambda: record_call(calls, f"{label}-after"))
        return label

    results = ctx.parallel(lambda: branch("short", 0.2), lambda: branch("long", 0.5), lambda: branch("none", 0))
    ctx.step("last", lambda: record_call(calls, "last"))
    return results


@workflow
def approval_flow(ctx: Context, calls: str, timeout: float | None = None) -> Any:
    """Record a step, wait for a message on 'approval', publish it as the event 'decision', record another."""
    ctx.step("before", lambda: record_call(calls, "before"))
    decision = ctx.recv("approval", timeout=timeout)
    ctx.set_event("decision", decision)
    ctx.step("after", lambda: record_call(calls, "after"))
    return decision


def _after_gate(calls: str, gate: str | None) -> int:
    """Step body: wait (bounded) until ``gate`` exists when one is given, then record ``after``."""
    deadline = time.monotonic() + GATE_WAIT_S
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return record_call(calls, "after")


@workflow
def boundary_flow(ctx: Context, calls: str, kind: str = "sleep", seconds: float = 2.0, gate: str | None = None) -> Any:
    """Record a step, wait (``kind`` ``sleep``: ``seconds``; ``recv``: a message on 'go'), record another.

    The last step waits for the file ``gate`` first, when given: a test can kill the worker
    that woke the workflow while it holds the claim, before the step's side effect.
    """
    ctx.step("before", lambda: record_call(calls, "before"))
    value = ctx.sleep(seconds) if kind == "sleep" else ctx.recv("go")
    ctx.step("after", lambda: _after_gate(calls, gate))
    return value


def _effect(calls: str, label: str) -> str:
    """Step body: record ``label`` as a side effect and return it."""
    record_call(calls, label)
    return label


@workflow
def every_primitive_flow(ctx: Context, calls: str) -> dict[str, Any]:
    """Each primitive once: recorded values, steps, parallel, sleep, recv with and without timeout, event, patch, child.

    The step ``use`` logs the recorded values it was given, so a test can see that every
    execution of it saw the same ones.
    """
    stamp, ident, draw = ctx.now(), ctx.uuid4(), ctx.random()
    ctx.step("use", lambda: _effect(calls, f"use {stamp!r} {ident} {draw!r}"))
    pair = ctx.parallel(
        lambda: ctx.step("left", lambda: _effect(calls, "left")),
        lambda: ctx.step("right", lambda: _effect(calls, "right")),
    )
    ctx.sleep(0.2)
    message = ctx.recv("go")
    late = ctx.recv("never", timeout=0.2)
    ctx.set_event("seen", message)
    branch = ctx.step("new", lambda: _effect(calls, "new")) if ctx.patched("p") else ctx.step("old", lambda: "old")
    child = ctx.call("child_device", calls=f"{calls}.child", device="kid")
    ctx.step("last", lambda: _effect(calls, "last"))
    return {
        "now": stamp, "uuid": ident, "random": draw, "pair": pair, "message": message, "late": late, "branch": branch,
        "child": child,
    }  # fmt: skip
