"""Employee onboarding, in two sizes.

``onboarding`` is the quick start: create_record -> (provision_laptop || provision_access)
-> send_welcome_email, all steps of one workflow::

    durable run onboarding emp-1 --crash-at provision_access:before   # dies mid-way
    durable run onboarding emp-1                                      # resumes
    cat effects.log                                                    # each effect once

``employee_onboarding`` is the whole story: create the record, sleep until the start
date, provision the laptop and the access as two child workflows running at once, wait
for the manager's approval (reminding them every ``remind_every`` seconds), then send
the welcome email. Its progress is published as the event ``stage``. With small
numbers the demo takes seconds::

    durable run employee_onboarding emp-7 --input '{"start_in": 2, "remind_every": 1}' &
    durable send emp-7 approval --payload '{"approved": true, "by": "manager-1"}'
    durable events emp-7
"""

from __future__ import annotations

from datetime import datetime, timezone

from durable_workers import Context, workflow

from .effects import deliver

#: A week: how long an approval may take before the onboarding gives up.
MAX_REMINDERS = 7


@workflow
def onboarding(ctx: Context, employee_id: str | None = None) -> dict:
    """Onboard one employee; the workflow id doubles as the employee id."""
    emp = employee_id or ctx.workflow_id
    record = ctx.step("create_record", lambda: deliver(ctx, "create_record", employee=emp))
    laptop, access = ctx.parallel(
        lambda: ctx.step("provision_laptop", lambda: deliver(ctx, "provision_laptop", employee=emp, model="x1")),
        lambda: ctx.step("provision_access", lambda: deliver(ctx, "provision_access", employee=emp, groups="eng")),
    )
    ctx.step("send_welcome_email", lambda: deliver(ctx, "send_welcome_email", to=f"{emp}@example.com"))
    return {"employee": emp, "record": record["key"], "laptop": laptop["key"], "access": access["key"]}


@workflow
def provision_device(ctx: Context, employee: str, device: str) -> dict:
    """A child of ``employee_onboarding``: order one device or access grant, then confirm it."""
    order = ctx.step("order", lambda: deliver(ctx, f"order_{device}", employee=employee))
    ctx.step("confirm", lambda: deliver(ctx, f"confirm_{device}", employee=employee))
    return {"device": device, "order": order["key"]}


def _start_time(ctx: Context, start_date: str | None, start_in: float | None) -> float | None:
    """The UNIX time of the first day (``start_date``, ISO 8601, UTC unless it says), or ``start_in`` seconds from now."""
    if start_date:
        when = datetime.fromisoformat(start_date)
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    return ctx.now() + start_in if start_in else None


@workflow
def employee_onboarding(
    ctx: Context,
    employee_id: str | None = None,
    start_date: str | None = None,
    start_in: float | None = None,
    remind_every: float = 86_400.0,
    manager: str = "manager-1",
) -> dict:
    """The whole onboarding: record, start date, devices as child workflows, approval with reminders, welcome."""
    emp = employee_id or ctx.workflow_id
    ctx.step("create_record", lambda: deliver(ctx, "create_record", employee=emp))
    start = _start_time(ctx, start_date, start_in)
    if start is not None:
        ctx.set_event("stage", "waiting for the start date")
        ctx.sleep_until(start)
    ctx.set_event("stage", "provisioning")
    laptop = ctx.start_child(provision_device, employee=emp, device="laptop")
    access = ctx.start_child(provision_device, employee=emp, device="access")
    devices = [laptop.result(), access.result()]
    ctx.set_event("stage", "waiting for approval")
    approval = None
    for reminder in range(1, MAX_REMINDERS + 1):
        approval = ctx.recv("approval", timeout=remind_every)
        if approval is not None:
            break
        ctx.step("remind_manager", lambda: deliver(ctx, "remind_manager", manager=manager, employee=emp, n=reminder))
    if not approval or not approval.get("approved"):
        ctx.set_event("stage", "not approved")
        return {"employee": emp, "approved": False, "devices": devices}
    ctx.step("send_welcome_email", lambda: deliver(ctx, "send_welcome_email", to=f"{emp}@example.com"))
    ctx.set_event("stage", "done")
    return {"employee": emp, "approved": True, "by": approval.get("by"), "devices": devices}
