"""Prometheus metrics: counters counted where things happen, gauges read from the database.

Counting is on only in processes started with ``PROMETHEUS_MULTIPROC_DIR`` in
their environment: ``durable-supervisor --metrics-port`` makes a fresh folder,
sets the variable for itself and so for every worker it starts, and serves the
sum of every process's counters (prometheus-client's multiprocess mode; the
files of a worker that died keep counting). Anywhere else (``durable run``, a
worker started by hand, tests) each call below is one attribute check and
returns.

On the hot path a call is one ``inc()`` or ``observe()`` on a labelled child
of a metric, written to this process's memory-mapped file: no database
statement, no lock shared with another process.

Counters and histograms (label ``name`` is the workflow's name, ``queue`` its queue):

=====================================  ===========================================================
``durable_workflows_started_total``    first claims of a workflow (its lease's first token)
``durable_workflows_completed_total``  attempts that recorded COMPLETED
``durable_workflows_failed_total``     attempts that recorded FAILED
``durable_workflows_retried_total``    claims after an attempt that did not end (crash, lost lease)
``durable_steps_started_total``        step executions started (replays are not counted)
``durable_steps_completed_total``      step executions that recorded their result
``durable_steps_failed_total``         steps whose retries are exhausted (failure recorded)
``durable_steps_retried_total``        failed step executions that will be retried
``durable_step_duration_seconds``      histogram: one live step execution, any outcome
``durable_workflow_duration_seconds``  histogram: first claim to COMPLETED or FAILED
``durable_fenced_writes_rejected_total``  attempts stopped because their lease token was no longer held
``durable_lease_reclaims_total``       leases taken back from dead workers (label ``reason``)
``durable_worker_restarts_total``      worker processes that ended outside a stop (label ``reason``)
``durable_store_lock_waits_total``     transactions that waited for a lock held elsewhere
``durable_store_lock_wait_seconds_total``  seconds spent in those waits
=====================================  ===========================================================

Gauges, read from the database at scrape time (:class:`StoreCollector`):
``durable_workflows{status}``, ``durable_queue_depth{queue,status}``,
``durable_workflows_running``, ``durable_workflows_waiting``,
``durable_workers_alive`` and ``durable_store_up`` (0 when the reads failed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .backends.base import lock_wait_hooks
from .errors import StoreUnavailable
from .liveness import host_identity, process_alive, process_start_time

if TYPE_CHECKING:  # prometheus_client is imported only once counting is on (see _instruments)
    from prometheus_client.registry import CollectorRegistry

    from .attempt import StepEvent
    from .backends import Store
    from .records import Claim, WorkflowRecord

log = logging.getLogger("durable_workers.metrics")

#: The environment variable prometheus-client's multiprocess mode reads.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Every metric name starts with this.
PREFIX = "durable_"
#: Buckets (seconds) of the duration histograms: from a few milliseconds to a day.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0, 21600.0, 86400.0)  # fmt: skip
#: Step event kinds (``StepEvent.kind``) and the counter each one increments.
_STEP_KINDS = {"started": "steps_started", "completed": "steps_completed", "failed": "steps_failed",
               "retrying": "steps_retried"}  # fmt: skip
#: Step events that end one live execution (their ``duration`` is observed).
_TIMED_KINDS = ("completed", "failed", "retrying")
_LABELS = ("name", "queue")


class _Instruments:
    """The metric objects of this process (created once, in multiprocess mode only)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = _LABELS) -> Any:
            return Counter(PREFIX + name, doc, labels, registry=None)

        self.workflows_started = counter("workflows_started", "First claims of a workflow.")
        self.workflows_completed = counter("workflows_completed", "Attempts that recorded COMPLETED.")
        self.workflows_failed = counter("workflows_failed", "Attempts that recorded FAILED.")
        self.workflows_retried = counter("workflows_retried", "Claims after an attempt that did not end.")
        self.steps_started = counter("steps_started", "Step executions started (replays not counted).")
        self.steps_completed = counter("steps_completed", "Step executions that recorded their result.")
        self.steps_failed = counter("steps_failed", "Steps whose retries are exhausted.")
        self.steps_retried = counter("steps_retried", "Failed step executions that will be retried.")
        self.fenced = counter("fenced_writes_rejected", "Attempts stopped because their lease token was taken.")
        self.reclaims = counter("lease_reclaims", "Leases taken back from dead workers.", ("reason",))
        self.restarts = counter("worker_restarts", "Worker processes that ended outside a stop.", ("reason",))
        self.lock_waits = counter("store_lock_waits", "Transactions that waited for a lock held elsewhere.", ())
        self.lock_wait_seconds = counter("store_lock_wait_seconds", "Seconds spent waiting for those locks.", ())
        self.step_seconds = Histogram(PREFIX + "step_duration_seconds", "One live step execution.", _LABELS,
                                      registry=None, buckets=DURATION_BUCKETS)  # fmt: skip
        self.workflow_seconds = Histogram(PREFIX + "workflow_duration_seconds", "First claim to COMPLETED or FAILED.",
                                          _LABELS, registry=None, buckets=DURATION_BUCKETS)  # fmt: skip


