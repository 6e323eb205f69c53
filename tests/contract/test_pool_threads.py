"""Connections of threads that ended without closing them are reclaimed (``backend`` fixture: both dialects).

A threaded web server runs each request in a thread that uses one ``Client`` and ends; nothing
closes the thread's connection. PostgreSQL's pool (``pool_size``) ran dry after that many
threads: the next request waited 10 s and failed as if the database were busy. SQLite's pool has
no limit, so connections piled up instead.
"""

from __future__ import annotations

import threading

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)
from tests.contract.conftest import Backend

NAME = "backend_other_side"
POOL = 2


def in_a_thread_that_ends(action) -> None:  # type: ignore[no-untyped-def]
    """Run ``action`` in a new thread that ends without closing anything; re-raise what it raised."""
    raised: list[BaseException] = []

    def body() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the request thread hung"
    if raised:
        raise raised[0]


@pytest.mark.timeout(120)
def test_a_client_used_by_many_short_lived_threads_keeps_working(backend: Backend) -> None:
    client = backend.client("threads")
    store = client.store
    if store.db._max_connections:  # PostgreSQL: a small pool (SQLite's has no limit)
        store.db._max_connections = POOL
    for i in range(4 * POOL):
        in_a_thread_that_ends(lambda i=i: client.submit(NAME, f"req-{i}", {}))
    in_a_thread_that_ends(lambda: client.get("req-0"))
    assert sorted(r.id for r in client.list(limit=100)) == sorted(f"req-{i}" for i in range(4 * POOL))
    # The ended threads' connections were closed: only the live ones (this thread's) stay checked out.
    assert len(store.db._in_use) <= POOL


def test_a_live_thread_keeps_its_connection(backend: Backend) -> None:
    """Reclaiming never takes the connection of a thread that is still running."""
    store = backend.open("live")
    release, holding = threading.Event(), threading.Event()

    def keeper() -> None:
        store.list_workers()
        holding.set()
        release.wait(60)

    thread = threading.Thread(target=keeper)
    thread.start()
    try:
        assert holding.wait(60)
        assert store.db.reclaim_orphans() == 0
        store.list_workers()  # this thread opens its own beside the keeper's
        assert store.db.reclaim_orphans() == 0
    finally:
        release.set()
        thread.join(60)
    assert store.db.reclaim_orphans() == 1  # the keeper ended: its connection goes
