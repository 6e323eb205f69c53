"""Queues: named limits on how many workflows run at once and how fast they start.

Declare one in the app module, next to the workflows that use it::

    payments = Queue("payments", concurrency=5, worker_concurrency=2, rate=(100, 60.0))

    @workflow(queue=payments)          # or queue="payments"; submit(..., queue=) overrides
    def charge(ctx, order_id): ...

Every worker of the app writes the declared limits to the database when it
starts, so the limits hold across every supervisor and host sharing it. A
workflow in no declared queue is in the ``default`` queue, which is unlimited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .backends.queues import QueueLimits
from .errors import DuplicateWorkflowError, DurableError, InputError
from .records import DEFAULT_QUEUE, WorkflowRecord


def _positive_int(value: object, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DurableError(f"{what}={value!r}: give a whole number of at least 1 (or None for no limit)")


@dataclass(frozen=True)
class Queue:
    """A queue's limits (None: no limit of that kind).

    - ``concurrency``: workflows of the queue RUNNING at once across the whole
      fleet (every worker, supervisor and host on the database). WAITING
      workflows (sleeping, receiving, awaiting a child) do not count.
    - ``worker_concurrency``: the same, per worker process.
    - ``rate=(N, SECONDS)``: at most N workflows of the queue *start* (their
      first claim) in any window of that many seconds (a sliding window).
      A workflow resuming after a wait, a crash or a drain is not a new start.
    - ``per_key_concurrency``: workflows RUNNING at once per
      ``submit(..., concurrency_key=...)``; workflows without a key are not limited by it.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate: tuple[int, float] | None = None
    per_key_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise DurableError(f"Queue({self.name!r}): give the queue a non-empty name")
        for what in ("concurrency", "worker_concurrency", "per_key_concurrency"):
            _positive_int(getattr(self, what), f"Queue({self.name!r}, {what}")
        if self.rate is not None:
            ok = isinstance(self.rate, tuple) and len(self.rate) == 2
            if ok:
                _positive_int(self.rate[0], f"Queue({self.name!r}, rate[0]")
                ok = isinstance(self.rate[1], (int, float)) and not isinstance(self.rate[1], bool) and self.rate[1] > 0
            if not ok:
                raise DurableError(f"Queue({self.name!r}, rate={self.rate!r}): give (starts, seconds), e.g. (100, 60.0)")
        from .registry import default_registry

        default_registry.register_queue(self)

    def limits(self) -> QueueLimits:
        """This queue as the store records it."""
        count, period = self.rate if self.rate is not None else (None, None)
        return QueueLimits(
            self.name, self.concurrency, self.worker_concurrency, count,
            None if period is None else float(period), self.per_key_concurrency,
        )  # fmt: skip


def queue_name(queue: "Queue | str | None") -> str | None:
    """The name of a ``queue=`` argument (a :class:`Queue` or its name); raises for anything else."""
    if queue is None or isinstance(queue, Queue):
        return None if queue is None else queue.name
    if not isinstance(queue, str) or not queue.strip():
        raise DurableError(f"queue={queue!r}: give a Queue or a queue name")
    return queue


#: What ``submit(..., on_duplicate=)`` accepts.
ON_DUPLICATE = ("raise", "return")


def placement(
    spec: Any, queue: "Queue | str | None", priority: int, concurrency_key: str | None, dedupe_key: str | None,
    on_duplicate: str,
) -> dict[str, Any]:  # fmt: skip
    """A submit's queue options, checked: the store's ``queue``, ``priority``, ``concurrency_key``, ``dedupe_key``.

    The queue is the given one, else the workflow's ``@workflow(queue=)``, else the default queue.
    Raises :class:`InputError` with a one-line reason.
    """
    try:
        name = queue_name(queue)
    except DurableError as exc:
        raise InputError(str(exc)) from None
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31 - 1:
        raise InputError(f"priority={priority!r}: give a whole number (higher runs first)")
    for what, value in (("concurrency_key", concurrency_key), ("dedupe_key", dedupe_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f"{what}={value!r}: give a non-empty string")
    if on_duplicate not in ON_DUPLICATE:
        raise InputError(f"on_duplicate={on_duplicate!r}: give 'raise' or 'return'")
    default = spec.queue if spec is not None and spec.queue else DEFAULT_QUEUE
    return dict(queue=name or default, priority=priority, concurrency_key=concurrency_key, dedupe_key=dedupe_key)


def refuse_duplicate(record: WorkflowRecord, workflow_id: str, on_duplicate: str) -> bool:
    """Whether ``record`` (what a submit of ``workflow_id`` found) is another workflow holding its dedupe key.

    Raises :class:`DuplicateWorkflowError` for it unless ``on_duplicate == "return"``.
    """
    if record.id == workflow_id:
        return False
    if on_duplicate == "return":
        return True
    raise DuplicateWorkflowError(
        f"dedupe key {record.dedupe_key!r} is held by workflow {record.id} ({record.status}) in queue "
        f"{record.queue!r}; wait for it to finish, or submit with on_duplicate='return'",
        record,
    )


def queue_blockers(store: Any, record: WorkflowRecord, now: float) -> list[str]:
    """Why the PENDING (or due WAITING) workflow ``record`` is not taken now by its queue's limits, one line each."""
    limits = next((q for q in store.list_queues() if q.name == record.queue), None)
    if limits is None or not limits.limited:
        return []
    reasons = []
    running, keyed = store.queue_load(record.queue, record.concurrency_key)
    if limits.concurrency is not None and running >= limits.concurrency:
        reasons.append(f"queue {record.queue} at its concurrency limit {running}/{limits.concurrency}")
    if limits.per_key_concurrency is not None and record.concurrency_key and keyed >= limits.per_key_concurrency:
        reasons.append(
            f"queue {record.queue}: key {record.concurrency_key!r} at its limit {keyed}/{limits.per_key_concurrency}"
        )
    opens = store.rate_window_opens(record.queue, now=now) if record.started_at is None else None
    if opens is not None:
        until = time.strftime("%H:%M:%S", time.gmtime(opens))
        reasons.append(
            f"rate limit of queue {record.queue} ({limits.rate_limit} per {limits.rate_period:g}s) until {until} UTC"
        )
    return reasons


__all__ = ["DEFAULT_QUEUE", "ON_DUPLICATE", "Queue", "placement", "queue_blockers", "queue_name", "refuse_duplicate"]
