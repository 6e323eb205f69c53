"""Retention: delete terminal workflows older than a cutoff, in bounded batches (``durable gc``).

:func:`collect_garbage` reads a page of collectable workflows (see
:mod:`durable_workers.backends.retention` for the rule: terminal, ended before
the cutoff, parent ended, no unfinished child), deletes that page in one short
write transaction, and goes on with the next page; the write lock is released
between two pages, so workers keep committing while a large backlog is
collected. It is idempotent: running it twice, or on two supervisors at once,
deletes each workflow once. :class:`RetentionSweep` runs it periodically for
the supervisor holding the scheduler lease when ``retention`` is configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from .backends import Collected, Store
from .backends.retention import terminal_only
from .config import GC_BATCH, GC_INTERVAL_MAX, GC_INTERVAL_MIN, GC_STATUSES

log = logging.getLogger("durable_workers.retention")


@dataclass(frozen=True)
class GcReport:
    """What :func:`collect_garbage` did: rows deleted (workflows only for a dry run), per-batch workflow counts."""

    collected: Collected
    batches: tuple[int, ...]
    dry_run: bool = False
    #: Stopped at ``max_batches`` with a full last page: more may be collectable (call again).
    more: bool = False


def collect_garbage(
    store: Store,
    older_than: float,
    statuses: Sequence[str] = GC_STATUSES,
    *,
    batch_size: int = GC_BATCH,
    dry_run: bool = False,
    now: float | None = None,
    on_batch: Callable[[Collected], None] | None = None,
    max_batches: int | None = None,
) -> GcReport:
    """Delete (or, ``dry_run``, count) the collectable workflows that ended over ``older_than`` seconds ago.

    Each batch of at most ``batch_size`` workflows is one write transaction;
    ``on_batch`` is called after each, outside any transaction. With
    ``max_batches`` it stops after that many (``more`` says whether a full
    page was the last). Raises ``ValueError`` for a status that is not terminal.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    terminal_only(statuses)  # before any page: a bad call deletes nothing
    before = (store.now() if now is None else now) - older_than
    total, batches = Collected(), []
    for status in dict.fromkeys(statuses):  # one status at a time: each page is an index range scan
        cursor = None
        while True:
            page = store.gc_candidates(before, [status], after=cursor, limit=batch_size)
            if not page:
                break
            cursor = (page[-1][1], page[-1][0])
            ids = [workflow_id for workflow_id, _ in page]
            done = Collected(workflows=len(page)) if dry_run else store.gc_delete(ids, before, statuses)
            total += done
            batches.append(done.workflows)
            if on_batch is not None:
                on_batch(done)
            if len(page) < batch_size:
                break
            if max_batches is not None and len(batches) >= max_batches:
                return GcReport(total, tuple(batches), dry_run, more=True)
    return GcReport(total, tuple(batches), dry_run)


class RetentionSweep:
    """The supervisor's periodic :func:`collect_garbage` (every quarter retention, within 1 s .. 1 h).

    One turn deletes at most ``SWEEP_BATCHES`` batches, so a large backlog
    never stalls the supervisor's loop: the sweep goes on in the next turns
    until it is through, then waits an interval. Only the supervisor that
    holds the scheduler lease runs it (``durable_workers.scheduler``); two at
    once would be harmless, each workflow is deleted once.
    """

    #: Batches one supervisor turn deletes at most (a few tens of milliseconds each on SQLite).
    SWEEP_BATCHES = 4

    def __init__(self, retention: float | None, *, batch_size: int = GC_BATCH) -> None:
        self.retention = retention
        self.batch_size = batch_size
        self.interval = min(max(retention / 4, GC_INTERVAL_MIN), GC_INTERVAL_MAX) if retention else None
        self._last: float | None = None  # monotonic

    def maybe_run(self, store: Store, now: float, mono: float) -> Collected | None:
        """Collect if retention is on and an interval passed since the last sweep; what it deleted."""
        if self.retention is None or self.interval is None:
            return None
        if self._last is not None and mono - self._last < self.interval:
            return None
        report = collect_garbage(store, self.retention, now=now, batch_size=self.batch_size,
                                 max_batches=self.SWEEP_BATCHES)  # fmt: skip
        if not report.more:  # only once it went through: a failed or unfinished sweep goes on next turn
            self._last = mono
        if report.collected.workflows:
            log.info("retention: deleted %d workflows that ended over %.0fs ago (%d steps)",
                     report.collected.workflows, self.retention, report.collected.steps)  # fmt: skip
        return report.collected
