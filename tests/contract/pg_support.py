"""Helpers of the PostgreSQL contract tests: two connections at chosen points, a proxy that loses a COMMIT reply."""

from __future__ import annotations

import select
import socket
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

from durable_workers.backends import Store

#: Bound of every wait in these helpers (a lock wait never ends by itself; this only stops a broken test).
WAIT_S = 30


def backend_pid(store: Store) -> int:
    """This thread's server process id in ``store`` (its pooled connection stays the thread's)."""
    pid: int = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    return pid


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement on a connection of its own (psycopg imported here: the module loads without it)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def blocked_by(url: str, waiter: int) -> list[int]:
    """Server pids the backend ``waiter`` waits for (a lock it wants)."""
    return list(sql(url, "SELECT pg_blocking_pids(%s)", (waiter,))[0][0])


class Held:
    """Run ``body`` inside a write transaction of ``store`` in a thread, and keep it open until ``release()``."""

    def __init__(self, store: Store, body: Callable[[], Any]) -> None:
        self.store, self.body = store, body
        self.inside, self.done = threading.Event(), threading.Event()
        self.pid = 0
        self.result: Any = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.inside.wait(WAIT_S), "the holder never got inside its transaction"

    def _run(self) -> None:
        def body() -> None:
            self.pid = backend_pid(self.store)
            self.result = self.body()
            self.inside.set()
            self.done.wait(WAIT_S)

        try:
            self.store.write(body)
        finally:
            self.store.close()

    def release(self) -> None:
        self.done.set()
        self.thread.join(WAIT_S)


class Racer:
    """Run ``call`` in a thread on its own connection of ``store``; remember its server pid, result or error."""

    def __init__(self, store: Store, call: Callable[[], Any]) -> None:
        self.pid = 0
        self.result: Any = None
        self.error: BaseException | None = None
        started = threading.Event()

        def run() -> None:
            try:
                self.pid = backend_pid(store)
                started.set()
                self.result = call()
            except BaseException as exc:  # LeaseLost is a BaseException (DurableInterrupt)
                self.error = exc
            finally:
                started.set()
                store.close()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert started.wait(WAIT_S)

    def join(self) -> None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the racer never finished"


class CommitReplyDropper:
    """A real TCP proxy in front of the server that can lose the reply to one COMMIT.

    ``arm()``: the next ``COMMIT`` a client sends is forwarded (the server
    commits), then the proxy closes that client's connection instead of passing
    the reply on: the client cannot know whether its transaction committed.
    ``arm(marker)``: likewise for the next message holding ``marker``, say a
    statement the store sends in autocommit (its own commit).
    """

    def __init__(self, url: str) -> None:
        self.upstream = ("127.0.0.1", urlsplit(url).port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = url.replace(f":{self.upstream[1]}/", f":{port}/")
        self.armed = threading.Event()
        self.marker = b"COMMIT"
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes = b"COMMIT") -> None:
        self.marker = marker
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, client: Any, server: Any) -> None:
        committing = False
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], WAIT_S)
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    if self.armed.is_set() and self.marker in data:
                        self.armed.clear()
                        committing = True
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    if committing:  # the server committed; the client never hears of it
                        self.dropped += 1
                        return
                    client.sendall(data)
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.listener.close()
