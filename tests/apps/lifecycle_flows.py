"""Workflows for the attempt-lifecycle tests (tests/unit/test_lifecycle_*.py, tests/integration/test_lifecycle_attempts.py).

Each step that matters appends a line to a *calls* file when its function runs (see
``core_flows.record_call``), so a test sees how often it really executed. Every name starts
with ``life_``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from durable_workers import Context, workflow
from tests.apps.core_flows import halt, record_call

FOREIGN: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "CancelledError": asyncio.CancelledError,
    "GeneratorExit": GeneratorExit,
}


def _raise_foreign(calls: str, kind: str) -> None:
    record_call(calls, "boom")
    raise FOREIGN[kind]("foreign stop")


@workflow
def life_foreign_step(ctx: Context, calls: str, kind: str, catch: bool = True, halt_file: str | None = None) -> dict:
    """A step raises a foreign BaseException; the workflow catches what it sees (or not)."""
    seen: dict[str, Any] | None = None
    try:
        ctx.step("boom", lambda: _raise_foreign(calls, kind))
    except Exception as exc:
        if not catch:
            raise
        seen = {"type": type(exc).__name__, "error_type": getattr(exc, "error_type", None)}
        ctx.step("fallback", lambda: record_call(calls, "fallback"))
    ctx.step("halt", lambda: halt(halt_file))
    return {"seen": seen}


@workflow
def life_foreign_body(ctx: Context, calls: str) -> str:
    """The workflow body itself (outside any step) raises SystemExit after one step."""
    ctx.step("one", lambda: record_call(calls, "one"))
    raise SystemExit(3)


@workflow
def life_guarded(ctx: Context, calls: str, gate: str) -> dict:
    """``pay`` blocks until ``gate`` is deleted; the workflow catches every Exception around it."""

    def pay() -> int:
        n = record_call(calls, "pay")
        while os.path.exists(gate):
            time.sleep(0.01)
        return n

    try:
        paid = ctx.step("pay", pay)
    except Exception as exc:  # a database outage must never land here
        return {"business_decision": f"{type(exc).__name__}: {exc}"}
    ctx.step("ship", lambda: record_call(calls, "ship"))
    return {"paid": paid}


@workflow
def life_slow_retry(ctx: Context, calls: str, backoff: float = 60.0) -> str:
    """A step that fails once and waits ``backoff`` seconds before its retry."""

    def flaky() -> str:
        if record_call(calls, "flaky") == 1:
            raise ConnectionError("first call fails")
        return "ok"

    return ctx.step("flaky", flaky, retries=1, backoff=backoff)


@workflow
def life_pair(ctx: Context, calls: str) -> list:
    """Two plain steps (for corrupt-row tests)."""
    a = ctx.step("a", lambda: record_call(calls, "a"))
    b = ctx.step("b", lambda: record_call(calls, "b"))
    return [a, b]


@workflow
def life_guarded_pair(ctx: Context, calls: str, halt_file: str | None = None) -> dict:
    """``a`` then a crash point; on replay ``a``'s output is decoded inside ``except Exception``."""
    try:
        a = ctx.step("a", lambda: record_call(calls, "a"))
    except Exception as exc:  # corruption must never land here
        return {"business_decision": f"{type(exc).__name__}: {exc}"}
    ctx.step("halt", lambda: halt(halt_file))
    return {"a": a}


@workflow
def life_keys(ctx: Context) -> str:
    """Returns the idempotency key of its one step."""
    return ctx.step("x", lambda: ctx.idempotency_key)


