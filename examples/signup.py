"""Crash-test examples: ``durable verify signup`` passes, ``durable verify signup_unsafe`` fails.

Both create an account and send a welcome email. ``signup`` hands the email
provider the step's idempotency key, so a resend after a crash is dropped by
the provider; ``signup_unsafe`` does not, and a crash after the email went out
but before the step's result was recorded sends it twice. The crash-test kit
finds that (``effect`` declares the side effect)::

    durable verify signup          # every crash point: same end, nothing doubled
    durable verify signup_unsafe   # flags "send welcome email" in step send_welcome#1
"""

from __future__ import annotations

from durable_workers import Context, workflow
from durable_workers.testing import effect

from .effects import deliver


def send_email(to: str, *, idempotency_key: str | None) -> dict:
    """A stand-in for an email provider's API; it deduplicates only when given a key."""
    effect("send welcome email", key=idempotency_key)
    return {"to": to, "sent": True}


@workflow
def signup(ctx: Context, email: str = "ada@example.com") -> dict:
    """Create the account, then send the welcome email under the step's idempotency key."""
    account = ctx.step("create_account", lambda: deliver(ctx, "create_account", email=email))
    ctx.step("send_welcome", lambda: send_email(email, idempotency_key=ctx.idempotency_key))
    return {"account": account["key"], "email": email}


@workflow
def signup_unsafe(ctx: Context, email: str = "ada@example.com") -> dict:
    """The same, with a planted bug: the email is sent without an idempotency key."""
    account = ctx.step("create_account", lambda: deliver(ctx, "create_account", email=email))
    ctx.step("send_welcome", lambda: send_email(email, idempotency_key=None))
    return {"account": account["key"], "email": email}
