"""Employee onboarding: create_record -> (provision_laptop || provision_access) -> send_welcome_email.

    durable run onboarding emp-1 --crash-at provision_access:before   # dies mid-way
    durable run onboarding emp-1                                      # resumes
    cat effects.log                                                    # each effect once
"""

from __future__ import annotations

from durable_workers import Context, workflow

from .effects import deliver


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
