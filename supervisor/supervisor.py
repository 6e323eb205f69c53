"""The supervisor: spawn workers, watch them, reclaim, respawn, stop.

Each worker is a child process ``python -m durable_workers worker`` in its own
process group. When a child dies (any cause, ``kill -9`` included) the
supervisor kills what is left of its process group (subprocesses its steps
started), expires its leases at once, so its workflows resume on another
worker within one poll, and respawns it with exponential backoff when it keeps
crashing. It also reaps dead workers of other processes on this host
(killed ``durable run``s, an earlier supervisor's fleet), kills a worker whose
step ran past its timeout or whose heartbeat stopped (a frozen process), and
prunes old rows of dead and stopped workers.

Local durations (step timeouts, heartbeat ages, respawn backoff, the shutdown
deadline) are measured on the monotonic clock. A store error in one turn of
the loop is logged once per distinct error and backed off; the workers keep
running.

First SIGTERM/SIGINT: workers are told to drain (finish the current step,
release, exit). A second signal, or ``shutdown_timeout``: the running steps
are recorded as interrupted (not counted against ``max_attempts``) and every
worker's process group is SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from durable_workers.backends import open_store
from durable_workers.backoff import ErrorBackoff
from durable_workers import metrics
from durable_workers.config import Config
from durable_workers.errors import DatabaseReplacedError, StoreUnavailable
from durable_workers.liveness import (
    DEAD_HEARTBEAT_TTLS,
    host_identity,
    hostname,
    reap_dead_workers,
)
from durable_workers.client import Client
from durable_workers.retention import RetentionSweep
from durable_workers.scheduler import Scheduler
from durable_workers.signals import SignalDispatcher

from .frozen import FrozenWatch
from .fleet import Slot, StepWatch, SupervisorOptions, describe_exit, kill_group, kill_group_if_exited

log = logging.getLogger("durable_workers.supervisor")

#: Seconds between two turns of the loop when nothing wakes it earlier.
LOOP_INTERVAL = 0.2


class Supervisor:
    """Keeps ``options.workers`` worker processes running on one database."""

    #: Why the fleet stopped: its database file was deleted or replaced (then run() exits non-zero).
    database_replaced: str | None = None
    _last_identity_check = 0.0

    def __init__(self, config: Config, options: SupervisorOptions | None = None) -> None:
        self.config = config
        self.options = options or SupervisorOptions()
        self.store = open_store(
            config.db, synchronous=config.synchronous, lock_patience=config.lock_patience, pool_size=config.pool_size
        )
        self.slots = [Slot(i) for i in range(self.options.workers)]
        self.wake = threading.Event()
        self.stop_requests = 0
        self.signals: SignalDispatcher | None = None
        self._stop_deadline: float | None = None  # monotonic
        self._terms_sent = False
        self._forced = False
        self._last_reap: float | None = None  # monotonic
        #: Monotonic time the last turn of the loop ended, failed or not (``/healthz`` reads it).
        self.last_turn = time.monotonic()
        self._last_prune: float | None = None  # monotonic
        self._steps = StepWatch()
        self._frozen = FrozenWatch(self.options.frozen_after_ttls, self.options.ttl)
        self._errors = ErrorBackoff(log, "supervisor loop")
        holder = f"{host_identity()}/supervisor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        client = Client(config=config, store=self.store)
        self._scheduler = Scheduler(client, holder, self.options.ttl, RetentionSweep(config.retention))

    # ----------------------------------------------------------------- processes

    def _command(self, worker_id: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "durable_workers",
            "worker",
            "--db",
            self.config.db,
            "--app",
            self.config.app,
            "--worker-id",
            worker_id,
            "--concurrency",
            str(self.options.concurrency),
            "--ttl",
            str(self.options.ttl),
            "--supervisor-pid",
            str(os.getpid()),
            "--log-level",
            self.options.log_level,
        ]

    def spawn(self, slot: Slot, mono: float) -> None:
        """Start a worker process in ``slot`` (its own session and process group)."""
        worker_id = f"{hostname()}:w{slot.index}:{uuid.uuid4().hex[:6]}"
        env = dict(os.environ, DURABLE_SYNCHRONOUS=self.config.synchronous)
        if self.config.pool_size is not None:
            env["DURABLE_POOL_SIZE"] = str(self.config.pool_size)
        env.update(self.store.identity_env())  # the worker refuses any other file at the path
        env["DURABLE_HOST_ID"] = host_identity()  # its rows carry this supervisor's host identity
        # Its own session and process group: a terminal's Ctrl+C reaches only the
        # supervisor (which decides), and a forced stop can SIGKILL the whole group.
        slot.process = subprocess.Popen(self._command(worker_id), env=env, start_new_session=True)
        slot.worker_id = worker_id
        slot.started = mono
        slot.killed_for = None
        log.info("spawned worker pid=%s slot=%s worker_id=%s", slot.process.pid, slot.index, worker_id)

    def _signal_group(self, slot: Slot, signum: int) -> None:
        if slot.alive():
            assert slot.process is not None
            kill_group(slot.process.pid, signum)

    def live_pids(self) -> list[int]:
        """PIDs of the worker processes currently running."""
        return [s.process.pid for s in self.slots if s.process is not None and s.alive()]

    # ----------------------------------------------------------------- loop

    def _reap_children(self, mono: float) -> None:
        for slot in self.slots:
            proc = slot.process
            if proc is None:
                continue
            # Whatever its steps started dies with it (an orphan would run beside the re-executed step).
            kill_group_if_exited(proc)
            if proc.poll() is None:
                continue
            code = proc.returncode
            # A worker that got as far as registering its row was not crash-looping at
            # start-up; killed later (kill -9, OOM), it is replaced without backoff.
            registered = slot.worker_id is not None and self.store.get_worker(slot.worker_id) is not None
            if code == DatabaseReplacedError.exit_code:
                self._check_database(mono, worker_pid=proc.pid)
            if slot.worker_id is not None:
                for workflow_id in self.store.expire_worker(slot.worker_id, state="dead" if code else "stopped"):
                    log.info("reclaimed workflow %s from worker %s (pid %s)", workflow_id, slot.worker_id, proc.pid)
                    metrics.lease_reclaimed("worker_exited")
            reason = slot.killed_for or describe_exit(code)
            level = logging.INFO if code == 0 or self.stop_requests else logging.WARNING
            log.log(level, "worker pid=%s slot=%s %s (%s)", proc.pid, slot.index, "exited" if code == 0 else "died", reason)
            slot.process = None
            slot.deaths += 1
            if self.stop_requests:
                continue
            metrics.worker_restarted(code)
            if code == 0 or mono - slot.started >= self.options.stable_after or registered:
                slot.backoff = 0.0
            else:
                slot.backoff = min(
                    max(slot.backoff * 2, self.options.respawn_backoff), self.options.respawn_backoff_max
                )
            slot.respawn_at = mono + slot.backoff
            if slot.backoff:
                log.info("respawning slot=%s in %.1fs (crash loop backoff)", slot.index, slot.backoff)

    def _kill(self, slot: Slot, reason: str, *, logged: str | None = None) -> None:
        """SIGKILL a slot's process group; the reap that follows logs ``reason``."""
        slot.killed_for = f"killed: {reason}"
        log.warning("killing worker pid=%s: %s", slot.process.pid if slot.process else "?", logged or reason)
        self._signal_group(slot, signal.SIGKILL)

    def _kill_overdue(self, now: float, mono: float) -> None:
        by_worker = {s.worker_id: s for s in self.slots if s.alive()}
        late = self._steps.overdue(self.store.timed_steps(), mono=mono, grace=self.options.timeout_grace)
        for row, ran in late:
            slot = by_worker.get(row.worker_id)
            if slot is None or slot.killed_for:
                continue
            # Kill first, then write the note: a worker frozen inside a write transaction holds
            # the database's write lock until it dies, so noting first waited on the very
            # process about to be killed, until StoreUnavailable ended the supervisor.
            self._kill(
                slot,
                f"step {row.step_key} of {row.workflow_id} ran past its timeout",
                logged=f"step {row.step_key} of workflow {row.workflow_id} ran past its timeout",
            )
            self.store.note_step_timeout(
                row.workflow_id, row.step_key, worker_id=row.worker_id, token=row.token, overrun=ran, now=now
            )

    def _kill_frozen(self) -> None:
        """Kill own workers whose heartbeat stopped (see supervisor/frozen.py)."""
        for slot, reason in self._frozen.frozen(self.store, self.slots):
            self._kill(slot, reason)

    def _reap_others(self, now: float) -> None:
        own = {s.worker_id for s in self.slots}
        # After an outage every heartbeat is late by its length: other hosts' live workers are not dead.
        stale_after = DEAD_HEARTBEAT_TTLS * self.options.ttl + self.store.stall_grace(self.options.ttl)
        for worker, workflows in reap_dead_workers(self.store, stale_after=stale_after, now=now, exclude=own):
            log.info("reaped dead worker %s (pid %s)", worker.id, worker.pid)
            for workflow_id in workflows:
                log.info("reclaimed workflow %s from worker %s (pid %s)", workflow_id, worker.id, worker.pid)
                metrics.lease_reclaimed("dead_worker")

    def _prune(self, now: float, mono: float) -> None:
        if self._last_prune is not None and mono - self._last_prune < self.options.prune_interval:
            return
        self._last_prune = mono
        pruned = self.store.prune_workers(older_than=self.options.worker_retention, now=now)
        if pruned:
            log.info("pruned %d dead or stopped worker rows older than %.0fs", pruned, self.options.worker_retention)

    def _check_database(self, mono: float, *, worker_pid: int | None = None) -> None:
        """Every reap interval, before a spawn, and when a worker reports it: is the database file still ours?

        A deleted or replaced file stops the fleet (one error line); no worker
        is ever started on the file that took its place.
        """
        due = any(s.process is None and mono >= s.respawn_at for s in self.slots) and not self.stop_requests
        if self.database_replaced is not None or not (
            due or worker_pid is not None or mono - self._last_identity_check >= self.options.reap_interval
        ):
            return
        self._last_identity_check = mono
        try:
            self.store.check_identity()
            if worker_pid is None:
                return
            reason = f"worker pid={worker_pid} found database {self.config.db} deleted or replaced"
        except DatabaseReplacedError as exc:
            reason = str(exc)
        self.database_replaced = reason
        log.error("%s; stopping the fleet (no worker is started on another database)", reason)
        self.stop_requests = max(self.stop_requests, 1)
        self.wake.set()

    def loop_once(self, now: float | None = None) -> None:
        """Reap, reclaim, respawn, enforce timeouts, heartbeats and deadlines, prune, advance a stop.

        ``now`` is the time used for database comparisons (reclaim of other
        hosts' workers by their heartbeat, pruning): by default the store's
        clock (``store.now()``: the database's on PostgreSQL, the one clock
        every host's rows are written on); a test may pass a jumped clock.
        Local durations use ``time.monotonic()`` whatever ``now`` says. Store
        errors propagate (see :meth:`tick`).
        """
        mono = time.monotonic()
        self._reap_children(mono)
        self._check_database(mono)
        if self._last_reap is None or mono - self._last_reap >= self.options.reap_interval:
            now = self.store.now() if now is None else now
            self._reap_others(now)
            self._kill_overdue(now, mono)
            self._kill_frozen()
            self._prune(now, mono)
            for workflow_id in self.store.expire_deadlines(now=now):
                log.info("workflow %s is past its deadline: CANCELLED (children too)", workflow_id)
            self._last_reap = mono  # only once it all went through: a failed turn is retried next turn
        if self.stop_requests:
            self._advance_stop(mono)
            return
        for slot in self.slots:
            if slot.process is None and mono >= slot.respawn_at:
                self.spawn(slot, mono)

    def tick(self, now: float | None = None) -> float:
        """One guarded turn of the loop; returns the seconds to wait before the next.

        A store error (``StoreUnavailable``, a database error) or a failed
        spawn does not end the supervisor: it is logged once per distinct
        error, the next turn is backed off (jittered, bounded), and the
        workers keep running. A stop in progress still advances.
        """
        try:
            self.loop_once(now)
        except (Exception, StoreUnavailable) as exc:
            pause = self._errors.failed(exc)
            if self.stop_requests:
                self._advance_stop(time.monotonic())
            return min(pause, LOOP_INTERVAL) if self.stop_requests else pause
        finally:
            self.last_turn = time.monotonic()
        self._errors.succeeded()
        return LOOP_INTERVAL

    def _advance_stop(self, mono: float) -> None:
        if not self._terms_sent:
            self._terms_sent = True
            self._stop_deadline = mono + self.options.shutdown_timeout
            log.info("stopping: workers finish their current step, release their work and exit")
            for slot in self.slots:
                self._signal_group(slot, signal.SIGTERM)
        forced = self.stop_requests > 1 or (self._stop_deadline is not None and mono >= self._stop_deadline)
        if forced and self.live_pids():
            self._force_stop()

    def _force_stop(self) -> None:
        """Record the running steps as interrupted, then SIGKILL every worker's process group."""
        if not self._forced:
            self._forced = True
            log.warning("forced stop: SIGKILL to worker process groups %s", self.live_pids())
            ids = [s.worker_id for s in self.slots if s.alive() and s.worker_id is not None]
            try:
                for workflow_id in self.store.interrupt_workers(ids):
                    log.info("interrupted workflow %s (its step does not count as a crash)", workflow_id)
            except (Exception, StoreUnavailable):  # the kill must happen anyway
                log.exception("could not record the interruption of workers %s", ids)
        for slot in self.slots:
            self._signal_group(slot, signal.SIGKILL)

    # ----------------------------------------------------------------- run

    def request_stop(self) -> None:
        """Count a stop request and wake the loop (not for a signal handler: see install_signal_handlers)."""
        self.stop_requests += 1
        self._scheduler.request_stop()  # hand the scheduler lease over now, not after the drain
        self.wake.set()

    def done(self) -> bool:
        """True once a stop was requested and every worker has exited."""
        return bool(self.stop_requests) and not any(s.alive() for s in self.slots)

    def install_signal_handlers(self) -> SignalDispatcher:
        """SIGTERM/SIGINT: stop (twice: force). SIGCHLD: wake the loop.

        The handlers only write to a self-pipe; the calls run on the
        dispatcher thread (:mod:`durable_workers.signals`).
        """
        self.signals = SignalDispatcher("supervisor-signals")
        self.signals.on(signal.SIGTERM, lambda count: self.request_stop())
        self.signals.on(signal.SIGINT, lambda count: self.request_stop())
        self.signals.on(signal.SIGCHLD, lambda count: self.wake.set())
        return self.signals

    def run(self) -> int:
        """Supervise until stopped; returns the exit status.

        0, or ``DatabaseReplacedError.exit_code`` when the fleet stopped because
        its database file was deleted or replaced.
        """
        log.info("supervisor pid=%s: %s workers on %s (app %s)",
                 os.getpid(), self.options.workers, self.config.db, self.config.app)  # fmt: skip
        self._scheduler.start()  # its own thread: fires schedules and sweeps retention while holding the lease
        try:
            while not self.done():
                pause = self.tick()
                self.wake.wait(pause)
                self.wake.clear()
        finally:
            self._shutdown()
        log.info("supervisor stopped")
        return DatabaseReplacedError.exit_code if self.database_replaced is not None else 0

    def _shutdown(self) -> None:
        for slot in self.slots:
            self._signal_group(slot, signal.SIGKILL)
            if slot.process is not None:
                slot.process.wait()
        try:
            self._reap_children(time.monotonic())
        except (Exception, StoreUnavailable):
            log.exception("could not record the workers' exit; their leases expire after the TTL")
        self._scheduler.stop()
        if self.database_replaced is not None:
            self.store.abandon_replaced_file()  # after every worker: the last writer to the old file
        self.store.close()
