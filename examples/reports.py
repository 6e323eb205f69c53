"""Scheduled workflows: a weekday report in Berlin time and a heartbeat every ten seconds.

``--app examples.reports`` loads them (README, "Schedules")::

    durable-supervisor --app examples.reports --workers 2
    durable schedule list --app examples.reports

Each slot runs once as ``NAME@<slot ISO UTC>`` however many supervisors share
the database; ``scheduled_at(ctx.workflow_id)`` gives the slot a run is for.
"""

from __future__ import annotations

from durable_workers import Context, scheduled_at, workflow

from . import onboarding  # noqa: F401  (the README schedules it at run time)
from .effects import deliver


@workflow(schedule="0 9 * * MON-FRI", timezone="Europe/Berlin", catchup="latest")
def daily_report(ctx: Context) -> dict:
    """Collect the day's figures and send them once per weekday at 09:00 Berlin time."""
    slot = scheduled_at(ctx.workflow_id)
    day = slot.date().isoformat() if slot is not None else "unscheduled"
    rows = ctx.step("collect", lambda: deliver(ctx, "collect", day=day))
    ctx.step("send", lambda: deliver(ctx, "send_report", day=day, collected=rows["key"]))
    return {"day": day}


@workflow(schedule="* * * * * */10", catchup="none")
def heartbeat(ctx: Context) -> str:
    """Record that the fleet was alive at this slot (every ten seconds; missed slots are not caught up)."""
    slot = scheduled_at(ctx.workflow_id)
    ctx.step("beat", lambda: deliver(ctx, "beat", at=slot.isoformat() if slot else "now"))
    return "alive"