_lock = threading.Lock()
_state: dict[str, _Instruments | None] = {}


def _instruments() -> _Instruments | None:
    """This process's metrics, or None when counting is off (no ``PROMETHEUS_MULTIPROC_DIR``)."""
    try:
        return _state["instruments"]
    except KeyError:
        pass
    with _lock:
        if "instruments" not in _state:
            _state["instruments"] = _create() if os.environ.get(MULTIPROC_ENV) else None
    return _state["instruments"]


def _create() -> _Instruments | None:
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        return _Instruments()
    # prometheus_client was imported before the variable was set: its values would stay in this process.
    log.warning("%s was set after prometheus_client was imported; this process counts nothing", MULTIPROC_ENV)
    return None


# --------------------------------------------------------------------------- hot path


def workflow_claimed(claim: Claim) -> None:
    """A worker claimed ``claim``: a start (first lease token) or a retry (an earlier attempt did not end)."""
    metrics = _instruments()
    if metrics is None:
        return
    record = claim.workflow
    if claim.token == 1:
        metrics.workflows_started.labels(record.name, record.queue).inc()
    if record.attempts > 1:
        metrics.workflows_retried.labels(record.name, record.queue).inc()


def attempt_ended(record: WorkflowRecord, status: str) -> None:
    """The attempt of ``record`` ended with outcome ``status`` (``Outcome.status``)."""
    metrics = _instruments()
    if metrics is None:
        return
    labels = (record.name, record.queue)
    if status == "COMPLETED" or status == "FAILED":
        (metrics.workflows_completed if status == "COMPLETED" else metrics.workflows_failed).labels(*labels).inc()
        if record.started_at is not None:
            metrics.workflow_seconds.labels(*labels).observe(max(time.time() - record.started_at, 0.0))
    elif status == "LOST":
        metrics.fenced.labels(*labels).inc()


def step_listener(record: WorkflowRecord, then: Callable[[StepEvent], None]) -> Callable[[StepEvent], None]:
    """A step listener that counts ``record``'s step events, then calls ``then`` (``then`` itself when off)."""
    metrics = _instruments()
    if metrics is None:
        return then
    labels = (record.name, record.queue)

    def listen(event: StepEvent) -> None:
        counter = _STEP_KINDS.get(event.kind)
        if counter is not None:
            getattr(metrics, counter).labels(*labels).inc()
            if event.kind in _TIMED_KINDS:
                metrics.step_seconds.labels(*labels).observe(event.duration)
        then(event)

    return listen


def lease_reclaimed(reason: str, count: int = 1) -> None:
    """``count`` leases were taken back: ``worker_exited`` (own child) or ``dead_worker`` (found dead)."""
    metrics = _instruments()
    if metrics is not None and count:
        metrics.reclaims.labels(reason).inc(count)


def worker_restarted(exit_code: int) -> None:
    """A worker process ended outside a stop and will be replaced (reason ``exited`` or ``crashed``)."""
    metrics = _instruments()
    if metrics is not None:
        metrics.restarts.labels("exited" if exit_code == 0 else "crashed").inc()


def lock_waited(seconds: float) -> None:
    """A transaction waited ``seconds`` for a lock held elsewhere before it could begin."""
    metrics = _instruments()
    if metrics is not None and seconds > 0:
        metrics.lock_waits.inc()
        metrics.lock_wait_seconds.inc(seconds)


lock_wait_hooks.append(lock_waited)  # every store of this process reports its lock waits here


# --------------------------------------------------------------------------- serving side


