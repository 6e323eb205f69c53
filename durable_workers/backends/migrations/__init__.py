"""Versioned forward migrations of the engine schema, one module per dialect.

Each dialect keeps ``MIGRATIONS``, a ``{from_version: statements}`` map, and
its version where the dialect can read it inside the migrating transaction
(``PRAGMA user_version`` on SQLite, ``meta.schema_version`` on PostgreSQL).
:func:`pending` is the one place that walks a map from a version to the
current one; the dialects run its statements in one transaction under their
schema lock (``BEGIN IMMEDIATE``, or a transaction-scoped advisory lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ...errors import DatabaseError, SchemaVersionError
from ..schema import SCHEMA_VERSION


@dataclass(frozen=True)
class Migration:
    """What ``Store.migrate`` did (or, with ``dry_run``, would do): versions and statements."""

    from_version: int
    to_version: int
    statements: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the database was (or would be) created or migrated."""
        return self.from_version != self.to_version

    def summary(self) -> str:
        """``schema v1 -> v2``, or ``schema is current (v2)``."""
        if not self.changed:
            return f"schema is current (v{self.to_version})"
        return f"schema v{self.from_version} -> v{self.to_version}"


def check_not_newer(version: int, where: str) -> None:
    """Raise :class:`SchemaVersionError` (one line) when ``version`` is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database {where} has schema version {version}, newer than this "
            f"durable_workers understands ({SCHEMA_VERSION}); upgrade durable_workers"
        )


def wanted_at_open(version: int, where: str, *, create: bool, auto_migrate: bool) -> bool:
    """Whether a store opening a database at ``version`` should create or migrate its schema now.

    Raises :class:`SchemaVersionError` for a newer database and
    :class:`DatabaseError` for an empty one a non-creating store expected to
    find. An older schema is read as it is by stores that do not create.
    """
    check_not_newer(version, where)
    if version == SCHEMA_VERSION:
        return False
    if not create and version == 0 and auto_migrate:
        raise DatabaseError(f"{where} has no durable_workers tables yet; submit a workflow first")
    return create and auto_migrate


def pending(version: int, migrations: Mapping[int, Sequence[str]], create: Sequence[str]) -> tuple[str, ...]:
    """The statements taking a database at ``version`` to ``SCHEMA_VERSION`` (``create`` for an empty one).

    Raises :class:`SchemaVersionError` for an older version this dialect has no migration from.
    """
    if version == 0:
        return tuple(create)
    missing = [step for step in range(version, SCHEMA_VERSION) if step not in migrations]
    if missing:
        raise SchemaVersionError(
            f"schema version {version} has no forward migration in this durable_workers (from v{missing[0]}); "
            "recreate the database or migrate it with the release that wrote it"
        )
    return tuple(statement for step in range(version, SCHEMA_VERSION) for statement in migrations[step])
