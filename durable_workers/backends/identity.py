"""Which database file a process has open, and whether the path still names it.

A database is identified by the device + inode of its file and by the
``db_id`` written into its ``meta`` table at creation. The first store of a
process on a path pins both (:class:`FileIdentity`, kept in the path's shared
``backends.sqlite_file.SqliteFile``) and installs it as the guard of its own
database object (``GuardedPooledSqliteDatabase``), which every new pooled
connection passes; later stores on the path get the same guard. Reading the
``db_id`` is the store's business (it passes ``read_db_id``); this module only
compares.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Callable, NoReturn

from ..errors import DatabaseReplacedError, StoreUnavailable

#: Set by a supervisor for the workers it spawns (FileIdentity.to_env): the file they must find.
EXPECT_DB_ENV = "DURABLE_EXPECT_DB"
#: The ``db_id`` of a file without one (no ``meta`` table or no row).
NO_DB_ID = "<none>"


@dataclass
class FileIdentity:
    """The database file a process opened: absolute path, device + inode, ``db_id`` (``None``: not compared).

    Once the file is found deleted or replaced, ``replaced`` keeps the reason
    and every later check raises it again.
    """

    path: str
    device: int
    inode: int
    db_id: str | None
    read_db_id: Callable[[sqlite3.Connection], str] | None = field(default=None, repr=False)
    since: str = "while this process had it open"
    replaced: str | None = None

    @classmethod
    def of_file(
        cls, path: str, db_id: str, read_db_id: Callable[[sqlite3.Connection], str]
    ) -> "FileIdentity":
        """The identity of the file now at ``path`` (``OSError`` if there is none)."""
        st = os.stat(path)
        return cls(path, st.st_dev, st.st_ino, None if db_id == NO_DB_ID else db_id, read_db_id)

    @classmethod
    def expected_at(cls, path: str) -> "FileIdentity | None":
        """The identity ``EXPECT_DB_ENV`` requires at ``path``, or ``None`` (unset, malformed, other path)."""
        try:
            wanted = json.loads(os.environ.get(EXPECT_DB_ENV) or "null")
            if not isinstance(wanted, dict) or wanted.get("path") != path:
                return None
            return cls(
                path, int(wanted["device"]), int(wanted["inode"]), wanted.get("db_id"),
                since="after the process that started this one opened it",
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_env(self) -> dict[str, str]:
        """``{EXPECT_DB_ENV: ...}`` for a child process that must open this very file."""
        wanted = {"path": self.path, "device": self.device, "inode": self.inode, "db_id": self.db_id}
        return {EXPECT_DB_ENV: json.dumps(wanted)}

    def _replaced(self, how: str) -> NoReturn:
        self.replaced = self.replaced or f"database {self.path} {how} {self.since}"
        raise DatabaseReplacedError(self.replaced)

    def check_file(self) -> None:
        """Raise DatabaseReplacedError when the path is gone or names another file (device + inode)."""
        if self.replaced is not None:
            raise DatabaseReplacedError(self.replaced)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._replaced("was deleted")
        except OSError as exc:
            raise StoreUnavailable(f"cannot stat database {self.path}: {exc}", cause=str(exc)) from exc
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            self._replaced(f"was replaced by another file (inode {self.inode} -> {st.st_ino})")

    def check_db_id(self, db_id: str | None) -> None:
        """Raise DatabaseReplacedError when the file holds another database than the one opened."""
        if self.db_id is not None and db_id != self.db_id:
            self._replaced(f"now holds another database (db_id {db_id} instead of {self.db_id})")

    def before_open(self) -> None:
        """Guard hook: refuse a new connection to a path that no longer names the file.

        Raises :class:`StoreUnavailable` (an interrupt: an attempt is abandoned, never failed).
        """
        try:
            self.check_file()
        except DatabaseReplacedError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def after_open(self, conn: sqlite3.Connection) -> None:
        """Guard hook: refuse a new connection whose file holds another ``db_id`` (StoreUnavailable)."""
        if self.db_id is None or self.read_db_id is None:
            return
        try:
            self.check_db_id(self.read_db_id(conn))
        except DatabaseReplacedError as exc:
            raise StoreUnavailable(str(exc)) from exc
