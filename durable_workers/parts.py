"""What the context's mixins (primitives, messaging, children) need of the context: its state and hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import keys

if TYPE_CHECKING:
    from .backends import Store

T = TypeVar("T")


class ContextParts:
    """The attributes and step hooks :class:`~durable_workers.context.Context` provides to its mixins."""

    workflow_id: str
    #: True in the read-only replay of ``durable check-replay`` (:mod:`durable_workers.replaycheck`).
    read_only = False
    _store: "Store"
    _worker_id: str
    _token: int
    _by_position: dict[tuple[str, int], Any]
    _visited: set[str]

    def _run_step(self, scope: keys.Scope, name: str, fn: Callable[[], T], policy: Any) -> T:
        raise NotImplementedError  # the Context's

    def _raised_by(self, key: str, error: Exception) -> Exception:
        raise NotImplementedError  # the Context's

    def stop_replay(self, step_key: str, detail: str) -> BaseException:
        raise NotImplementedError  # the replay check's
