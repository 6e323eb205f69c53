"""Why a workflow is not running now: the lines ``durable status ID`` prints, as a list.

Plain data for any front end (the dashboard shows them; nothing here prints).
"""

from __future__ import annotations

from typing import Sequence

from ..cli_format import delayed_note, sleeping_note
from ..client import Client
from ..queues import queue_blockers
from ..records import Status, StepRecord, WorkflowRecord


def why_not_running(client: Client, record: WorkflowRecord, steps: Sequence[StepRecord], now: float) -> list[str]:
    """Each reason ``record`` is not being run now (empty when it runs or has ended).

    A sleep, a message or child it waits for, a delayed start, no live worker
    serving its name, and its queue's limits (concurrency, per-key, rate).
    """
    if record.status not in (Status.PENDING.value, Status.WAITING.value):
        return []
    lines = [note for note in (sleeping_note(record, now, steps), delayed_note(record, now)) if note]
    if record.status == Status.PENDING.value and record.name in client.unserved_names():
        lines.append(f"no live worker registers {record.name!r}")
    lines += queue_blockers(client.store, record, now)
    return lines
