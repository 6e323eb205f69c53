"""Version 2 of the app: the ``charge`` step is renamed ``bill``; ``replay_legacy`` is gone."""

from __future__ import annotations

from durable_workers import Context, workflow


@workflow
def replay_order(ctx: Context, n: int = 1) -> int:
    """The same workflow with a renamed step: in-flight runs recorded by v1 would diverge."""
    reserved = ctx.step("reserve", lambda: n)
    charged = ctx.step("bill", lambda: reserved + 1)
    ctx.step("ship", lambda: charged)
    return charged
