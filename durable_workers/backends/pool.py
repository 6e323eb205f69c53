"""The connection pools of both dialects: a connection whose thread has ended goes back.

peewee's pool lends a connection to the thread that opened it until that thread closes
it. A thread that ends without closing it keeps it checked out forever. Such threads are
common: a web server's request threads each use one ``Client`` and end. With a size limit
(PostgreSQL's ``pool_size``) the pool runs dry after that many threads, and the next
operation waits, then fails as if the database were busy. Without a limit (SQLite),
open connections and file descriptors pile up.

:class:`ReclaimingPool` notes which thread took each connection. Before it opens a new
one, it closes the connections whose thread has ended. They are never reused: a thread
that died inside a transaction may have left one open. Threads the ``threading`` module
did not start (a C server's request threads) always look alive and are never reclaimed;
a fixed set of reused threads needs a pool that size.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from playhouse.pool import MaxConnectionsExceeded


class ReclaimingPool:
    """Mixin for peewee's ``PooledDatabase`` classes (put it first): reclaims connections of ended threads."""

    # The pool's own state, from playhouse.pool.PooledDatabase.
    _pool_lock: threading.RLock
    _connections: list[Any]
    _in_use: dict[int, Any]
    conn_key: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: conn_key of a checked-out connection -> the thread that took it (in process ``_pid``).
        self._owners: dict[int, weakref.ref[threading.Thread]] = {}
        self._pid = os.getpid()
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        with self._pool_lock:
            if not self._connections:  # no idle one to reuse: make room before opening another
                self.reclaim_orphans()
            try:
                conn = super()._connect()  # type: ignore[misc]
            except MaxConnectionsExceeded:  # the idle ones were all stale or closed: make room now
                if not self.reclaim_orphans():
                    raise
                conn = super()._connect()  # type: ignore[misc]
            self._owners[self.conn_key(conn)] = weakref.ref(threading.current_thread())
            return conn

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(self.conn_key(conn), None)
            super()._close(conn, close_conn)  # type: ignore[misc]

    def reclaim_orphans(self) -> int:
        """Close the checked-out connections whose thread has ended; how many there were.

        In a process forked from the one that opened them, the connections
        are the parent's (their threads did not come along): none is touched.
        """
        with self._pool_lock:
            if self._pid != os.getpid():
                self._owners, self._pid = {}, os.getpid()  # unknown owners are never reclaimed
            orphans = [key for key in self._in_use if not _alive(self._owners.get(key))]
            for key in orphans:
                self._owners.pop(key, None)
                self._close_raw(self._in_use.pop(key).connection)  # type: ignore[attr-defined]
            return len(orphans)


def _alive(owner: "weakref.ref[threading.Thread] | None") -> bool:
    """False for a thread that ended; True for an unknown owner and for the main thread.

    The main thread counts as ended while the interpreter shuts down (before
    ``atexit`` handlers run, which may still use its connection).
    """
    if owner is None:
        return True
    thread = owner()
    return thread is not None and (thread is threading.main_thread() or thread.is_alive())
