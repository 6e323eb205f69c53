"""Workflows for the attempt-lifecycle fleet tests (tests/integration/test_lifecycle_fleet.py).

* ``lifecycle_spawn``: ``spawn`` starts a ``sleep 600`` subprocess, appends
  ``workflow_id step_key pid child=<pid>`` to the ledger, then blocks until the
  release file exists (so a test can kill its worker while the subprocess runs).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from durable_workers import Context, workflow
from tests.apps.fleet_flows import HOLD_LIMIT, record


def _spawn_and_hold(ledger: str, release: str, ctx: Context) -> int:
    child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
    record(ledger, ctx, f"child={child.pid}")
    pause = threading.Event()
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(release) and time.monotonic() < deadline:
        pause.wait(0.02)
    child.kill()
    child.wait()
    return child.pid


@workflow
def lifecycle_spawn(ctx: Context, ledger: str, release: str) -> dict:
    """``spawn`` (a ``sleep 600`` child, held until the release file exists)."""
    return {"child": ctx.step("spawn", lambda: _spawn_and_hold(ledger, release, ctx))}
