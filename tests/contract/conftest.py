"""The ``backend`` fixture: one parameter per store dialect.

``"sqlite"`` (a file per name in the test's folder) and ``"postgresql"`` (a
fresh database per name on the session's throwaway cluster or the server at
``DURABLE_TEST_PG_URL``; skipped without PostgreSQL, a failure with
``CI=true``). The tests themselves only ever call :meth:`Backend.target`,
:meth:`Backend.open` and :meth:`Backend.client`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from durable_workers import Client, default_registry
from durable_workers.backends import Store, open_store


@dataclass
class Backend:
    """Databases of one dialect for one test: named, opened as stores or clients, closed at teardown."""

    name: str
    #: Name of a database -> what ``--db`` takes for it (a path, later a URL); a new one per name.
    make_target: Callable[[str], str]
    _targets: dict[str, str] = field(default_factory=dict)
    _opened: list[Store | Client] = field(default_factory=list)

    def target(self, name: str) -> str:
        """The database called ``name`` in this test (the same one for the same name)."""
        if name not in self._targets:
            self._targets[name] = self.make_target(name)
        return self._targets[name]

    def open(self, name: str, **options: Any) -> Store:
        """A new store on database ``name`` (options as for ``open_store``)."""
        store = open_store(self.target(name), **options)
        self._opened.append(store)
        return store

    def client(self, name: str, **options: Any) -> Client:
        """A new Client on database ``name`` with the test workflows registered."""
        client = Client(db=self.target(name), registry=default_registry, **options)
        self._opened.append(client)
        return client

    def close(self) -> None:
        for opened in reversed(self._opened):
            opened.close()


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    return lambda name: str(tmp_path / f"{name}.db")


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    # Pulled lazily: a run of the SQLite parameters alone never starts a cluster.
    new_database: Callable[[], str] = request.getfixturevalue("pg_databases")
    return lambda name: new_database()


#: Dialect name -> factory of per-test database targets.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Callable[[str], str]]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The databases of one backend for this test (every store and client closed afterwards)."""
    opened = Backend(request.param, BACKENDS[request.param](request, tmp_path))
    try:
        yield opened
    finally:
        opened.close()
