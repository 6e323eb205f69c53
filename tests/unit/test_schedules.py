"""Cron slots, catchup planning, slot ids and the checks of a schedule's definition (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from durable_workers.config import CATCHUP_MAX, SCHEDULE_GRACE
from durable_workers.errors import DurableError, InputError
from durable_workers.records import ScheduleRecord
from durable_workers.registry import Registry
from durable_workers.schedules import (
    check_definition,
    latest_slot,
    new_schedule,
    next_slot,
    plan_firing,
    scheduled_at,
    slot_workflow_id,
)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _hourly(catchup: str, now: float) -> ScheduleRecord:
    return new_schedule("h", "h", "0 * * * *", catchup=catchup, now=now)


def test_weekday_mornings_follow_berlin_time_across_the_dst_change() -> None:
    berlin = new_schedule("r", "r", "0 9 * * MON-FRI", timezone_name="Europe/Berlin", now=_utc("2027-03-26T12:00:00"))
    # Friday 26 March 2027 09:00 CET has passed; Saturday and Sunday are skipped; DST starts on the 28th.
    assert berlin.next_at == _utc("2027-03-29T07:00:00")  # Monday 09:00 CEST = 07:00 UTC
    assert next_slot(berlin, _utc("2027-03-24T09:00:00")) == _utc("2027-03-25T08:00:00")  # 09:00 CET = 08:00 UTC


def test_latest_slot_includes_a_slot_exactly_at_now() -> None:
    hourly = _hourly("latest", _utc("2027-01-01T00:00:00"))
    assert latest_slot(hourly, _utc("2027-01-01T05:00:00")) == _utc("2027-01-01T05:00:00")
    assert latest_slot(hourly, _utc("2027-01-01T05:59:59.9")) == _utc("2027-01-01T05:00:00")


@pytest.mark.parametrize(
    ("catchup", "fired"),
    [("latest", ["05:00"]), ("all", ["01:00", "02:00", "03:00", "04:00", "05:00"]), ("none", [])],
)
def test_slots_missed_while_down_follow_catchup(catchup: str, fired: list[str]) -> None:
    """Down from 00:30 to 05:10: five hourly slots were missed."""
    schedule = _hourly(catchup, _utc("2027-01-01T00:30:00"))
    slots, next_at = plan_firing(schedule, _utc("2027-01-01T05:10:00"))
    assert [datetime.fromtimestamp(s, timezone.utc).strftime("%H:%M") for s in slots] == fired
    assert next_at == _utc("2027-01-01T06:00:00")


def test_catchup_none_still_fires_a_slot_seen_on_time() -> None:
    schedule = _hourly("none", _utc("2027-01-01T00:30:00"))
    assert plan_firing(schedule, _utc("2027-01-01T01:00:00") + SCHEDULE_GRACE) == ([_utc("2027-01-01T01:00:00")],
                                                                                   _utc("2027-01-01T02:00:00"))
    assert plan_firing(schedule, _utc("2027-01-01T01:00:01") + SCHEDULE_GRACE)[0] == []


def test_catchup_all_is_bounded_per_turn_and_goes_on_from_the_first_slot_not_fired() -> None:
    every_second = new_schedule("s", "s", "* * * * * *", catchup="all", now=0.0)
    slots, next_at = plan_firing(every_second, float(CATCHUP_MAX + 500))
    assert len(slots) == CATCHUP_MAX and slots == [float(i) for i in range(1, CATCHUP_MAX + 1)]
    assert next_at == CATCHUP_MAX + 1.0
    assert plan_firing(replace(every_second, next_at=next_at), float(CATCHUP_MAX + 500))[0][-1] == CATCHUP_MAX + 500.0


def test_a_schedule_not_due_fires_nothing() -> None:
    schedule = _hourly("all", _utc("2027-01-01T00:30:00"))
    assert plan_firing(schedule, _utc("2027-01-01T00:59:59")) == ([], schedule.next_at)


def test_slot_ids_are_name_at_iso_utc_and_read_back() -> None:
    slot = _utc("2026-12-24T08:00:00")
    assert slot_workflow_id("report", slot) == "report@2026-12-24T08:00:00Z"
    assert scheduled_at("report@2026-12-24T08:00:00Z") == datetime(2026, 12, 24, 8, tzinfo=timezone.utc)
    assert scheduled_at("plain-id") is None and scheduled_at("a@not-a-time") is None


@pytest.mark.parametrize(
    ("cron", "zone", "catchup", "message"),
    [
        ("bogus", "UTC", "latest", "bad cron expression 'bogus'"),
        ("61 * * * *", "UTC", "latest", "bad cron expression"),
        ("0 9 * * *", "Mars/Base", "latest", "unknown time zone 'Mars/Base'"),
        ("0 9 * * *", "UTC", "sometimes", "catchup must be one of latest, all, none"),
    ],
)
def test_bad_definitions_are_one_line_input_errors(cron: str, zone: str, catchup: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        check_definition(cron, zone, catchup)
    assert "\n" not in str(caught.value)


def test_schedule_names_may_not_hold_the_slot_separator() -> None:
    with pytest.raises(InputError, match="without '@'"):
        new_schedule("a@b", "a", "* * * * *", now=0.0)


def test_workflow_decorator_checks_its_schedule_when_the_app_loads() -> None:
    registry = Registry()

    def report(ctx: object, day: str = "today") -> str:
        return day

    def needs_input(ctx: object, order_id: str) -> str:
        return order_id

    spec = registry.register(report, schedule=("0 9 * * MON-FRI", "Europe/Berlin", "latest"))
    assert registry.scheduled() == [spec]
    with pytest.raises(DurableError, match="'needs_input'.*order_id"):
        registry.register(needs_input, schedule=("0 9 * * *", "UTC", "latest"))
    with pytest.raises(DurableError, match="'report2'.*bad cron"):
        registry.register(report, "report2", schedule=("nope", "UTC", "latest"))


def test_a_fixed_time_slot_fires_once_the_night_clocks_go_back() -> None:
    """Berlin leaves summer time on 31 October 2027: 02:30 comes twice, the nightly run once."""
    nightly = new_schedule("n", "n", "30 2 * * *", timezone_name="Europe/Berlin", now=_utc("2027-10-30T12:00:00"))
    assert nightly.next_at == _utc("2027-10-31T00:30:00")  # 02:30 CEST
    assert next_slot(nightly, nightly.next_at) == _utc("2027-11-01T01:30:00")  # not 02:30 CET the same night
    quarterly = new_schedule("q", "q", "*/30 * * * *", timezone_name="Europe/Berlin", now=_utc("2027-10-31T00:10:00"))
    slots = [quarterly.next_at]
    while len(slots) < 4:
        slots.append(next_slot(quarterly, slots[-1]))
    assert slots == [_utc("2027-10-31T00:30:00") + 1800 * i for i in range(4)]  # an interval goes on through both


def test_a_slot_in_the_skipped_hour_fires_at_the_hour_after() -> None:
    nightly = new_schedule("n", "n", "30 2 * * *", timezone_name="Europe/Berlin", now=_utc("2027-03-27T12:00:00"))
    assert nightly.next_at == _utc("2027-03-28T01:00:00")  # 02:30 does not exist that night: 03:00 CEST
