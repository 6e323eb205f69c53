"""The supervisor's metrics port: ``/metrics``, ``/healthz`` and ``/readyz`` (stdlib HTTP server).

``/healthz``: 200 ``ok`` while the process is alive, its loop keeps turning
and its store answers a trivial read (one primary-key lookup in ``workers``)
within ``HEALTH_TIMEOUT_S``; otherwise 503 and one line saying why (the
store's error, no answer in time, the database file replaced, a loop that
has not turned for long past what its waits for the database add up to:
``HUNG_LOOP_PATIENCES`` lock patiences plus ``HUNG_LOOP_SLACK_S``, at least
``HUNG_LOOP_MIN_S``). An
orchestrator that sees it fail restarts the supervisor.

``/readyz``: 200 ``ready`` once every worker slot of this supervisor has a
live process whose row in ``workers`` is ``running``; 503 with one line
before that (``1 of 4 workers registered``) and while the supervisor stops.

``/metrics``: the Prometheus text format, every process's counters plus the
database gauges (:mod:`durable_workers.metrics`).

Each request runs on a thread of its own and hands its database connection
back when it ends. A probe's database read runs on a daemon thread; the
request waits for it at most ``HEALTH_TIMEOUT_S``, and while a read hangs
later probes wait for that same read rather than starting another.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from .config import HEALTH_TIMEOUT_S, HUNG_LOOP_MIN_S, HUNG_LOOP_PATIENCES, HUNG_LOOP_SLACK_S
from .errors import StoreUnavailable
from .metrics import build_registry, enable_multiprocess, remove_multiprocess_dir

if TYPE_CHECKING:
    from .backends import Store

log = logging.getLogger("durable_workers.metrics")

#: Paths served on the metrics port (deploy/ manifests name the probe paths; a test checks them).
METRICS_PATH, HEALTH_PATH, READY_PATH = "/metrics", "/healthz", "/readyz"
#: Worker state a row has once its worker registered and runs.
RUNNING_STATE = "running"


class _Slot(Protocol):
    @property
    def worker_id(self) -> str | None: ...

    @property
    def process(self) -> Any: ...


class Fleet(Protocol):
    """What the probes read of a supervisor (``supervisor.Supervisor`` has it all)."""

    @property
    def store(self) -> Store: ...

    @property
    def slots(self) -> Sequence[_Slot]: ...

    @property
    def stop_requests(self) -> int: ...

    @property
    def database_replaced(self) -> str | None: ...

    @property
    def last_turn(self) -> float: ...


class BoundedRead:
    """Runs a database read on a daemon thread and waits for it at most ``timeout`` seconds.

    One read at a time: while one is in flight, later calls wait for it
    (a hung store ties up one thread, not one per probe).
    """

    def __init__(self, store: Store, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._lock = threading.Lock()
        self._inflight: tuple[threading.Event, list[Any], float] | None = None

    def run(self, read: Callable[[], Any]) -> tuple[Any, str | None]:
        """``(result, None)``, or ``(None, reason)`` when the read failed or did not answer in time."""
        with self._lock:
            if self._inflight is None or self._inflight[0].is_set():
                self._inflight = (threading.Event(), [], time.monotonic())
                done, box, _ = self._inflight
                threading.Thread(target=self._read, args=(read, done, box), name="metrics-probe", daemon=True).start()
            done, box, began = self._inflight
        if not done.wait(self.timeout):
            return None, f"the store has not answered for {time.monotonic() - began:.1f}s"
        ok, value = box[0]
        return (value, None) if ok else (None, value)

    def _read(self, read: Callable[[], Any], done: threading.Event, box: list[Any]) -> None:
        try:
            box.append((True, read()))
        except StoreUnavailable as exc:
            box.append((False, f"store unavailable: {exc.cause}"))
        except Exception as exc:  # a database error: its first line is the reason
            box.append((False, (str(exc).splitlines() or [type(exc).__name__])[0]))
        finally:
            self.store.close()  # this thread's connection
            done.set()


class Probes:
    """The answers of ``/healthz`` and ``/readyz`` for one supervisor: ``(http status, one line)``."""

    def __init__(self, fleet: Fleet, timeout: float = HEALTH_TIMEOUT_S, hung_after: float | None = None) -> None:
        self.fleet = fleet
        #: Seconds without a turn of the supervisor loop after which /healthz calls it hung.
        patiences = HUNG_LOOP_PATIENCES * fleet.store.lock_patience + HUNG_LOOP_SLACK_S
        self.hung_after = max(HUNG_LOOP_MIN_S, patiences) if hung_after is None else hung_after
        self._health = BoundedRead(fleet.store, timeout)
        self._ready = BoundedRead(fleet.store, timeout)

    def health(self) -> tuple[int, str]:
        """200 when the loop turns and the store answers a trivial read in time, else 503 with the reason."""
        if self.fleet.database_replaced is not None:
            return 503, self.fleet.database_replaced
        still = time.monotonic() - self.fleet.last_turn
        if still > self.hung_after:
            return 503, f"the supervisor loop has not turned for {still:.0f}s (limit {self.hung_after:.0f}s): hung"
        _, reason = self._health.run(lambda: self.fleet.store.get_worker(""))
        return (503, reason) if reason else (200, "ok")

    def ready(self) -> tuple[int, str]:
        """200 when every slot's worker is alive and registered ``running``, else 503 with the count."""
        if self.fleet.stop_requests:
            return 503, "stopping"
        # returncode, not poll(): polling here would reap a child behind the supervisor loop's back.
        ids = [s.worker_id for s in self.fleet.slots
               if s.worker_id is not None and s.process is not None and s.process.returncode is None]  # fmt: skip

        def registered() -> int:
            rows = [self.fleet.store.get_worker(worker_id) for worker_id in ids]
            return sum(1 for row in rows if row is not None and row.state == RUNNING_STATE)

        count, reason = self._ready.run(registered)
        if reason:
            return 503, reason
        total = len(self.fleet.slots)
        return (200, "ready") if count == total else (503, f"{count} of {total} workers registered")


class MetricsServer:
    """The HTTP server of one supervisor's metrics port, on a daemon thread."""

    def __init__(self, fleet: Fleet, host: str, port: int, multiproc_dir: str | None) -> None:
        self.probes = Probes(fleet)
        self.registry = build_registry(fleet.store, multiproc_dir)
        self.store = fleet.store
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the port the OS chose for port 0."""
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        """Serve on the daemon thread; returns ``self``."""
        self._thread.start()
        host, port = self.address
        log.info("metrics on http://%s:%s%s (health %s, readiness %s)", host, port, METRICS_PATH, HEALTH_PATH, READY_PATH)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET of ``path``."""
        route = path.split("?", 1)[0]
        if route == METRICS_PATH:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if route in (HEALTH_PATH, READY_PATH):
            status, line = self.probes.health() if route == HEALTH_PATH else self.probes.ready()
            return status, "text/plain; charset=utf-8", (line + "\n").encode()
        return 404, "text/plain; charset=utf-8", f"not found; try {METRICS_PATH}, {HEALTH_PATH} or {READY_PATH}\n".encode()


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, kind, body = server.answer(self.path)
            finally:
                server.store.close()  # this request thread's connection, if it opened one
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics http: " + format, *args)

    return Handler


@contextlib.contextmanager
def counters_folder(enabled: bool) -> Iterator[str | None]:
    """A fresh counters folder for this supervisor and its workers while the block runs (None: not enabled)."""
    if not enabled:
        yield None
        return
    path = enable_multiprocess()
    try:
        yield path
    finally:
        remove_multiprocess_dir(path)
