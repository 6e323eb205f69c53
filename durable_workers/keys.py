"""Scopes, step keys and the context that follows a call (``contextvars``).

Within a *scope* the k-th call of a step named ``n`` gets the key ``n#k``.
The workflow body is the root scope (path ``""``); ``ctx.parallel`` reserves
``parallel#k`` in the calling scope and gives branch ``i`` the child scope
``parallel#k/i/`` before any branch thread starts.

Which workflow, scope and step a call belongs to is carried in context
variables, set by the engine on the workflow's thread and by ``ctx.parallel``
on each branch thread. A thread the user starts (a ``ThreadPoolExecutor``, say)
begins with none of them, so a step called there is refused with a clear
error instead of silently sharing another thread's scope.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable

from .errors import DurableError

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context


class Scope:
    """Counters of one scope; owned by the one thread that runs it."""

    __slots__ = ("path", "counts", "position", "owner")

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.position = 0
        self.owner = threading.get_ident()

    def next_call(self, name: str) -> int:
        """Count one more call of ``name`` in this scope and return its number (1-based)."""
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return count


#: The workflow context and scope of the running code (set per thread by the engine).
_ACTIVE: ContextVar[tuple["Context", Scope] | None] = ContextVar("durable_active", default=None)
#: Key of the step whose function is running, if any.
_IN_STEP: ContextVar[str | None] = ContextVar("durable_in_step", default=None)


def activate(context: "Context | None", scope: Scope | None = None) -> None:
    """Make ``context`` (with ``scope``, default a new root scope) current for this thread."""
    _ACTIVE.set(None if context is None else (context, scope or Scope("")))
    _IN_STEP.set(None)


def active_context() -> "Context | None":
    """The workflow context of the running code, if any."""
    active = _ACTIVE.get()
    return active[0] if active is not None else None


def current_scope(context: "Context", what: str) -> Scope:
    """The scope ``what`` (``ctx.step``, ``ctx.parallel``) runs in; refuses foreign threads and nesting."""
    step_key = _IN_STEP.get()
    if step_key is not None:
        raise DurableError(f"{what} was called inside step {step_key}; steps cannot nest")
    active = _ACTIVE.get()
    if active is None or active[0] is not context or active[1].owner != threading.get_ident():
        raise DurableError(
            f"{what} was called from a thread the workflow did not start (a ThreadPoolExecutor or "
            "threading.Thread); run concurrent steps with ctx.parallel(lambda: ctx.step(...), ...)"
        )
    return active[1]


def running_step() -> str | None:
    """Key of the step whose function runs on this thread, if any."""
    return _IN_STEP.get()


def enter_step(step_key: str | None) -> None:
    """Mark this thread as running the function of ``step_key`` (``None``: no step)."""
    _IN_STEP.set(step_key)


def auto_name(fn: Callable[..., Any]) -> str:
    """A stable step name for ``fn``: its qualified name, or a lambda's file and line."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    if "<lambda>" in name:
        code = getattr(fn, "__code__", None)
        if code is not None:
            return f"lambda@{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return name.replace("<locals>.", "")


#: Step names starting with this are the context's own (sleep, now, patches); user step ids cannot.
RESERVED_PREFIX = "durable:"


def check_name(name: str) -> None:
    """Raise :class:`DurableError` unless ``name`` can be a step id (non-empty, no ``#`` or ``/``, not reserved)."""
    if not name or "#" in name or "/" in name:
        raise DurableError(f"invalid step id {name!r}: use a non-empty name without '#' or '/'")
    if name.startswith(RESERVED_PREFIX):
        raise DurableError(f"invalid step id {name!r}: names starting with {RESERVED_PREFIX!r} are reserved")


def idempotency_key(workflow_id: str, step_key: str) -> str:
    """``ESCAPED_WORKFLOW_ID/STEP_KEY``, unambiguous for any workflow id.

    ``%`` and ``/`` in the workflow id are written ``%25`` and ``%2F``, so the
    first ``/`` always separates the workflow id from the step key (which may
    contain ``/`` itself, e.g. ``parallel#1/0/charge#1``).
    """
    escaped = workflow_id.replace("%", "%25").replace("/", "%2F")
    return f"{escaped}/{step_key}"
