"""Shared fixtures: a fresh SQLite file per test and helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from durable_workers.backends import open_store

from tests.pg_cluster import PgCluster, PgUnavailable

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a not-yet-created database in this test's own folder."""
    return tmp_path / "durable.db"


@pytest.fixture
def store(db_path: Path):
    """An open Store on a fresh database file."""
    opened = open_store(db_path)
    yield opened
    opened.close()


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for CLI subprocesses: no inherited DURABLE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    db: Path | str,
    app: str | Path = APPS / "__init__.py",
    cwd: Path | str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m durable_workers --db DB --app APP ARGS...`` and capture its output."""
    command = [sys.executable, "-m", "durable_workers", "--db", str(db), "--app", str(app), *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or Path(db).parent,
        env=cli_env(env),
    )


# --- PostgreSQL: one throwaway cluster per session (tests/pg_cluster.py), a database per test ---

CI_ENV = "CI"


def pg_cluster_or_skip(*, crash_safe: bool = False) -> PgCluster:
    """A started PostgreSQL cluster; skips the test without one, and fails it instead in CI.

    ``crash_safe=True`` for a cluster the test halts (see ``tests/pg_cluster.py``)."""
    try:
        return PgCluster.from_environment(crash_safe=crash_safe)
    except PgUnavailable as exc:
        if os.environ.get(CI_ENV, "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI ({CI_ENV}=true): {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL: {exc}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """The session's PostgreSQL server (a ``PgCluster``): started once, stopped at session end.

    Without PostgreSQL (no binaries, no psycopg) the tests using it skip with the reason; with
    ``CI=true`` they fail instead, because CI is expected to have installed it.
    """
    cluster = pg_cluster_or_skip()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_databases(pg_server: PgCluster) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases (``new() -> URL``); all are dropped after the test."""
    created: list[str] = []

    def new() -> str:
        created.append(pg_server.create_database())
        return created[-1]

    yield new
    for url in reversed(created):
        pg_server.drop_database(url)


@pytest.fixture
def pg_url(pg_databases: Callable[[], str]) -> str:
    """URL of a new, empty PostgreSQL database for this test (dropped afterwards)."""
    return pg_databases()
