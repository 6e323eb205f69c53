"""pytest plugin: test your own workflows in milliseconds, on SQLite or PostgreSQL.

Installed with the package (the ``pytest11`` entry point ``durable_workers``);
its fixtures:

- ``durable_db``: a fresh database for the test: a SQLite file in the test's
  temporary folder, or, with ``--durable-db postgresql://...`` (or the
  ``DURABLE_TEST_DB`` environment variable), a new PostgreSQL database created
  through that URL's server and dropped after the test.
- ``durable_store``: an open :class:`~durable_workers.backends.Store` on it.
- ``durable_client``: a :class:`~durable_workers.Client` on it with the default
  registry (your ``@workflow`` functions).
- ``durable_clock``: a :class:`~durable_workers.clock.FakeClock` the store
  follows while the test runs (``advance``, ``set``, ``now``).
- ``durable_run``: ``run(name, workflow_id=None, input=None, *, auto_advance=True)``
  runs a workflow to its end in this process, jumping the fake clock over
  durable sleeps and receive timeouts; returns its final row.
- ``durable_fire_schedules``: ``fire() -> list[str]`` submits the schedule
  slots due on the fake clock (what the fleet's scheduler does), returning the
  workflow ids submitted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import pytest

from . import clock as _clock
from .clock import FakeClock

if TYPE_CHECKING:  # only for annotations (loading the plugin imports the durable_workers package itself)
    from .backends import Store
    from .client import Client
    from .records import WorkflowRecord

#: Environment variable naming the PostgreSQL server tests create their databases on (like ``--durable-db``).
TEST_DB_ENV = "DURABLE_TEST_DB"
#: Holder name of the scheduler a test's ``fire()`` stands in for (it takes no scheduler lease).
TEST_SCHEDULER = "pytest"
#: The TTL that stand-in scheduler is given (unused: it never holds the lease).
TEST_SCHEDULER_TTL = 60.0


class DurableRun(Protocol):
    """The ``durable_run`` fixture's callable."""

    def __call__(
        self, name: str, workflow_id: str | None = None, input: dict[str, Any] | None = None, *, auto_advance: bool = True
    ) -> WorkflowRecord:
        """Submit (or find) ``workflow_id`` and run it here; its row at the end (or WAITING, see the fixture)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--durable-db URL``: run the durable fixtures on PostgreSQL databases created through URL."""
    group = parser.getgroup("durable_workers")
    group.addoption(
        "--durable-db",
        dest="durable_db",
        default=None,
        metavar="URL",
        help="postgresql://user@host:port/dbname: each test's durable_db is a new database on that server "
        f"(dropped after); default a temporary SQLite file (env: {TEST_DB_ENV})",
    )


def _server_url(config: pytest.Config) -> str | None:
    """The PostgreSQL URL tests create their databases through (``--durable-db``, else the environment), or None."""
    return config.getoption("durable_db", None) or os.environ.get(TEST_DB_ENV) or None


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a ``--durable-db`` (or ``DURABLE_TEST_DB``) that is not a PostgreSQL URL, before any test runs."""
    server = _server_url(config)
    if server is not None and not server.startswith(("postgresql://", "postgres://")):
        raise pytest.UsageError(f"--durable-db takes a postgresql://user@host:port/dbname URL, not {server!r}")


# --- PostgreSQL: a throwaway database per test, created through the server the URL names ---


def _create_pg_database(server_url: str) -> str:
    """A new, empty database on ``server_url``'s server (its role needs CREATEDB); its URL. Fails the test in one line."""
    from .backends.pg_admin import create_database
    from .errors import DurableError

    try:
        return create_database(server_url)
    except DurableError as exc:
        pytest.fail(f"--durable-db {exc}", pytrace=False)


def _drop_pg_database(server_url: str, url: str) -> None:
    """Drop ``url``'s database, disconnecting whoever is still connected to it."""
    from .backends.pg_admin import drop_database
    from .errors import DurableError

    try:
        drop_database(server_url, url)
    except DurableError as exc:
        pytest.fail(f"--durable-db {exc}", pytrace=False)


# --- fixtures ---


@pytest.fixture
def durable_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for this test: a SQLite file path, or a new PostgreSQL database's URL (dropped after)."""
    server = _server_url(request.config)
    if server is None:
        yield str(tmp_path / "durable.db")
        return
    url = _create_pg_database(server)
    try:
        yield url
    finally:
        _drop_pg_database(server, url)


