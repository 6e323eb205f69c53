"""Workflows for the schedule tests (``--app tests/schedule_app.py``).

Kept out of ``tests/apps/``: every fleet test loads that whole package, and a workflow declared
with ``@workflow(schedule=...)`` there would start firing in each of them.

``tick`` fires every second (a sixth cron field gives seconds) with ``catchup="all"``; its one
step appends ``workflow_id step_key pid`` to the ledger file named by the environment variable
:data:`LEDGER_ENV` (one ``O_APPEND`` write, no deduplication), so a test counts how often each
slot's side effect really ran. ``report`` is a plain workflow with a typed input, for schedules
added at run time (``durable schedule add report ...``).

Only ``--app`` loads this module, in the processes a test starts: imported into the test process
it would put ``tick`` in the default registry, and an in-process supervisor of another test of the
session would start firing it.
"""

from __future__ import annotations

import os

from durable_workers import Context, workflow
from tests.ledger_file import append_line

#: The environment variable naming the ledger file (set on the supervisors a test starts).
LEDGER_ENV = "SCHEDULE_APP_LEDGER"
#: The cron of ``tick``: every second.
TICK_CRON = "* * * * * *"


def append_ledger(ctx: Context) -> int:
    """Append ``workflow_id step_key pid`` to the ledger, if one is configured; the pid."""
    ledger = os.environ.get(LEDGER_ENV)
    if ledger:
        line = f"{ctx.workflow_id} {ctx.step_key} {os.getpid()}\n"
        append_line(ledger, line)
    return os.getpid()


@workflow(schedule=TICK_CRON, catchup="all")
def tick(ctx: Context) -> int:
    """One ledger step per slot; returns the pid that ran it."""
    return ctx.step("effect", lambda: append_ledger(ctx))


@workflow
def report(ctx: Context, day: int = 0) -> dict:
    """One ledger step; returns the day it was given."""
    ctx.step("write", lambda: append_ledger(ctx))
    return {"day": day}
