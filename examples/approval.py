"""A conditional: large expenses need a manager's approval step."""

from __future__ import annotations

from durable_workers import Context, workflow

from .effects import deliver


@workflow
def expense(ctx: Context, amount: int = 50, employee: str = "emp-1") -> dict:
    """Small amounts are paid at once; large ones are approved first, then paid."""
    claim = ctx.step("record_claim", lambda: deliver(ctx, "record_claim", employee=employee, amount=amount))
    if amount > 1000:
        ctx.step("request_approval", lambda: deliver(ctx, "request_approval", employee=employee, amount=amount))
    ctx.step("pay", lambda: deliver(ctx, "pay", employee=employee, amount=amount))
    return {"claim": claim["key"], "approved": amount > 1000, "paid": amount}
