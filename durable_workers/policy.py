"""Step policies (retries, back-off, timeout, attempts) and the ``@step`` decorator."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import keys

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

F = TypeVar("F", bound=Callable[..., Any])

#: Starts a step may have in all (crashed attempts count) unless its policy allows more.
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class StepPolicy:
    """How a step is retried and bounded.

    ``retries``: further attempts after the step raises (default 0).
    ``backoff``: seconds before the first retry, doubling each time, capped at
    ``max_backoff``. ``timeout``: seconds an attempt may run before it fails
    with :class:`StepTimeoutError`. ``max_attempts``: starts allowed in all,
    crashed attempts included, drains and forced stops not (default
    ``max(retries + 1, 3)``).
    """

    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None
    max_attempts: int | None = None

    def attempts_allowed(self) -> int:
        """Total starts allowed for the step."""
        if self.max_attempts is not None:
            return max(self.max_attempts, 1)
        return max(self.retries + 1, DEFAULT_MAX_ATTEMPTS)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)


DEFAULT_POLICY = StepPolicy()


def current_context() -> "Context | None":
    """The context of the workflow running on this thread, if any."""
    return keys.active_context()


def step(
    fn: F | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    timeout: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Make a function a durable step with a retry policy.

    Called inside a workflow, ``charge(10)`` runs as
    ``ctx.step("charge", lambda: charge(10))`` with this policy; called
    anywhere else (or inside another step) it is a plain call.
    """
    policy = StepPolicy(retries=retries, backoff=backoff, timeout=timeout, max_attempts=max_attempts)

    def decorate(target: F) -> F:
        step_name = name or keys.auto_name(target)

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = current_context()
            if context is None or keys.running_step() is not None:
                return target(*args, **kwargs)
            call = functools.partial(target, *args, **kwargs)
            call.__durable_policy__ = policy  # type: ignore[attr-defined]
            return context.step(step_name, call)

        wrapper.__durable_policy__ = policy  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate
