"""The connection pools of both dialects: a connection whose thread has ended goes back.

peewee's pool lends a connection to the thread that opened it until that thread closes
it. A thread that ends without closing it keeps it checked out forever. Such threads are
common: a web server's request threads each use one ``Client`` and end. With a size limit
(PostgreSQL's ``pool_size``) the pool runs dry after that many threads, and the next
operation waits, then fails as if the database were busy. Without a limit (SQLite),
open connections and file descriptors pile up.

:class:`ReclaimingPool` notes which thread took each connection. Before it opens a new
one, it closes the connections whose thread has ended. They are never reused: a thread
that died inside a transaction may have left one open.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any


class ReclaimingPool:
    """Mixin for peewee's ``PooledDatabase`` classes (put it first): reclaims connections of ended threads."""

    # The pool's own state, from playhouse.pool.PooledDatabase.
    _pool_lock: threading.RLock
    _connections: list[Any]
    _in_use: dict[int, Any]
    conn_key: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: conn_key of a checked-out connection -> the thread that took it.
        self._owners: dict[int, weakref.ref[threading.Thread]] = {}
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        with self._pool_lock:
            if not self._connections:  # no idle one to reuse: make room before opening another
                self.reclaim_orphans()
            conn = super()._connect()  # type: ignore[misc]
            self._owners[self.conn_key(conn)] = weakref.ref(threading.current_thread())
            return conn

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(self.conn_key(conn), None)
            super()._close(conn, close_conn)  # type: ignore[misc]

    def reclaim_orphans(self) -> int:
        """Close the checked-out connections whose thread has ended; how many there were."""
        with self._pool_lock:
            orphans = [key for key in self._in_use if not _alive(self._owners.get(key))]
            for key in orphans:
                self._owners.pop(key, None)
                self._close_raw(self._in_use.pop(key).connection)  # type: ignore[attr-defined]
            return len(orphans)


def _alive(owner: "weakref.ref[threading.Thread] | None") -> bool:
    """False for a thread that ended (or is gone); True for an unknown owner, never taken from."""
    if owner is None:
        return True
    thread = owner()
    return thread is not None and thread.is_alive()
