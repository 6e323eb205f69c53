"""Schedules and the scheduler role in the store, on both backends.

A schedule row is written once per name (``replace`` rewrites it), listed by name,
due when unpaused with ``next_at`` at or before now, and moved on only by a
compare-and-set on ``next_at``. The scheduler role is held by one holder at a time:
renewed by its holder, taken by another only once expired (bumping the token), and
released early on a clean stop. Many threads racing for the role: exactly one wins.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from durable_workers.records import ScheduleRecord
from durable_workers.registry import Registry
from durable_workers.scheduler import sync_app_schedules
from durable_workers.schedules import new_schedule
from tests.contract.conftest import Backend

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _every_minute(name: str = "report", input: dict[str, int] | None = None) -> ScheduleRecord:
    return new_schedule(name, "report", "* * * * *", input=input, now=T0)


def test_add_is_once_per_name_and_replace_rewrites(backend: Backend) -> None:
    store = backend.open("s")
    first = _every_minute(input={"day": 1})
    assert store.add_schedule(first, now=T0) is True
    assert store.add_schedule(replace(first, cron="0 * * * *"), now=T0) is False
    (row,) = store.list_schedules()
    assert (row.cron, row.input, row.next_at, row.origin) == ("* * * * *", {"day": 1}, T0 + 60, "cli")
    assert store.add_schedule(replace(first, cron="0 * * * *", next_at=T0 + 3600), replace=True, now=T0 + 1)
    row = store.get_schedule("report")
    assert row is not None and (row.cron, row.next_at, row.created_at) == ("0 * * * *", T0 + 3600, T0)
    assert store.get_schedule("missing") is None


def test_due_schedules_skip_paused_and_future_ones(backend: Backend) -> None:
    store = backend.open("s")
    for name in ("a", "b", "c"):
        store.add_schedule(_every_minute(name), now=T0)
    store.pause_schedule("b", True)
    assert [s.name for s in store.due_schedules(now=T0 + 59)] == []
    assert [s.name for s in store.due_schedules(now=T0 + 60)] == ["a", "c"]
    assert store.pause_schedule("b", False, next_at=T0 + 120) is True
    assert [s.name for s in store.due_schedules(now=T0 + 120)] == ["a", "c", "b"]  # most overdue first
    assert store.pause_schedule("missing", True) is False


def test_advance_is_a_compare_and_set_on_next_at(backend: Backend) -> None:
    store = backend.open("s")
    store.add_schedule(_every_minute(), now=T0)
    assert store.advance_schedule("report", expected_next_at=T0 + 60, next_at=T0 + 120, last_slot=T0 + 60)
    # A second scheduler that read the old row cannot move it back or fire that slot's successor twice.
    assert not store.advance_schedule("report", expected_next_at=T0 + 60, next_at=T0 + 120, last_slot=T0 + 60)
    row = store.get_schedule("report")
    assert row is not None and (row.next_at, row.last_slot) == (T0 + 120, T0 + 60)


def test_remove_deletes_only_that_schedule(backend: Backend) -> None:
    store = backend.open("s")
    store.add_schedule(_every_minute("a"), now=T0)
    store.add_schedule(_every_minute("b"), now=T0)
    assert store.remove_schedule("a") is True and store.remove_schedule("a") is False
    assert [s.name for s in store.list_schedules()] == ["b"]


def test_role_is_held_by_one_holder_until_it_expires(backend: Backend) -> None:
    store = backend.open("s")
    assert store.get_role("scheduler") is None
    assert store.hold_role("scheduler", "a", 10, now=T0) == 1
    assert store.hold_role("scheduler", "b", 10, now=T0 + 5) is None
    assert store.hold_role("scheduler", "a", 10, now=T0 + 9) == 1  # renewed: same token
    assert store.hold_role("scheduler", "b", 10, now=T0 + 18) is None  # a's renewal moved the expiry
    assert store.hold_role("scheduler", "b", 10, now=T0 + 19) == 2  # expired: taken, token bumped
    assert store.hold_role("scheduler", "a", 10, now=T0 + 20) is None
    role = store.get_role("scheduler")
    assert role is not None and (role.holder, role.token, role.expires_at) == ("b", 2, T0 + 29)


def test_release_lets_another_holder_take_the_role_at_once(backend: Backend) -> None:
    store = backend.open("s")
    assert store.hold_role("scheduler", "a", 60, now=T0) == 1
    assert store.release_role("scheduler", "b", now=T0 + 1) is False  # not b's to release
    assert store.hold_role("scheduler", "b", 60, now=T0 + 1) is None
    assert store.release_role("scheduler", "a", now=T0 + 1) is True
    assert store.hold_role("scheduler", "b", 60, now=T0 + 1) == 2


def test_racing_holders_elect_exactly_one(backend: Backend) -> None:
    store = backend.open("s")
    store.hold_role("scheduler", "old", 1, now=T0)  # expired for everyone below
    won: list[str] = []
    barrier = threading.Barrier(8)

    def contend(name: str) -> None:
        barrier.wait()
        if store.hold_role("scheduler", name, 60, now=T0 + 5) is not None:
            won.append(name)
        store.close()

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    role = store.get_role("scheduler")
    assert len(won) == 1 and role is not None and role.holder == won[0] and role.token == 2


def _app(**schedules: tuple[str, str, str] | None) -> Registry:
    registry = Registry()
    for name, schedule in schedules.items():
        registry.register(lambda ctx: None, name, schedule=schedule)
    return registry


def test_app_declarations_are_written_kept_in_step_and_removed(backend: Backend) -> None:
    store = backend.open("s")
    every_minute, hourly = ("* * * * *", "UTC", "latest"), ("0 * * * *", "Europe/Berlin", "all")
    assert sync_app_schedules(store, _app(report=every_minute, digest=every_minute), T0) == ["digest", "report"]
    assert sync_app_schedules(store, _app(report=every_minute, digest=every_minute), T0 + 1) == []  # unchanged
    store.pause_schedule("report", True)
    assert sync_app_schedules(store, _app(report=hourly, digest=None), T0 + 2) == ["report", "digest"]
    (report,) = store.list_schedules()
    assert (report.cron, report.timezone, report.catchup, report.paused) == ("0 * * * *", "Europe/Berlin", "all", True)
    assert report.next_at == T0 + 3600 and report.origin == "app"


def test_app_sync_leaves_run_time_schedules_and_other_apps_alone(backend: Backend) -> None:
    store = backend.open("s")
    store.add_schedule(new_schedule("report", "report", "0 0 * * *", now=T0), now=T0)  # added with the CLI
    store.add_schedule(replace(new_schedule("other", "other", "* * * * *", now=T0), origin="app"), now=T0)
    assert sync_app_schedules(store, _app(report=("* * * * *", "UTC", "latest")), T0) == []
    assert {(s.name, s.cron, s.origin) for s in store.list_schedules()} == {
        ("report", "0 0 * * *", "cli"), ("other", "* * * * *", "app")
    }
