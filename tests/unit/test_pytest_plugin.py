"""The pytest plugin (durable_workers/pytest_plugin.py): a user's own test suite, run in a subprocess.

Each test writes a small app and a test module that uses the plugin's fixtures,
runs pytest on them in a fresh process (``pytester.runpytest_subprocess``), once
on a temporary SQLite file and once with ``--durable-db`` on PostgreSQL, and
checks the outcomes and that every database was closed (SQLite) or dropped (PostgreSQL).
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from durable_workers import clock
from durable_workers.backends import open_store

pytest_plugins = ["pytester"]

APP = '''
from durable_workers import Context, workflow

SENT: list[str] = []


@workflow
def welcome(ctx: Context, user: str) -> str:
    ctx.sleep(86_400)
    ctx.step("email", lambda: SENT.append(user) or f"sent to {user}")
    return "done"


@workflow
def approval(ctx: Context, amount: int) -> str:
    decision = ctx.recv("approval", timeout=3600)
    if decision is None:
        return "timed out"
    return "approved" if decision["ok"] else "rejected"


@workflow(schedule="0 9 * * *", timezone="Europe/Berlin")
def nightly(ctx: Context) -> str:
    return "ran"
'''

CONFTEST = '''
import json

import pytest


@pytest.fixture(autouse=True)
def _record_db(request):
    if "durable_db" in request.fixturenames:
        with open({record!r}, "a") as out:
            out.write(json.dumps(request.getfixturevalue("durable_db")) + "\\n")
'''

USER_TESTS = '''
import datetime as dt
import time
from zoneinfo import ZoneInfo

import app_flows
from durable_workers import clock

DAY = 86_400


def test_sleep_a_day_then_email(durable_run, durable_client):
    record = durable_run("welcome", "w-1", {"user": "ada"})
    assert record.status == "COMPLETED" and record.result == "done"
    assert app_flows.SENT == ["ada"]
    assert durable_client.steps("w-1")[-1].step_key == "email#1"


def test_sleep_advanced_by_hand(durable_run, durable_clock):
    assert durable_run("welcome", "w-2", {"user": "bob"}, auto_advance=False).status == "WAITING"
    durable_clock.advance(DAY - 1)
    assert durable_run("welcome", "w-2", auto_advance=False).status == "WAITING"
    durable_clock.advance(1)
    assert durable_run("welcome", "w-2", auto_advance=False).status == "COMPLETED"


def test_message_before_timeout(durable_run, durable_client):
    assert durable_run("approval", "a-1", {"amount": 5}, auto_advance=False).status == "WAITING"
    durable_client.send("a-1", "approval", {"ok": True})
    assert durable_run("approval", "a-1").result == "approved"


def test_message_times_out(durable_run, durable_clock):
    started = durable_clock.now()
    assert durable_run("approval", "a-2", {"amount": 5}).result == "timed out"
    assert durable_clock.now() >= started + 3600


def test_nightly_at_nine_berlin(durable_clock, durable_fire_schedules, durable_run):
    durable_clock.set(dt.datetime(2026, 3, 2, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    assert durable_fire_schedules() == []
    durable_clock.advance(3599)
    assert durable_fire_schedules() == []
    durable_clock.advance(1)
    assert durable_fire_schedules() == ["nightly@2026-03-02T08:00:00Z"]
    assert durable_fire_schedules() == []
    assert durable_run("nightly", "nightly@2026-03-02T08:00:00Z").result == "ran"


def test_store_follows_the_clock(durable_store, durable_clock):
    durable_clock.set(1_000_000.0)
    assert durable_store.now() == 1_000_000.0
    durable_clock.advance(60)
    assert durable_store.now() == 1_000_060.0


def test_real_clock_again_after(durable_store):
    assert clock.installed is None
    assert abs(durable_store.now() - time.time()) < 60
'''

#: Tests in USER_TESTS.
USER_TEST_COUNT = 7


def _write_suite(pytester: pytest.Pytester) -> Path:
    """The user's app, conftest and tests in ``pytester.path``; the file the conftest records databases in."""
    record = pytester.path / "databases.jsonl"
    pytester.makepyfile(app_flows=APP, conftest=CONFTEST.format(record=str(record)), test_flows=USER_TESTS)
    pytester.makeini("[pytest]\ntimeout = 10\n")
    return record


def _recorded(record: Path) -> list[str]:
    """The ``durable_db`` values the user's tests got, in order."""
    return [json.loads(line) for line in record.read_text().splitlines()]


def _pg_databases(pg_url: str) -> set[str]:
    """Names of the databases on ``pg_url``'s server."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.timeout(30)
def test_entry_point_is_registered() -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "durable_workers"]
    assert [ep.value for ep in found] == ["durable_workers.pytest_plugin"]
    assert hasattr(found[0].load(), "durable_clock")


@pytest.mark.timeout(120)
def test_user_suite_on_sqlite(pytester: pytest.Pytester) -> None:
    record = _write_suite(pytester)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=USER_TEST_COUNT)
    paths = _recorded(record)
    assert len(paths) == USER_TEST_COUNT and len(set(paths)) == USER_TEST_COUNT  # a fresh database per test
    for path in paths:
        assert Path(path).exists()
        assert not Path(path + "-wal").exists(), f"{path} was left open"


@pytest.mark.timeout(120)
def test_user_suite_on_postgres(pytester: pytest.Pytester, pg_url: str) -> None:
    record = _write_suite(pytester)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--durable-db", pg_url)
    result.assert_outcomes(passed=USER_TEST_COUNT)
    urls = _recorded(record)
    assert len(set(urls)) == USER_TEST_COUNT and all(url.startswith("postgresql://") for url in urls)
    names = {urlsplit(url).path.lstrip("/") for url in urls}
    assert not names & _pg_databases(pg_url), "a test database was not dropped"


@pytest.mark.timeout(60)
def test_bad_durable_db_is_one_line(pytester: pytest.Pytester) -> None:
    _write_suite(pytester)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--durable-db", "mysql://nope")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--durable-db takes a postgresql://* URL*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_run_here_never_waits_real_time(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """In this process: under a fake clock without auto-advance a sleeping run hands the workflow back at once."""
    from durable_workers import Client, default_registry
    from tests.apps.core_flows import calls_of
    from tests.apps.primitive_flows import sleep_flow  # noqa: F401  registers it

    db = str(tmp_path / "durable.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    calls = str(tmp_path / "calls")
    client = Client(db=db, registry=default_registry, store=open_store(db))
    try:
        with clock.fake_clock(1_000_000.0, auto_advance=False) as fake:
            record, _ = client.run_here("sleep_flow", "s-1", {"calls": calls, "seconds": 3600})
            assert (record.status, record.wake_at, calls_of(calls)) == ("WAITING", 1_003_600.0, ["before"])
            fake.advance(3599)
            assert client.run_here("sleep_flow", "s-1")[0].status == "WAITING"
            fake.advance(1)
            record, _ = client.run_here("sleep_flow", "s-1")
            assert (record.status, calls_of(calls)) == ("COMPLETED", ["before", "after"])
        assert clock.installed is None
    finally:
        client.close()