@workflow
def life_pool_steps(ctx: Context) -> list:
    """Calls ctx.step from a ThreadPoolExecutor (wrong: only ctx.parallel may fan out)."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ctx.step, f"s{i}", lambda i=i: i) for i in range(2)]
        return [f.result() for f in futures]


@workflow
def life_thread_step(ctx: Context) -> str:
    """Calls ctx.step from a plain threading.Thread; returns the error it got."""
    box: dict[str, str] = {}

    def run() -> None:
        try:
            ctx.step("inner", lambda: 1)
        except Exception as exc:
            box["error"] = str(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box.get("error", "no error")


@workflow
def life_nested(ctx: Context, where: str) -> Any:
    """Nests ctx.step or ctx.parallel inside a step (at the root or inside a parallel branch)."""
    if where == "parallel-in-step":
        return ctx.step("outer", lambda: ctx.parallel(lambda: 1))
    if where == "step-in-branch-step":
        return ctx.parallel(lambda: ctx.step("outer", lambda: ctx.step("inner", lambda: 1)))
    return ctx.step("outer", lambda: ctx.step("inner", lambda: 1), timeout=5)


class LifeKeywordError(Exception):
    """An error whose constructor takes keyword arguments only."""

    def __init__(self, *, code: int, reason: str) -> None:
        super().__init__(f"declined {code}: {reason}")
        self.code = code
        self.reason = reason


def _make_local_error() -> Exception:
    class LocalError(Exception):
        pass

    error = LocalError("not importable")
    error.code = 9  # type: ignore[attr-defined]
    return error


@workflow
def life_kw_error(ctx: Context, calls: str, local: bool = False, halt_file: str | None = None) -> dict:
    """A step raises a keyword-only (or unimportable) exception; the workflow reports what it saw."""

    def fail() -> None:
        record_call(calls, "fail")
        raise _make_local_error() if local else LifeKeywordError(code=7, reason="limit")

    try:
        ctx.step("fail", fail)
    except Exception as exc:
        seen = {"type": type(exc).__name__, "code": getattr(exc, "code", None) or getattr(exc, "attributes", {}).get("code")}
    ctx.step("halt", lambda: halt(halt_file))
    return seen


@workflow
def life_fallback(ctx: Context, calls: str, flag: str) -> dict:
    """``charge`` fails and is caught -> ``refund`` -> ``notify`` fails while ``flag`` exists."""

    def charge() -> None:
        record_call(calls, "charge")
        raise ValueError("card declined")

    def notify() -> str:
        record_call(calls, "notify")
        if Path(flag).exists():
            raise ConnectionError("mail server down")
        return "sent"

    try:
        ctx.step("charge", charge)
        branch = "charged"
    except ValueError:
        ctx.step("refund", lambda: record_call(calls, "refund"))
        branch = "refunded"
    return {"branch": branch, "notify": ctx.step("notify", notify)}


@workflow
def life_caught_timeout(ctx: Context, calls: str, halt_file: str | None = None) -> dict:
    """``slow`` times out (no retries) and is caught; then ``after``, then a crash point."""
    try:
        ctx.step("slow", lambda: time.sleep(20), timeout=0.2)
        outcome = "finished"
    except TimeoutError:
        outcome = "timed out"
    ctx.step("after", lambda: record_call(calls, "after"))
    ctx.step("halt", lambda: halt(halt_file))
    return {"slow": outcome}


@workflow
def life_caught_then_raise(ctx: Context, calls: str, flag: str) -> str:
    """Catches ``bad``'s failure, runs ``charge``, then fails in its own body while ``flag`` exists."""

    def bad() -> None:
        record_call(calls, "bad")
        raise ValueError("bad step")

    try:
        ctx.step("bad", bad)
    except ValueError:
        pass
    ctx.step("charge", lambda: record_call(calls, "charge"))
    if Path(flag).exists():
        raise RuntimeError("the body says no")
    return "ok"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running anything
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@workflow
def life_zombie(ctx: Context, calls: str, timeout_s: float = 0.5, work_s: float = 4.0) -> int:
    """``charge`` overruns its timeout on its first call; each call records whether an earlier
    call's process is still alive (it must not be: a retry never runs beside a timed-out execution)."""

    def charge() -> int:
        earlier = [int(line.split()[1]) for line in Path(calls).read_text().splitlines()] if Path(calls).exists() else []
        beside = any(_pid_alive(pid) for pid in earlier if pid != os.getpid())
        with open(calls, "a") as out:
            out.write(f"start {os.getpid()} beside={beside}\n")
        if len(earlier) == 0:
            time.sleep(work_s)
        return os.getpid()

    return ctx.step("charge", charge, timeout=timeout_s, retries=1, backoff=0.01)


@workflow
def life_long(ctx: Context, seconds: float = 6.0) -> str:
    """One step that takes ``seconds``."""
    ctx.step("work", lambda: time.sleep(seconds))
    return "done"


class LifeBrokenStr(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@workflow
def life_broken_str(ctx: Context, where: str) -> str:
    """Raises LifeBrokenStr in a step (``where="step"``) or in the body."""
    if where == "step":
        ctx.step("boom", lambda: (_ for _ in ()).throw(LifeBrokenStr()))
    raise LifeBrokenStr()
