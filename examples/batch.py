"""A loop: charge every invoice of a customer. Keys: charge#1, charge#2, ...

``pause`` makes each charge take that many seconds, so that there is time to
``kill -9`` the worker in the middle (README, recovery walkthrough).
"""

from __future__ import annotations

import time

from durable_workers import Context, workflow

from .effects import deliver


@workflow
def charge_invoices(
    ctx: Context, customer: str = "acme", invoices: list | None = None, pause: float = 0.0
) -> dict:
    """Charge each invoice once; a crash mid-loop resumes at the first uncharged one."""
    invoices = invoices if invoices is not None else [120, 80, 45]

    def charge(amount: int) -> dict:
        time.sleep(pause)
        return deliver(ctx, "charge", customer=customer, amount=amount)

    receipts = [ctx.step("charge", lambda amount=amount: charge(amount)) for amount in invoices]
    total = sum(invoices)
    ctx.step("send_statement", lambda: deliver(ctx, "send_statement", customer=customer, total=total))
    return {"customer": customer, "charged": len(receipts), "total": total}
