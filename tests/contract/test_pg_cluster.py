"""The PostgreSQL test server itself: reachable, a fresh database per test, dropped afterwards."""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit

import psutil
import pytest

from tests.pg_cluster import PgCluster

try:
    import psycopg
except ImportError:  # the pg_server fixture then skips (or fails in CI) with the reason
    psycopg = None


def _database_names(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_server_answers_with_its_own_clock(pg_url: str) -> None:
    """``SELECT now()`` answers on the per-test database, as the superuser the fixture made."""
    with psycopg.connect(pg_url) as conn:
        now, database, superuser = conn.execute(
            "SELECT now(), current_database(), usesuper FROM pg_user WHERE usename = current_user"
        ).fetchone()
    assert now.tzinfo is not None
    assert database == urlsplit(pg_url).path.lstrip("/")
    assert superuser is True


def test_each_test_database_is_new_and_empty(pg_url: str, pg_databases: Callable[[], str]) -> None:
    """A table made in one database is absent from the next one the factory hands out."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (id integer PRIMARY KEY)")
    other = pg_databases()
    assert other != pg_url
    with psycopg.connect(other) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
    assert tables == 0


def test_drop_database_removes_it_even_while_connected(pg_server: PgCluster) -> None:
    """``drop_database`` disconnects a lingering session and the database is gone afterwards."""
    url = pg_server.create_database()
    name = urlsplit(url).path.lstrip("/")
    assert name in _database_names(pg_server.admin_url)
    lingering = psycopg.connect(url)
    try:
        pg_server.drop_database(url)
    finally:
        lingering.close()
    assert name not in _database_names(pg_server.admin_url)


def test_server_never_runs_as_root(pg_url: str, pg_server: PgCluster) -> None:
    """PostgreSQL refuses root: when tests run as root, the fixture's server runs as another user."""
    if pg_server.external or os.geteuid() != 0:
        pytest.skip("only meaningful for a cluster this session started as root")
    with psycopg.connect(pg_url) as conn:  # asked while connected: the backend exits when the connection closes
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert psutil.Process(backend_pid).username() != "root"