#: Counters folders are named ``durable-metrics-HOST-PID-START-<random>``: HOST a digest of
#: liveness.host_identity() (boot id + PID namespace), START liveness.process_start_time().
MULTIPROC_PREFIX = "durable-metrics-"


def enable_multiprocess() -> str:
    """Make a fresh folder for this process's and its children's counters; set ``PROMETHEUS_MULTIPROC_DIR``.

    Call it before anything creates a metric (the supervisor: first thing).
    Returns the folder; remove it with :func:`remove_multiprocess_dir`. The
    folders left behind by supervisors that were killed (SIGKILL: no cleanup
    ran) are removed first.
    """
    remove_orphaned_dirs(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=f"{MULTIPROC_PREFIX}{_host_tag()}-{os.getpid()}-{process_start_time():.2f}-")
    os.environ[MULTIPROC_ENV] = path
    _state.pop("instruments", None)
    return path


def remove_orphaned_dirs(folder: str) -> list[str]:
    """Delete the counters folders in ``folder`` whose supervisor is no longer running; their paths.

    A folder's owner is the host, PID and start time in its name (a reused
    PID is another process). Folders of another host (a container sharing
    ``/tmp``, whose PIDs are not ours) and names without an owner are kept.
    """
    removed = []
    for entry in os.scandir(folder):
        if not entry.name.startswith(MULTIPROC_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        host, pid, started, *_ = entry.name.removeprefix(MULTIPROC_PREFIX).split("-") + ["", "", ""]
        try:
            owner = int(pid), float(started)
        except ValueError:
            continue
        if host == _host_tag() and not process_alive(*owner):
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(entry.path)
    return removed


def _host_tag() -> str:
    """A short digest of this host's identity, for folder names."""
    return hashlib.sha256(host_identity().encode()).hexdigest()[:12]


def remove_multiprocess_dir(path: str) -> None:
    """Delete the counters folder made by :func:`enable_multiprocess` (never raises)."""
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]
    shutil.rmtree(path, ignore_errors=True)


def build_registry(store: Store, multiproc_dir: str | None) -> CollectorRegistry:
    """A registry serving every process's counters from ``multiproc_dir`` (if any) and the database gauges."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if multiproc_dir is not None:
        MultiProcessCollector(registry, path=multiproc_dir)
    registry.register(StoreCollector(store))
    return registry


class StoreCollector:
    """Gauges read from the database at each scrape: statuses, queue depths, running, waiting, live workers.

    Three reads per scrape (counts by status, by queue and status, live worker
    rows). When they fail (store unavailable, database error) only
    ``durable_store_up 0`` is reported, and the error is logged once until
    the reads succeed again.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._failing = False

    def describe(self) -> list[Any]:
        """No fixed description (the registry must not collect at registration)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauge families (``durable_store_up`` last)."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            statuses = self.store.count_by_status()
            depths = self.store.queue_depths()
            alive = len(self.store.list_workers(alive_only=True))
        except (Exception, StoreUnavailable) as exc:
            if not self._failing:
                log.warning("metrics: could not read the database: %s", str(exc).splitlines()[0] if str(exc) else exc)
            self._failing = True
            yield GaugeMetricFamily(PREFIX + "store_up", "1 when the scrape's database reads succeeded.", value=0)
            return
        self._failing = False
        by_status = GaugeMetricFamily(PREFIX + "workflows", "Workflows by status.", labels=["status"])
        for status, count in sorted(statuses.items()):
            by_status.add_metric([status], count)
        depth = GaugeMetricFamily(PREFIX + "queue_depth", "Unfinished workflows by queue and status.",
                                  labels=["queue", "status"])  # fmt: skip
        for queue, counts in sorted(depths.items()):
            for status, count in sorted(counts.items()):
                depth.add_metric([queue, status], count)
        yield by_status
        yield depth
        yield GaugeMetricFamily(PREFIX + "workflows_running", "Workflows RUNNING.", value=statuses.get("RUNNING", 0))
        yield GaugeMetricFamily(PREFIX + "workflows_waiting", "Workflows WAITING.", value=statuses.get("WAITING", 0))
        yield GaugeMetricFamily(PREFIX + "workers_alive", "Worker rows running or draining.", value=alive)
        yield GaugeMetricFamily(PREFIX + "store_up", "1 when the scrape's database reads succeeded.", value=1)
