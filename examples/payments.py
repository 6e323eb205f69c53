"""A payments queue: at most 2 charges at the provider at once, one per customer, no double submit.

``--app examples.payments`` loads it (README, "Queues and priorities")::

    durable submit charge pay-1 --input '{"customer": "acme", "amount": 120}' \\
        --concurrency-key acme --dedupe-key invoice-1001

- ``concurrency=2``: two charges RUNNING at once across the whole fleet,
  however many workers and hosts there are;
- ``per_key_concurrency=1``: one charge per customer at a time (the
  ``concurrency_key``), so a customer's charges never race each other;
- ``rate=(30, 60.0)``: at most 30 charges start in any 60 seconds;
- ``dedupe_key``: a second submit for the same invoice is refused while the
  first is unfinished (``on_duplicate="return"`` hands back the first).

``pause`` makes a charge take that long, so the limits can be watched with
``durable status`` while a fleet runs.
"""

from __future__ import annotations

import time

from durable_workers import Context, Queue, workflow

from .effects import deliver

payments = Queue("payments", concurrency=2, per_key_concurrency=1, rate=(30, 60.0))


@workflow(queue=payments)
def charge(ctx: Context, customer: str = "acme", amount: int = 100, pause: float = 0.0) -> dict:
    """Charge ``amount`` to ``customer`` once, then send the receipt."""

    def call_provider() -> dict:
        time.sleep(pause)
        return deliver(ctx, "charge", customer=customer, amount=amount)

    receipt = ctx.step("charge", call_provider)
    ctx.step("send_receipt", lambda: deliver(ctx, "send_receipt", customer=customer, amount=amount))
    return {"customer": customer, "amount": amount, "charge_key": receipt["key"]}
