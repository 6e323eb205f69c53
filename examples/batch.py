"""A loop: charge every invoice of a customer. Keys: charge#1, charge#2, ..."""

from __future__ import annotations

from durable_workers import Context, workflow

from .effects import deliver


@workflow
def charge_invoices(ctx: Context, customer: str = "acme", invoices: list | None = None) -> dict:
    """Charge each invoice once; a crash mid-loop resumes at the first uncharged one."""
    invoices = invoices if invoices is not None else [120, 80, 45]
    receipts = [
        ctx.step("charge", lambda amount=amount: deliver(ctx, "charge", customer=customer, amount=amount))
        for amount in invoices
    ]
    total = sum(invoices)
    ctx.step("send_statement", lambda: deliver(ctx, "send_statement", customer=customer, total=total))
    return {"customer": customer, "charged": len(receipts), "total": total}
