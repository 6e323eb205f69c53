"""Workflows for the step-timeout integration tests (tests/integration/test_fleet_timeouts.py).

Each step appends ``workflow_id step_key pid [note]`` to a *ledger* file when it starts (see
``tests/apps/fleet_flows.record``), so a test knows how often a step really ran and in which
process.

* ``timeout_sleeper``: ``nap`` sleeps far past its ``timeout``; the engine's helper-thread
  wait gives up on it and the attempt fails with ``StepTimeoutError``.
* ``timeout_freeze``: ``freeze`` stops its whole worker process (SIGSTOP) inside the step, so
  no thread of the worker can act on the timeout: only the supervisor can end the attempt.
* ``timeout_freeze_locked``: the same, but the step holds the database's write lock (an open
  ``BEGIN IMMEDIATE`` of its own) when it freezes, so nobody can write until the worker dies.
* ``timeout_once``: ``nap`` overruns its timeout on its first run only (a marker file tells),
  so the retry succeeds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

from durable_workers import Context, workflow
from tests.apps.fleet_flows import record

#: How long a step that must time out sleeps: far past any timeout used, short enough that a
#: leaked step thread cannot outlive a test run by much.
OVERSLEEP = 30.0


def _stop_this_process() -> None:
    """SIGSTOP this whole process, and never return.

    ``kill()`` of one's own process from a thread that is not the main thread may return
    before the stop reaches the calling thread (the kernel wakes another thread to start the
    group stop), so the caller could run on for a moment: it blocks here instead.
    """
    os.kill(os.getpid(), signal.SIGSTOP)
    threading.Event().wait(OVERSLEEP * 10)
    raise RuntimeError("the process was not stopped")


@workflow
def timeout_sleeper(
    ctx: Context, ledger: str, timeout_s: float = 1.0, retries: int = 1, sleep_s: float = OVERSLEEP
) -> dict:
    """``before`` -> ``nap`` (sleeps ``sleep_s``, past ``timeout_s``; ``retries`` retries) -> ``after``."""
    ctx.step("before", lambda: record(ledger, ctx))

    def nap() -> int:
        pid = record(ledger, ctx, "enter")
        time.sleep(sleep_s)
        return pid

    napped = ctx.step("nap", nap, timeout=timeout_s, retries=retries, backoff=0.1)
    ctx.step("after", lambda: record(ledger, ctx))
    return {"nap": napped}


@workflow
def timeout_freeze(ctx: Context, ledger: str, timeout_s: float = 1.0, max_attempts: int = 2) -> dict:
    """``before`` -> ``freeze`` (SIGSTOPs its own worker process, every run) -> ``after``."""
    ctx.step("before", lambda: record(ledger, ctx))

    def freeze() -> int:
        pid = record(ledger, ctx, "enter")
        _stop_this_process()
        return pid

    frozen = ctx.step("freeze", freeze, timeout=timeout_s, max_attempts=max_attempts)
    ctx.step("after", lambda: record(ledger, ctx))
    return {"freeze": frozen}


@workflow
def timeout_freeze_locked(ctx: Context, ledger: str, timeout_s: float = 1.0, max_attempts: int = 2) -> dict:
    """``before`` -> ``freeze`` (takes the SQLite write lock, then SIGSTOPs its worker) -> ``after``."""
    ctx.step("before", lambda: record(ledger, ctx))

    def freeze() -> int:
        pid = record(ledger, ctx, "enter")
        con = sqlite3.connect(ctx.database_path, timeout=120, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            record(ledger, ctx, "locked")
            _stop_this_process()
        finally:
            con.close()
        return pid

    frozen = ctx.step("freeze", freeze, timeout=timeout_s, max_attempts=max_attempts)
    ctx.step("after", lambda: record(ledger, ctx))
    return {"freeze": frozen}


@workflow
def timeout_once(
    ctx: Context, ledger: str, marker: str, timeout_s: float = 1.0, sleep_s: float = OVERSLEEP
) -> dict:
    """``nap``: its first run creates ``marker`` and sleeps past ``timeout_s``; a retry returns at once."""

    def nap() -> int:
        pid = record(ledger, ctx, "enter")
        if not os.path.exists(marker):
            Path(marker).touch()
            time.sleep(sleep_s)
        return pid

    napped = ctx.step("nap", nap, timeout=timeout_s, retries=1, backoff=0.1)
    after = ctx.step("after", lambda: record(ledger, ctx))
    return {"nap": napped, "after": after}
