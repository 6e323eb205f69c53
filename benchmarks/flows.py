"""The benchmark app: workflows the benchmark fleets run (``--app benchmarks.flows``).

Every step is a no-op (or a fixed sleep), so what is measured is the engine:
claims, step checkpoints, leases and the fleet around them.

- ``bench_onboarding``: the shape of ``examples.onboarding``
  (create_record -> (provision_laptop || provision_access) -> send_welcome_email),
  4 steps, ``sleep_ms`` per step (0 = no-op).
- ``bench_sequential``: ``steps`` sequential no-op steps (step overhead).
- ``bench_one_step``: one no-op step (submit-to-start latency).
- ``bench_sleep``: one durable sleep, then a recorded ``ctx.now()`` (wake lateness).
- ``bench_recovery``: before -> hang -> after; ``hang`` blocks on its first
  attempt (a marker file tells attempts apart) so a worker can be killed mid-step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from durable_workers import Context, workflow

#: A 100-byte JSON output, the size the floor benchmark writes too.
PAYLOAD = {"ok": True, "data": "x" * 76}


def _work(sleep_ms: float) -> dict:
    if sleep_ms:
        time.sleep(sleep_ms / 1000.0)
    return PAYLOAD


@workflow
def bench_onboarding(ctx: Context, sleep_ms: float = 0) -> dict:
    """Onboarding-shaped: one step, two parallel steps, one step."""
    record = ctx.step("create_record", lambda: _work(sleep_ms))
    laptop, access = ctx.parallel(
        lambda: ctx.step("provision_laptop", lambda: _work(sleep_ms)),
        lambda: ctx.step("provision_access", lambda: _work(sleep_ms)),
    )
    ctx.step("send_welcome_email", lambda: _work(sleep_ms))
    return {"ok": bool(record and laptop and access)}


@workflow
def bench_sequential(ctx: Context, steps: int = 500) -> int:
    """``steps`` sequential no-op steps, each returning the 100-byte payload."""
    for _ in range(steps):
        ctx.step("noop", lambda: PAYLOAD)
    return steps


@workflow
def bench_one_step(ctx: Context) -> bool:
    """A single no-op step: the first step start is what latency measures."""
    ctx.step("first", lambda: PAYLOAD)
    return True


def _hang_once(ctx: Context, marker_dir: str, hang_s: float) -> dict:
    marker = Path(marker_dir) / ctx.workflow_id
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(hang_s)  # the benchmark kills this process here
    return PAYLOAD


@workflow
def bench_recovery(ctx: Context, marker_dir: str, hang_s: float = 120.0) -> bool:
    """before -> hang (blocks on its first attempt) -> after."""
    ctx.step("before", lambda: PAYLOAD)
    ctx.step("hang", lambda: _hang_once(ctx, marker_dir, hang_s))
    ctx.step("after", lambda: PAYLOAD)
    return True


@workflow
def bench_sleep(ctx: Context, seconds: float = 1.0) -> float:
    """Sleep durably, then record the time it resumed (the wake benchmark reads both)."""
    ctx.sleep(seconds)
    return ctx.now()
