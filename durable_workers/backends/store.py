"""``Store``: the whole store contract as one type (the operation areas over the skeleton)."""

from __future__ import annotations

from typing import Iterable, Protocol

from .batch import BatchOps
from .children import ChildOps
from .claims import ClaimOps
from .dashboard import DashboardOps
from .endings import EndingOps
from .ledger import LedgerOps
from .messaging import MessageOps
from .migrations import Migration
from .retention import RetentionOps
from .schedules import ScheduleOps
from .steps import StepOps
from .workers import WorkerOps
from .workflows import WorkflowOps


class ChangeWatch(Protocol):
    """What :meth:`Store.change_watch` returns: a non-blocking change detector."""

    def changed(self) -> bool:
        """True when something happened since the last call (never blocks, never raises)."""

    def close(self) -> None:
        """Release the watch's connection."""


class Store(
    WorkflowOps, BatchOps, ClaimOps, StepOps, EndingOps, MessageOps, ChildOps, RetentionOps, ScheduleOps, WorkerOps,
    LedgerOps, DashboardOps,
):
    """The durable state of workflows, steps, leases and workers in one database.

    The type the engine, worker, supervisor, client and CLI see; every
    operation is listed with its effects, fencing, retry safety and errors in
    ``contract.CONTRACT``. Abstract: open one with
    :func:`durable_workers.backends.open_store` (a dialect subclass such as
    ``SqliteStore``). Each store owns its database object and its bound models;
    two stores on two databases work side by side in one process and one
    thread. One connection per thread, from the store's pool: threads that end
    should call :meth:`close` to hand theirs back.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        """Refuse: ``Store`` is the contract; a dialect subclass opens a database."""
        raise TypeError("Store is the store contract; open one with durable_workers.backends.open_store(db, ...)")

    def schema_version(self) -> int:
        """The database's schema version (0: no engine tables yet); each dialect reads its own record."""
        raise NotImplementedError

    def migrate(self, *, dry_run: bool = False) -> Migration:
        """Create or migrate the schema to ``SCHEMA_VERSION`` under the dialect's schema lock (see ``migrations``)."""
        raise NotImplementedError

    def check_identity(self) -> None:
        """Raise DatabaseReplacedError when the database is no longer the one opened (default: never)."""

    def identity_env(self) -> dict[str, str]:
        """Environment for a child process that must open this very database (default: none needed)."""
        return {}

    def abandon_replaced_file(self) -> None:
        """The last use of a store whose database was replaced: close it; never raises."""
        self.close()

    def change_watch(self, names: Iterable[str] = ()) -> ChangeWatch | None:
        """A watch whose ``changed()`` says work of ``names`` may have become runnable, if the dialect has one.

        ``None`` here (SQLite workers watch :attr:`wal_path`); polling stays the
        fallback either way, the watch only shortens an idle worker's wait.
        """
        return None

    @property
    def wal_path(self) -> str | None:
        """A file whose size and mtime move on every commit, if the dialect has one (idle workers watch it)."""
        return None
