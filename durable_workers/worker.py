"""The worker process: claim loop, heartbeat thread, graceful stop.

Started by the supervisor as ``python -m durable_workers worker --db ... --app ...``.
A worker registers a ``workers`` row, claims runnable workflows whose names
it has registered (one ``BEGIN IMMEDIATE`` each, writing a lease with a new
fencing token), runs up to ``concurrency`` of them in threads, and renews its
row and all its leases from a heartbeat thread every ``ttl / 3`` seconds.

Stopping: SIGTERM (or the supervisor's death) stops claiming; running
workflows finish their current step and are released back to PENDING; the
worker row is marked ``stopped``. Under a supervisor SIGINT is ignored (the
supervisor decides); a worker started by hand drains on Ctrl+C and exits at
once on a second one. Signal handlers only write to a self-pipe
(:mod:`durable_workers.signals`). Claim errors are logged once per distinct
error and backed off (:mod:`durable_workers.backoff`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import metrics
from .backends import Store
from .backoff import ErrorBackoff
from .context import AttemptControl, Listener, StepEvent
from .engine import Outcome, run_claim
from .errors import DatabaseReplacedError, StoreUnavailable
from .heartbeat import Heartbeat, LiveAttempts
from .records import Claim
from .registry import Registry
from .signals import SignalDispatcher
from .liveness import hostname

log = logging.getLogger("durable_workers.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """Tuning of one worker process.

    ``ttl``: lease lifetime in seconds (heartbeat every ``ttl / 3``).
    ``poll_min`` / ``poll_max``: idle polling backs off between these.
    ``max_claims``: a workflow claimed more often than this is failed.
    ``supervisor_pid``: stop gracefully when that parent process disappears.
    """

    ttl: float = 15.0
    concurrency: int = 1
    poll_min: float = 0.005
    poll_max: float = 1.0
    max_claims: int = 20
    supervisor_pid: int | None = None


def new_worker_id() -> str:
    """A unique worker id: ``host:pid:random``."""
    return f"{hostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _log_event(event: StepEvent) -> None:
    if event.kind in ("started", "replayed"):
        level = logging.DEBUG
    elif event.kind in ("failed", "retrying"):
        level = logging.WARNING
    else:
        level = logging.INFO
    fields = {"workflow_id": event.workflow_id, "step_key": event.step_key, "attempt": event.attempt}  # JSON logs
    log.log(level, "step %s workflow_id=%s step=%s attempt=%s%s", event.kind, event.workflow_id, event.step_key,
            event.attempt, f" error={event.error!r}" if event.error else "", extra=fields)  # fmt: skip


class _WalWatch:
    """Cheap change detector: the WAL file's size and mtime move on every commit.

    ``wal_path`` is the store's (``None`` when its backend has no such file: never changed).
    Used when the store has no ``change_watch`` (PostgreSQL's LISTEN connection).
    """

    def __init__(self, wal_path: str | None) -> None:
        self.path = Path(wal_path) if wal_path is not None else None
        self.last = self._signature()

    def _signature(self) -> tuple[int, int]:
        if self.path is None:
            return (0, 0)
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return (0, 0)

    def changed(self) -> bool:
        current = self._signature()
        if current != self.last:
            self.last = current
            return True
        return False

    def close(self) -> None:
        """Nothing to release (the store's ``change_watch`` holds a connection; this does not)."""


class WorkerProcess:
    """One worker: registry of workflow names, a claim loop, a heartbeat."""

    #: Why this worker stopped using its database file (deleted or replaced), once seen.
    database_replaced: DatabaseReplacedError | None = None

    def __init__(
        self,
        store: Store,
        registry: Registry,
        options: WorkerOptions | None = None,
        *,
        worker_id: str | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.options = options or WorkerOptions()
        self.worker_id = worker_id or new_worker_id()
        self.listener = listener or _log_event
        self.stop_claiming = threading.Event()  # first signal: no new claims
        self.stopping = threading.Event()  # running workflows stop before their next step
        self._pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="wf")
        self._running: dict[tuple[str, int], Future[Outcome]] = {}  # by (workflow_id, token)
        self._lock = threading.Lock()
        self.attempts = LiveAttempts(self.stopping)
        self._heartbeat: Heartbeat | None = None
        self._wake = threading.Event()  # set when an attempt ends: a slot is free
        self.outcomes: deque[Outcome] = deque(maxlen=256)  # most recent attempts, for tests and logs
        self._claim_errors = ErrorBackoff(log, f"claim worker_id={self.worker_id}")

    # ----------------------------------------------------------------- lifecycle

    def initialize(self) -> None:
        """Register the worker row (and the app's queue limits) and start heartbeating."""
        self.store.register_queues([queue.limits() for queue in self.registry.queues()])
        self.store.register_worker(
            self.worker_id,
            names=self.registry.names(),
            concurrency=self.options.concurrency,
            supervisor_pid=self.options.supervisor_pid,
            ttl=self.options.ttl,
        )
        self._heartbeat = Heartbeat(
            self.store, self.worker_id, self.options.ttl, self.attempts, self._check_parent
        ).start()
        log.info("worker started worker_id=%s pid=%s names=%s concurrency=%s",
                 self.worker_id, os.getpid(), ",".join(self.registry.names()), self.options.concurrency)  # fmt: skip

    def _check_parent(self) -> None:
        self._check_database()
        pid = self.options.supervisor_pid
        if pid is not None and os.getppid() != pid and not self.stop_claiming.is_set():
            log.warning("supervisor pid=%s is gone; stopping gracefully", pid)
            self.request_stop()

    def _check_database(self) -> None:
        """On each heartbeat: once the database file was deleted or replaced, stop claiming (see run)."""
        if self.database_replaced is not None:
            return
        try:
            self.store.check_identity()
        except DatabaseReplacedError as exc:
            self.database_replaced = exc
            log.error("%s; worker %s stops claiming and exits", exc, self.worker_id)
            if self._heartbeat is not None:
                self._heartbeat.halt()  # renewing the leases of a deleted or replaced file is pointless
            self.request_stop()

    def _exit_if_database_replaced(self) -> None:
        """Last act of run() after a replaced database: empty the old file's log, exit with the distinct code."""
        if self.database_replaced is not None:
            self.store.abandon_replaced_file()
            raise SystemExit(DatabaseReplacedError.exit_code)

    def request_stop(self) -> None:
        """Graceful stop: claim nothing more; running workflows stop before their next step."""
        self.stop_claiming.set()
        self.attempts.stop()

    def shutdown(self) -> None:
        """Wait for running attempts, then mark the worker stopped."""
        self.stop_claiming.set()
        self._pool.shutdown(wait=True)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        try:
            if self.attempts.retry_releases(self.store, self.worker_id):
                log.warning("some workflows could not be handed back; their leases expire now instead")
            # A held lease (a timed-out thread may still run here) expires by its TTL, after this
            # process is gone; or at once when the supervisor reaps this process.
            self.store.expire_worker(self.worker_id, state="stopped", keep=self.attempts.held())
        except StoreUnavailable as exc:
            log.warning("could not record the stop (%s); this worker's leases expire after the TTL", exc.cause)
        log.info("worker stopped worker_id=%s", self.worker_id)
        self.store.close()

    # ----------------------------------------------------------------- loop

    def free_slots(self) -> int:
        with self._lock:
            return self.options.concurrency - len(self._running)

    def loop_once(self, now: float | None = None) -> bool:
        """Claim one workflow if a slot is free and start it. True if claimed."""
        if self.stop_claiming.is_set() or self.free_slots() <= 0:
            return False
        # Hand back what the store refused earlier before taking anything new.
        self.attempts.retry_releases(self.store, self.worker_id)
        claim = self.store.claim_next(
            self.worker_id,
            self.registry.names(),
            ttl=self.options.ttl,
            max_claims=self.options.max_claims,
            now=now,
        )
        if claim is None:
            return False
        log.info(
            "claimed workflow_id=%s name=%s attempt=%s token=%s",
            claim.workflow.id,
            claim.workflow.name,
            claim.workflow.attempts,
            claim.token,
        )
        metrics.workflow_claimed(claim)
        control = self.attempts.begin(claim.workflow.id, claim.token)
        with self._lock:
            self._running[(claim.workflow.id, claim.token)] = self._pool.submit(self._execute, claim, control)
        return True

    def _execute(self, claim: Claim, control: AttemptControl) -> Outcome:
        try:
            outcome = run_claim(
                self.store,
                self.registry,
                claim,
                worker_id=self.worker_id,
                listener=metrics.step_listener(claim.workflow, self._on_event),
                control=control,
            )
            metrics.attempt_ended(claim.workflow, outcome.status)
            if outcome.release_pending:
                self.attempts.defer_release(claim.workflow.id, claim.token, outcome.reason)
            if outcome.hold:  # keep renewing its lease until this process exits (see Outcome.hold)
                self.attempts.hold(claim.workflow.id, claim.token)
                self.request_stop()
            log.info(
                "workflow %s workflow_id=%s%s%s",
                outcome.status.lower(),
                outcome.workflow_id,
                f" error={outcome.error.splitlines()[0]!r}" if outcome.error else "",
                f" reason={outcome.reason!r}" if outcome.reason else "",
            )
            self.outcomes.append(outcome)
            return outcome
        except Exception:
            log.exception("attempt crashed workflow_id=%s", claim.workflow.id)
            raise
        finally:
            self.attempts.end(claim.workflow.id, claim.token)
            with self._lock:
                self._running.pop((claim.workflow.id, claim.token), None)
            self.store.close()
            self._wake.set()

    def _on_event(self, event: StepEvent) -> None:
        self.listener(event)
        if event.timed_out:  # a live overrun, never a replayed failure
            log.warning(
                "step timed out workflow_id=%s step=%s; its thread may still run, so this worker "
                "drains and exits to be replaced",
                event.workflow_id,
                event.step_key,
            )
            self.request_stop()

    def _next_wake_mono(self, last_poll: float) -> float:
        """Monotonic time at which the earliest WAITING workflow served here is due (inf: none)."""
        try:
            wake_at = self.store.next_wake(self.registry.names())
        except (Exception, StoreUnavailable):
            return float("inf")  # the backoff bounds the wait; the next claim reports the trouble
        return float("inf") if wake_at is None else last_poll + max(wake_at - time.time(), 0.0)

    def run(self) -> None:
        """Claim and run workflows until asked to stop; then drain and exit.

        Raises ``SystemExit(DatabaseReplacedError.exit_code)`` after the drain when
        the database file was deleted or replaced under the worker.
        """
        self.initialize()
        watch = self.store.change_watch(self.registry.names()) or _WalWatch(self.store.wal_path)
        idle = self.options.poll_min
        last_poll = 0.0
        try:
            while not self.stop_claiming.is_set():
                if self.free_slots() > 0:
                    try:
                        claimed = self.loop_once()
                    except (Exception, StoreUnavailable) as exc:
                        # One log line per distinct error, then a jittered, bounded pause
                        # (a full disk once gave a traceback per poll: 3.6 MB in 7 s).
                        self.stop_claiming.wait(self._claim_errors.failed(exc))
                        continue
                    self._claim_errors.succeeded()
                    last_poll = time.monotonic()
                    if claimed:
                        idle = self.options.poll_min
                        continue
                else:
                    # Every slot is busy: sleep until an attempt ends. (Falling through to
                    # the idle wait below spun at full CPU once last_poll + idle had passed.)
                    if self._wake.wait(0.05):
                        self._wake.clear()
                    continue
                # Idle: wake on a database change, a finished attempt, the backoff, or a due sleeper.
                deadline = min(last_poll + idle, self._next_wake_mono(last_poll))
                woken = False
                while not self.stop_claiming.is_set() and time.monotonic() < deadline:
                    if self._wake.wait(0.01):
                        self._wake.clear()
                        woken = True
                        break
                    if watch.changed():
                        break
                idle = self.options.poll_min if woken else min(idle * 2, self.options.poll_max)
        finally:
            watch.close()
            self.request_stop()
            try:  # the documented "draining" state: `durable workers` shows it while steps finish
                self.store.set_worker_state(self.worker_id, "draining")
                log.info("worker draining worker_id=%s running=%s", self.worker_id, len(self._running))
            except (Exception, StoreUnavailable):
                log.exception("could not mark worker draining worker_id=%s", self.worker_id)
            self.shutdown()
        self._exit_if_database_replaced()


def _ask_for_sigterm_on_parent_death() -> None:
    """Linux: have the kernel send SIGTERM when the supervisor dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def install_signal_handlers(worker: WorkerProcess) -> SignalDispatcher:
    """Route SIGTERM and SIGINT to graceful (then forced) stops; returns the dispatcher.

    The handlers only write to a self-pipe (:mod:`durable_workers.signals`);
    the stop runs on the dispatcher thread. SIGTERM: graceful stop (a
    supervisor's second step is SIGKILL). SIGINT: ignored under a supervisor
    (it decides); a worker started by hand stops gracefully on the first
    Ctrl+C and exits at once on the second. A worker with a supervisor also
    gets SIGTERM when the supervisor dies.
    """
    dispatcher = SignalDispatcher("worker-signals")
    dispatcher.on(signal.SIGTERM, lambda count: worker.request_stop())
    supervisor_pid = worker.options.supervisor_pid
    if supervisor_pid is None:
        dispatcher.on(signal.SIGINT, lambda count: _on_interrupt(worker, count))
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _ask_for_sigterm_on_parent_death()
        if os.getppid() != supervisor_pid:  # it died before the request took effect
            worker.request_stop()
    return dispatcher


#: Exit status of a worker forced to stop by a second Ctrl+C (128 + SIGINT, as shells report it).
FORCED_EXIT = 128 + signal.SIGINT


def _on_interrupt(worker: WorkerProcess, count: int) -> None:
    """Ctrl+C of a worker started by hand: drain on the first, exit now on the second."""
    if count == 1:
        log.warning("interrupted: finishing the current steps (Ctrl+C again to stop at once)")
        worker.request_stop()
        return
    log.warning("interrupted twice: exiting now; leases expire or are reaped")
    logging.shutdown()
    os._exit(FORCED_EXIT)
