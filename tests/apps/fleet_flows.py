"""Workflows for the supervisor / worker-fleet integration tests (tests/integration/test_fleet.py).

Every workflow takes the path of a *ledger* file: each step execution appends one line
``workflow_id step_key pid`` to it, without any deduplication, so a test can count how often
each step really ran and in which process. ``fleet_hold`` has a step that blocks until a
*release* file exists, so a test decides when it finishes and can catch a worker mid-step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from durable_workers import Context, workflow
from tests.ledger_file import append_line

#: A blocked step gives up after this long, so a forgotten test can never leave a worker busy forever.
HOLD_LIMIT = 300.0


def record(ledger: str, ctx: Context, note: str = "") -> int:
    """Append ``workflow_id step_key pid [note]`` to the ledger (one O_APPEND write); return the pid."""
    line = f"{ctx.workflow_id} {ctx.step_key} {os.getpid()}{' ' + note if note else ''}\n"
    append_line(ledger, line)
    return os.getpid()


def read_ledger(ledger: str | os.PathLike[str]) -> list[tuple[str, str, int, str]]:
    """The ledger's lines as ``(workflow_id, step_key, pid, note)``."""
    path = Path(ledger)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 3)
        rows.append((parts[0], parts[1], int(parts[2]), parts[3] if len(parts) > 3 else ""))
    return rows


def _hold(ledger: str, release: str, ctx: Context) -> int:
    """Record the entry, block until ``release`` exists, record the exit; return the pid."""
    record(ledger, ctx, "enter")
    pause = threading.Event()
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"release file {release} never appeared")
        pause.wait(0.02)
    return record(ledger, ctx, "exit")


@workflow
def fleet_steps(ctx: Context, ledger: str, n: int = 3) -> dict:
    """``n`` ledger steps named ``s0``, ``s1``...; returns the pid of each."""
    pids = [ctx.step(f"s{i}", lambda: record(ledger, ctx)) for i in range(n)]
    return {"pids": pids}


@workflow
def fleet_hold(ctx: Context, ledger: str, release: str) -> dict:
    """``prep`` -> ``hold`` (blocks until the release file exists) -> ``finish``."""
    prep = ctx.step("prep", lambda: record(ledger, ctx))
    hold = ctx.step("hold", lambda: _hold(ledger, release, ctx))
    finish = ctx.step("finish", lambda: record(ledger, ctx))
    return {"prep": prep, "hold": hold, "finish": finish}


@workflow
def fleet_poison(ctx: Context, ledger: str) -> dict:
    """``before`` -> ``poison`` (SIGKILLs its own worker process, every time)."""
    ctx.step("before", lambda: record(ledger, ctx))

    def die() -> None:
        record(ledger, ctx)
        os.kill(os.getpid(), signal.SIGKILL)

    ctx.step("poison", die)
    return {"unreachable": True}


@workflow
def fleet_flaky(ctx: Context, ledger: str, marker: str) -> dict:
    """``prep`` -> ``flaky`` (raises the first time: creates ``marker`` then fails) -> ``finish``."""
    prep = ctx.step("prep", lambda: record(ledger, ctx))

    def flaky() -> int:
        record(ledger, ctx)
        if not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("fleet_flaky fails on its first run")
        return os.getpid()

    flaky_pid = ctx.step("flaky", flaky)
    finish = ctx.step("finish", lambda: record(ledger, ctx))
    return {"prep": prep, "flaky": flaky_pid, "finish": finish}
