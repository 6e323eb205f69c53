"""Version 1 of the app: ``replay_order`` reserves, charges, ships; ``replay_legacy`` exists."""

from __future__ import annotations

from durable_workers import Context, workflow


@workflow
def replay_order(ctx: Context, n: int = 1) -> int:
    """Three steps; the history is recorded by this version."""
    reserved = ctx.step("reserve", lambda: n)
    charged = ctx.step("charge", lambda: reserved + 1)
    ctx.step("ship", lambda: charged)
    return charged


@workflow
def replay_legacy(ctx: Context) -> str:
    """A workflow the next version drops."""
    return ctx.step("old", lambda: "old")
