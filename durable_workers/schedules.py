"""Cron schedules: checking a definition, the slots it fires, and each slot's workflow id.

A schedule reads its cron expression (five fields, or six with seconds last;
parsed by croniter) in its IANA time zone, so ``0 9 * * MON-FRI`` in
``Europe/Berlin`` fires at 09:00 Berlin time through daylight-saving changes.
Slot times are UNIX seconds; slot ``t`` of schedule ``NAME`` submits the
workflow ``NAME@<t as ISO UTC>`` (for example ``report@2026-12-24T08:00:00Z``),
so submitting a slot twice is idempotent.

Missed slots (no scheduler ran when they were due) follow the schedule's
``catchup``: ``latest`` fires only the most recent one, ``all`` fires each
(oldest first, at most :data:`~durable_workers.config.CATCHUP_MAX` per turn),
``none`` fires none. A slot counts as missed once it is more than
:data:`~durable_workers.config.SCHEDULE_GRACE` seconds old when first seen.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .config import CATCHUP_MAX, SCHEDULE_GRACE
from .errors import InputError
from .records import ScheduleRecord

#: What a schedule does with slots missed while no scheduler ran.
CATCHUP_MODES = ("latest", "all", "none")
_SLOT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r}; give an IANA name such as UTC or Europe/Berlin") from None


def check_definition(cron: str, timezone_name: str = "UTC", catchup: str = "latest") -> None:
    """Raise :class:`InputError` (one line, what to write instead) for a bad cron, zone or catchup."""
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise InputError(
            f"bad cron expression {cron!r}; write five fields 'minute hour day month weekday' "
            "(a sixth gives seconds, a seventh the year), such as '0 9 * * MON-FRI'"
        )
    _zone(timezone_name)
    if catchup not in CATCHUP_MODES:
        raise InputError(f"catchup must be one of {', '.join(CATCHUP_MODES)}, not {catchup!r}")


def _iter(schedule: ScheduleRecord, start: float) -> Any:
    return croniter(schedule.cron, datetime.fromtimestamp(start, _zone(schedule.timezone)))


def next_slot(schedule: ScheduleRecord, after: float) -> float:
    """The first slot strictly after ``after``.

    When the clocks go back, the repeated hour's wall times come twice: a
    fixed-time schedule (an hour field without ``*``, such as ``30 2 * * *``)
    fires at the first of them only; an interval one (``*/15 * * * *``) fires
    through both, as its interval says.
    """
    slots = _iter(schedule, after)
    slot = float(slots.get_next(float))
    if "*" not in schedule.cron.split()[1]:
        zone = _zone(schedule.timezone)
        while datetime.fromtimestamp(slot, zone).fold:  # the second pass of a repeated wall time
            slot = float(slots.get_next(float))
    return slot


def latest_slot(schedule: ScheduleRecord, at: float) -> float:
    """The last slot at or before ``at`` (slots fall on whole seconds)."""
    return float(_iter(schedule, math.floor(at) + 1).get_prev(float))


def new_schedule(
    name: str,
    workflow: str,
    cron: str,
    *,
    timezone_name: str = "UTC",
    catchup: str = "latest",
    input: Mapping[str, Any] | None = None,
    origin: str = "cli",
    now: float,
) -> ScheduleRecord:
    """A checked schedule whose first slot is the first after ``now``."""
    if not name or "@" in name:
        raise InputError(f"bad schedule name {name!r}; use a non-empty name without '@'")
    check_definition(cron, timezone_name, catchup)
    values = dict(input or {})
    try:
        json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"schedule {name}: its input must be a JSON object ({exc})") from None
    record = ScheduleRecord(name, workflow, cron, timezone_name, catchup, values, origin, created_at=now)
    return replace(record, next_at=next_slot(record, now))


def plan_firing(schedule: ScheduleRecord, now: float) -> tuple[list[float], float]:
    """The slots to fire now and the new ``next_at``, for a schedule whose ``next_at`` is due.

    Slots from ``next_at`` to ``now`` are due; which of them fire follows the
    schedule's catchup. The new ``next_at`` is the first slot after ``now``,
    or, for ``all`` stopped at ``CATCHUP_MAX``, the first slot not fired.
    """
    if schedule.next_at > now:
        return [], schedule.next_at
    if schedule.catchup == "all":
        slots, slot = [], schedule.next_at
        while slot <= now and len(slots) < CATCHUP_MAX:
            slots.append(slot)
            slot = next_slot(schedule, slot)
        return slots, slot
    latest = max(latest_slot(schedule, now), schedule.next_at)
    fire = schedule.catchup == "latest" or now - latest <= SCHEDULE_GRACE
    return ([latest] if fire else []), next_slot(schedule, now)


def slot_iso(slot: float) -> str:
    """A slot time as ISO 8601 UTC to the second (``2026-12-24T08:00:00Z``)."""
    return datetime.fromtimestamp(slot, timezone.utc).strftime(_SLOT_FORMAT)


def slot_workflow_id(schedule_name: str, slot: float) -> str:
    """The id of the workflow slot ``slot`` of ``schedule_name`` submits: ``NAME@<slot ISO UTC>``."""
    return f"{schedule_name}@{slot_iso(slot)}"


def scheduled_at(workflow_id: str) -> datetime | None:
    """The slot time (aware, UTC) of a workflow a schedule submitted, from its id; None for another id.

    A scheduled workflow can call ``scheduled_at(ctx.workflow_id)`` to know
    which slot it runs for (a nightly report's date, say), on every replay alike.
    """
    _, sep, stamp = workflow_id.rpartition("@")
    if not sep:
        return None
    try:
        return datetime.strptime(stamp, _SLOT_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


__all__ = [
    "CATCHUP_MODES",
    "check_definition",
    "latest_slot",
    "new_schedule",
    "next_slot",
    "plan_firing",
    "scheduled_at",
    "slot_iso",
    "slot_workflow_id",
]
