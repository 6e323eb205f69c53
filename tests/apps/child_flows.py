"""Workflows of the child-workflow and deadline tests.

``calls`` files count step executions (:func:`record_call`); a ``gate`` file that
exists holds a child in its step until it is removed (``wait_gate``), so a test
can kill a worker, cancel or let a deadline pass while the child runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from durable_workers import ChildFailedError, ChildTimeoutError, Context, workflow
from tests.apps.core_flows import halt, record_call


def wait_gate(gate: str | None, limit_s: float = 120.0) -> None:
    """Step body: block while ``gate`` exists (bounded, so a forgotten gate cannot hang a test)."""
    end = time.monotonic() + limit_s
    while gate and os.path.exists(gate) and time.monotonic() < end:
        time.sleep(0.02)


@workflow
def child_device(ctx: Context, calls: str, device: str, gate: str | None = None, fail: bool = False) -> dict[str, str]:
    """A child: one step that records the call (held by ``gate``), failing when ``fail``."""

    def provision() -> str:
        wait_gate(gate)
        record_call(calls, f"provision-{device}")
        if fail:
            raise RuntimeError(f"no stock for {device}")
        return f"{device}-ok"

    return {"device": device, "status": ctx.step("provision", provision)}


@workflow
def parent_flow(ctx: Context, calls: str, gate: str | None = None, fail: str | None = None) -> dict[str, Any]:
    """Start two children at once, wait for both; a failed child is caught and reported."""
    ctx.step("before", lambda: record_call(calls, "parent-before"))
    handles = [
        ctx.start_child(child_device, calls=calls, device=device, gate=gate, fail=device == fail)
        for device in ("laptop", "badge")
    ]
    results: dict[str, Any] = {}
    for handle in handles:
        try:
            results[handle.workflow_id] = handle.result()
        except ChildFailedError as exc:
            results[handle.workflow_id] = f"failed: {exc.status}"
    ctx.step("after", lambda: record_call(calls, "parent-after"))
    return results


@workflow
def call_flow(ctx: Context, calls: str, workflow_id: str | None = None) -> Any:
    """``ctx.call`` a child (under a chosen id, if given) and return its result."""
    return ctx.call("child_device", workflow_id=workflow_id, calls=calls, device="phone")


@workflow
def child_timeout_flow(ctx: Context, calls: str, gate: str, wait_s: float) -> str:
    """Wait at most ``wait_s`` for a gated child."""
    handle = ctx.start_child(child_device, calls=calls, device="slow", gate=gate)
    try:
        handle.result(timeout=wait_s)
    except ChildTimeoutError:
        return "gave up"
    return "done"


@workflow
def nested_flow(ctx: Context, calls: str, gate: str | None = None) -> Any:
    """A grandparent: its child is a ``parent_flow`` (with children of its own)."""
    return ctx.call(parent_flow, calls=calls, gate=gate)


@workflow(timeout=1.0)
def deadline_flow(ctx: Context, calls: str) -> str:
    """Sleeps past its one-second deadline: it ends CANCELLED before ``after``."""
    ctx.step("before", lambda: record_call(calls, "before"))
    ctx.sleep(30)
    ctx.step("after", lambda: record_call(calls, "after"))
    return "too late"


@workflow
def deadline_parent_flow(ctx: Context, calls: str, gate: str) -> Any:
    """Waits on a gated child; submitted with a short ``timeout`` its deadline cancels both."""
    return ctx.call(child_device, calls=calls, device="gated", gate=gate)


@workflow
def child_then_halt(ctx: Context, calls: str, halt_file: str | None = None) -> Any:
    """Start a child, then (maybe) crash before waiting for it."""
    handle = ctx.start_child(child_device, calls=calls, device="tablet")
    ctx.step("halt", lambda: halt(halt_file))
    return handle.result()


@workflow
def strict_parent(ctx: Context, calls: str) -> Any:
    """Waits for a failing child without catching: the parent fails with ChildFailedError."""
    return ctx.call(child_device, calls=calls, device="broken", fail=True)


@dataclass
class Receipt:
    """A typed child result."""

    device: str
    serial: int


@workflow
def typed_child(ctx: Context, device: str) -> Receipt:
    """A child whose result is a dataclass."""
    return Receipt(device, ctx.step("serial", lambda: 42))


@workflow
def typed_parent(ctx: Context) -> str:
    """Gets the child's result back as a Receipt."""
    receipt = ctx.call(typed_child, device="mouse")
    return f"{type(receipt).__name__}:{receipt.device}:{receipt.serial}"


def not_a_workflow(ctx: Context) -> None:
    """A plain function, never registered."""


@workflow
def bad_child_flow(ctx: Context) -> Any:
    """Passes a function that is no workflow to ctx.start_child."""
    return ctx.start_child(not_a_workflow)


@workflow
def flaky_child(ctx: Context, calls: str, fail_file: str) -> str:
    """Fails (an ordinary exception) while ``fail_file`` exists."""

    def work() -> str:
        record_call(calls, "flaky")
        if os.path.exists(fail_file):
            raise RuntimeError("not yet")
        return "fine"

    return ctx.step("work", work)


@workflow
def retry_parent(ctx: Context, calls: str, fail_file: str) -> str:
    """Waits for a flaky child without catching its failure."""
    return ctx.call(flaky_child, calls=calls, fail_file=fail_file)


@workflow
def listening_child(ctx: Context) -> Any:
    """Waits for a message on 'go' with no timeout."""
    return ctx.recv("go")


@workflow
def listening_parent(ctx: Context) -> Any:
    """Waits for a child that waits for a message."""
    return ctx.call(listening_child)
