"""Throwaway PostgreSQL databases for tests: create one through a server URL, drop it after.

Used by the pytest plugin (:mod:`durable_workers.pytest_plugin`); the role in
the URL needs ``CREATEDB``. Failures are :class:`~durable_workers.errors.DatabaseError`
with a one-line reason.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import DatabaseError
from .postgres_sql import split_url


def _admin(server_url: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run ``statements`` (SQL, parameters) in autocommit on ``server_url``'s server."""
    try:
        import psycopg
    except ImportError:
        raise DatabaseError("a postgresql:// database needs psycopg: pip install 'durable-workers[postgres]'") from None
    conninfo, _own, shown = split_url(server_url)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            for sql, params in statements:
                conn.execute(sql, params)
    except psycopg.Error as exc:
        text = str(exc).strip()
        raise DatabaseError(f"{shown}: {text.splitlines()[0] if text else type(exc).__name__}") from None


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (its query options kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(server_url: str, prefix: str = "durable_test") -> str:
    """A new, empty database on ``server_url``'s server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(server_url, (f'CREATE DATABASE "{name}" TEMPLATE template0', ()))
    return _with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop ``url``'s database, disconnecting whoever is still connected to it."""
    name = urlsplit(url).path.lstrip("/")
    _admin(
        server_url,
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)),
        (f'DROP DATABASE IF EXISTS "{name}"', ()),
    )
