"""Workflows for the crash-test kit's tests (tests/integration/test_verify.py).

* ``kit_everything``: a step, two parallel branches, a durable sleep, a recorded ``now``, a
  child workflow (``kit_child``) awaited, then a last step; every effect under its
  idempotency key: crash-safe at every point.
* ``kit_double_charge``: the charge effect is declared without a key: doubled when the run
  dies after the charge returned and before its result was recorded.
* ``kit_drifting``: its result depends on the process that ends it (read outside any step):
  a crashed run ends with another result than the clean one.
* ``kit_failing``: its second step always raises: FAILED, and so must every crashed run be.
* ``kit_stamped``: a sleep of 0 (no suspend) and a result of recorded ``now``/``uuid4``/``random``
  values, which differ from run to run: masked, so crash-safe.
* ``kit_waits_forever``: a receive with no timeout: the kit says it cannot finish it.
"""

from __future__ import annotations

import os

from durable_workers import Context, workflow
from durable_workers.testing import effect


def keyed(ctx: Context, name: str) -> str:
    """Declare ``name`` under the step's idempotency key; return the key."""
    effect(name, key=ctx.idempotency_key)
    return ctx.idempotency_key


@workflow
def kit_child(ctx: Context, item: str) -> str:
    """A child: one keyed effect."""
    return ctx.step("pack", lambda: keyed(ctx, f"pack {item}"))


@workflow
def kit_everything(ctx: Context, nap: float = 0.2) -> dict:
    """Steps, parallel branches, a sleep, ``now``, a child, all keyed."""
    first = ctx.step("reserve", lambda: keyed(ctx, "reserve"))
    left, right = ctx.parallel(
        lambda: ctx.step("left", lambda: keyed(ctx, "left")),
        lambda: ctx.step("right", lambda: keyed(ctx, "right")),
    )
    ctx.sleep(nap)
    stamp = ctx.now()
    packed = ctx.start_child(kit_child, item="box").result()
    last = ctx.step("ship", lambda: keyed(ctx, "ship"))
    return {"keys": [first, left, right, packed, last], "after_sleep": stamp > 0}


@workflow
def kit_double_charge(ctx: Context, amount: int = 5) -> dict:
    """A charge declared with no idempotency key (the planted bug), then a keyed receipt."""

    def charge() -> int:
        effect("charge card")
        return amount

    charged = ctx.step("charge", charge)
    ctx.step("receipt", lambda: keyed(ctx, "receipt"))
    return {"charged": charged}


@workflow
def kit_drifting(ctx: Context) -> dict:
    """Two steps; the result names the process that finished it (not recorded: it drifts)."""
    ctx.step("one", lambda: 1)
    ctx.step("two", lambda: 2)
    return {"finished_by": os.getpid()}


@workflow
def kit_failing(ctx: Context) -> str:
    """The first step returns, the second raises ValueError every time: the workflow FAILS."""
    ctx.step("fine", lambda: "fine")

    def broken() -> str:
        raise ValueError("always broken")

    ctx.step("broken", broken)
    return "unreachable"


@workflow
def kit_stamped(ctx: Context) -> dict:
    """A sleep of zero (no suspend), then a result made of recorded values that differ from run to run."""
    ctx.sleep(0)
    return {"at": ctx.now(), "id": ctx.uuid4(), "dice": ctx.random(), "step": ctx.step("mark", lambda: keyed(ctx, "mark"))}


@workflow
def kit_waits_forever(ctx: Context) -> str:
    """Waits for a message with no timeout: a crash test cannot finish it."""
    return str(ctx.recv("never"))
