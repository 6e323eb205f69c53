"""Version 3 of the app: ``charge`` becomes ``bill`` behind ``ctx.patched``, the safe way to rename it."""

from __future__ import annotations

from durable_workers import Context, workflow


@workflow
def replay_order(ctx: Context, n: int = 1) -> int:
    """New runs take ``bill``; histories recorded by v1 (``charge`` at that position) keep ``charge``."""
    reserved = ctx.step("reserve", lambda: n)
    if ctx.patched("bill-not-charge"):
        charged = ctx.step("bill", lambda: reserved + 1)
    else:
        charged = ctx.step("charge", lambda: reserved + 1)
    ctx.step("ship", lambda: charged)
    return charged


@workflow
def replay_legacy(ctx: Context) -> str:
    """Unchanged from v1."""
    return ctx.step("old", lambda: "old")
