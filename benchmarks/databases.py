"""Where each benchmark's fresh database lives: a file in the work folder, or a database on a PostgreSQL server.

``Databases(workdir)`` hands out SQLite paths; ``Databases(workdir, server=URL)``
runs ``CREATE DATABASE`` on that server for every ``new()`` (the URL's own
database is only used to connect) and ``drop_all()`` drops them again,
disconnecting whatever fleet is still attached. ``reader(db)`` is the
read-only polling connection of either kind, with ``?`` placeholders.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str | Path) -> bool:
    """True for a ``postgresql://`` URL, False for a SQLite path."""
    return str(db).startswith(POSTGRES_SCHEMES)


def with_database(url: str, dbname: str, query: str | None = None) -> str:
    """``url`` naming database ``dbname`` (and ``query``, when given, as its options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query if query is None else query, ""))


def with_option(url: str, option: str) -> str:
    """``url`` with one more query option (``listen=off``)."""
    return url + ("&" if "?" in url else "?") + option


def pg_connect(url: str, **kwargs: Any) -> Any:
    """An autocommit psycopg connection to ``url`` (the store's own ``?pool_size=``/``?listen=`` removed)."""
    import psycopg

    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and p.split("=")[0] not in ("pool_size", "listen"))
    return psycopg.connect(urlunsplit(parts._replace(query=query)), autocommit=True, connect_timeout=10, **kwargs)


class PgReader:
    """A polling connection to PostgreSQL that takes the SQLite benchmarks' ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        self.conn = pg_connect(url)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "PgReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader(db: str | Path) -> Any:
    """A read-only connection for polling: ``execute(sql, params)`` with ``?`` placeholders."""
    if is_postgres(db):
        return PgReader(str(db))
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class Databases:
    """Fresh databases for the benchmarks: SQLite files in ``workdir``, or databases on ``server``."""

    def __init__(self, workdir: Path, server: str | None = None) -> None:
        self.workdir = workdir
        self.server = server
        self.created: list[str] = []

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return "postgresql" if self.server else "sqlite"

    def new(self, name: str) -> str:
        """A new, empty database for ``name``: its path or URL."""
        if not self.server:
            return str(self.workdir / f"{name}.db")
        dbname = "dw_bench_" + re.sub(r"[^a-z0-9_]", "_", name.lower())[:30] + "_" + uuid.uuid4().hex[:8]
        with contextlib.closing(pg_connect(self.server)) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE template0')
        url = with_database(self.server, dbname)
        self.created.append(url)
        return url

    def log_path(self, db: str, suffix: str = "") -> Path:
        """Where a fleet on ``db`` writes its log."""
        stem = urlsplit(db).path.strip("/") if is_postgres(db) else Path(db).stem
        return self.workdir / f"{stem}{suffix}.fleet.log"

    def drop_all(self) -> None:
        """Drop every database ``new()`` created on the server (disconnecting its sessions)."""
        if not self.server:
            return
        with contextlib.closing(pg_connect(self.server)) as conn:
            for url in reversed(self.created):
                name = urlsplit(url).path.strip("/")
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.created.clear()


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL cluster started for this run (``--pg``): initdb + pg_ctl in a temporary folder.

    Uses the test suite's cluster helper (``tests/pg_cluster.py``, stdlib only),
    so it needs the project checkout; yields the superuser URL.
    """
    from tests.pg_cluster import PgCluster

    cluster = PgCluster.from_environment()
    try:
        yield cluster.admin_url
    finally:
        cluster.stop()