@pytest.fixture
def durable_store(durable_db: str) -> Iterator[Store]:
    """An open Store on ``durable_db`` (its connections closed after the test)."""
    from .backends import open_store

    store = open_store(durable_db)
    try:
        yield store
    finally:
        store.close_idle()


@pytest.fixture
def durable_client(durable_db: str, durable_store: Store) -> Iterator[Client]:
    """A Client on ``durable_store`` with the default registry: the ``@workflow`` functions your test imported."""
    from .client import Client
    from .registry import default_registry

    client = Client(db=durable_db, registry=default_registry, store=durable_store)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def durable_clock() -> Iterator[FakeClock]:
    """A fake clock that every store of this process follows during the test (the real one after).

    Starts at the real time now; ``advance(seconds)``, ``set(epoch)``, ``now()``.
    ``auto_advance`` (default True): an in-process run (``durable_run``,
    ``Client.run_here``) jumps the clock to each durable wake time; False: it
    returns the workflow WAITING at once and the test moves the clock itself.
    """
    with _clock.fake_clock() as fake:
        yield fake


@pytest.fixture
def durable_run(durable_client: Client, durable_clock: FakeClock) -> DurableRun:
    """``run(name, workflow_id=None, input=None, *, auto_advance=True) -> WorkflowRecord``: run a workflow here.

    Submits it (or finds it: ``input=None`` resumes an existing one) and runs it
    in this process on the fake clock. ``auto_advance=True`` jumps the clock
    over every durable sleep and receive timeout, so the run ends (COMPLETED,
    FAILED, ...) without waiting real time; a receive with no timeout still
    returns it WAITING. ``auto_advance=False`` returns it WAITING at its first
    wait that is not due: send a message or advance the clock, then run again.
    """

    def run(
        name: str, workflow_id: str | None = None, input: dict[str, Any] | None = None, *, auto_advance: bool = True
    ) -> WorkflowRecord:
        before, durable_clock.auto_advance = durable_clock.auto_advance, auto_advance
        try:
            record, _outcome = durable_client.run_here(name, workflow_id, input)
        finally:
            durable_clock.auto_advance = before
        return record

    return run


def fire_due_schedules(client: Client) -> list[str]:
    """Do one scheduler turn now (on the store's clock): write the app's schedules, submit the due slots.

    The same as the fleet's scheduler (``durable_workers.scheduler``): the
    ``@workflow(schedule=)`` declarations of ``client.registry`` are written
    first (a new one starts at its next slot after now), then every due slot
    is submitted as ``NAME@<slot ISO UTC>``. Returns the ids submitted (or
    found already submitted), most overdue schedule first; a slot the
    scheduler refused (its workflow not registered here, an input that does
    not fit) is left out, as it is in the fleet.
    """
    from .retention import RetentionSweep
    from .scheduler import Scheduler, sync_app_schedules
    from .schedules import plan_firing, slot_workflow_id

    store = client.store
    now = store.now()
    scheduler = Scheduler(client, TEST_SCHEDULER, TEST_SCHEDULER_TTL, RetentionSweep(None))
    sync_app_schedules(store, client.registry, now)
    submitted: list[str] = []
    for schedule in store.due_schedules(now=now):
        slots, _next_at = plan_firing(schedule, now)
        scheduler.fire(schedule, now)
        submitted.extend(slot_workflow_id(schedule.name, slot) for slot in slots)
    return [workflow_id for workflow_id in submitted if _exists(store, workflow_id)]


def _exists(store: Store, workflow_id: str) -> bool:
    from .errors import WorkflowNotFound

    try:
        store.get_workflow(workflow_id)
    except WorkflowNotFound:
        return False
    return True


@pytest.fixture
def durable_fire_schedules(durable_client: Client, durable_clock: FakeClock) -> Callable[[], list[str]]:
    """``fire() -> list[str]``: submit the schedule slots due on the fake clock; the workflow ids submitted.

    Set the clock first (``durable_clock.set(...)``) and call ``fire()`` once to
    write the app's ``@workflow(schedule=)`` declarations at that time; then
    ``durable_clock.advance(...)`` past a slot and ``fire()`` again.
    """
    return lambda: fire_due_schedules(durable_client)


__all__ = [
    "DurableRun",
    "TEST_DB_ENV",
    "durable_client",
    "durable_clock",
    "durable_db",
    "durable_fire_schedules",
    "durable_run",
    "durable_store",
    "fire_due_schedules",
    "pytest_addoption",
    "pytest_configure",
]
