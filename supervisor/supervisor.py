"""The supervisor: spawn workers, watch them, reclaim, respawn, stop.

Each worker is a child process ``python -m durable_workers worker`` in its own
process group. When a child dies (any cause, ``kill -9`` included) the
supervisor expires its leases at once, so its workflows resume on another
worker within one poll, and respawns it with exponential backoff when it keeps
crashing. It also reaps dead workers of other processes on this host
(killed ``durable run``s, an earlier supervisor's fleet) and kills a worker
whose step ran past its timeout.

First SIGTERM/SIGINT: workers are told to drain (finish the current step,
release, exit). A second signal, or ``shutdown_timeout``: SIGKILL every
worker's process group.
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
from dataclasses import dataclass, field

from durable_workers.config import Config
from durable_workers.errors import DatabaseReplacedError
from durable_workers.liveness import reap_dead_workers
from durable_workers.liveness import hostname
from durable_workers.store import Store

log = logging.getLogger("durable_workers.supervisor")


@dataclass(frozen=True)
class SupervisorOptions:
    """Fleet settings.

    ``workers``: processes kept alive. ``concurrency``: workflows per worker.
    ``ttl``: lease lifetime. ``shutdown_timeout``: seconds a graceful stop may
    take before SIGKILL. ``timeout_grace``: extra seconds a step may overrun
    its ``timeout`` before its worker is killed.
    """

    workers: int = 4
    concurrency: int = 1
    ttl: float = 15.0
    shutdown_timeout: float = 30.0
    respawn_backoff: float = 0.5
    respawn_backoff_max: float = 30.0
    stable_after: float = 10.0
    reap_interval: float = 1.0
    timeout_grace: float = 2.0
    log_level: str = "INFO"


@dataclass
class Slot:
    """One place in the fleet and the process currently filling it."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    worker_id: str | None = None
    started: float = 0.0
    backoff: float = 0.0
    respawn_at: float = 0.0
    deaths: int = 0
    killed_for: str | None = field(default=None)


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``signal 9 (SIGKILL)``."""
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Keeps ``options.workers`` worker processes running on one database."""

    #: Why the fleet stopped: its database file was deleted or replaced (then run() exits non-zero).
    database_replaced: str | None = None
    _last_identity_check = 0.0

    def __init__(self, config: Config, options: SupervisorOptions | None = None) -> None:
        self.config = config
        self.options = options or SupervisorOptions()
        self.store = Store(config.db, synchronous=config.synchronous)
        self.slots = [Slot(i) for i in range(self.options.workers)]
        self.wake = threading.Event()
        self.stop_requests = 0
        self._stop_deadline: float | None = None
        self._terms_sent = False
        self._last_reap = 0.0

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

    def spawn(self, slot: Slot, now: float) -> None:
        """Start a worker process in ``slot`` (its own process group)."""
        worker_id = f"{hostname()}:w{slot.index}:{uuid.uuid4().hex[:6]}"
        env = dict(os.environ, DURABLE_SYNCHRONOUS=self.config.synchronous)
        env.update(self.store.identity_env())  # the worker refuses any other file at the path
        # Its own session and process group: a terminal's Ctrl+C reaches only the
        # supervisor (which decides), and a forced stop can SIGKILL the whole group.
        slot.process = subprocess.Popen(self._command(worker_id), env=env, start_new_session=True)
        slot.worker_id = worker_id
        slot.started = now
        slot.killed_for = None
        log.info("spawned worker pid=%s slot=%s worker_id=%s", slot.process.pid, slot.index, worker_id)

    def _signal_group(self, slot: Slot, signum: int) -> None:
        if slot.process is None or slot.process.poll() is not None:
            return
        try:
            os.killpg(slot.process.pid, signum)
        except ProcessLookupError:
            pass

    def live_pids(self) -> list[int]:
        """PIDs of the worker processes currently running."""
        return [s.process.pid for s in self.slots if s.process is not None and s.process.poll() is None]

    # ----------------------------------------------------------------- loop

    def _reap_children(self, now: float) -> None:
        for slot in self.slots:
            proc = slot.process
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            # A worker that got as far as registering its row was not crash-looping at
            # start-up; killed later (kill -9, OOM), it is replaced without backoff.
            registered = slot.worker_id is not None and self.store.get_worker(slot.worker_id) is not None
            reason = slot.killed_for or describe_exit(code)
            level = logging.INFO if code == 0 or self.stop_requests else logging.WARNING
            verb = "exited" if code == 0 else "died"
            log.log(level, "worker pid=%s slot=%s %s (%s)", proc.pid, slot.index, verb, reason)
            if code == DatabaseReplacedError.exit_code:
                self._check_database(now, worker_pid=proc.pid)
            if slot.worker_id is not None:
                for workflow_id in self.store.expire_worker(slot.worker_id, state="dead" if code else "stopped"):
                    log.info("reclaimed workflow %s from worker %s (pid %s)", workflow_id, slot.worker_id, proc.pid)
            slot.process = None
            slot.deaths += 1
            if self.stop_requests:
                continue
            lived = now - slot.started
            if code == 0 or lived >= self.options.stable_after or registered:
                slot.backoff = 0.0
            else:
                slot.backoff = min(
                    max(slot.backoff * 2, self.options.respawn_backoff), self.options.respawn_backoff_max
                )
            slot.respawn_at = now + slot.backoff
            if slot.backoff:
                log.info("respawning slot=%s in %.1fs (crash loop backoff)", slot.index, slot.backoff)

    def _kill_overdue(self, now: float) -> None:
        by_worker = {s.worker_id: s for s in self.slots if s.process is not None}
        for row in self.store.overdue_steps(now=now - self.options.timeout_grace):
            slot = by_worker.get(row.worker_id)
            if slot is None or slot.killed_for:
                continue
            slot.killed_for = f"killed: step {row.step_key} of {row.workflow_id} ran past its timeout"
            log.warning(
                "killing worker pid=%s: step %s of workflow %s ran past its timeout",
                slot.process.pid if slot.process else "?",
                row.step_key,
                row.workflow_id,
            )
            # Kill first, then write the note: a worker frozen inside a write transaction holds
            # the database's write lock until it dies, so noting first waited on the very
            # process about to be killed, until StoreBusyError ended the supervisor.
            self._signal_group(slot, signal.SIGKILL)
            self.store.note_step_timeout(row.workflow_id, row.step_key, worker_id=row.worker_id, now=now)

    def _check_database(self, now: float, *, worker_pid: int | None = None) -> None:
        """Every reap interval, before a spawn, and when a worker reports it: is the database file still ours?

        A deleted or replaced file stops the fleet (one error line); no worker
        is ever started on the file that took its place.
        """
        due = any(s.process is None and now >= s.respawn_at for s in self.slots) and not self.stop_requests
        if self.database_replaced is not None or not (
            due or worker_pid is not None or now - self._last_identity_check >= self.options.reap_interval
        ):
            return
        self._last_identity_check = now
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
        """Reap, reclaim, respawn, enforce timeouts, and advance a stop in progress."""
        now = time.time() if now is None else now
        self._reap_children(now)
        self._check_database(now)
        if now - self._last_reap >= self.options.reap_interval:
            self._last_reap = now
            own = {s.worker_id for s in self.slots}
            for worker, workflows in reap_dead_workers(self.store, stale_after=self.options.ttl * 3, now=now):
                if worker.id in own:
                    continue
                log.info("reaped dead worker %s (pid %s)", worker.id, worker.pid)
                for workflow_id in workflows:
                    log.info("reclaimed workflow %s from worker %s (pid %s)", workflow_id, worker.id, worker.pid)
            self._kill_overdue(now)
        if self.stop_requests:
            self._advance_stop(now)
            return
        for slot in self.slots:
            if slot.process is None and now >= slot.respawn_at:
                self.spawn(slot, now)

    def _advance_stop(self, now: float) -> None:
        if not self._terms_sent:
            self._terms_sent = True
            self._stop_deadline = now + self.options.shutdown_timeout
            log.info("stopping: workers finish their current step, release their work and exit")
            for slot in self.slots:
                self._signal_group(slot, signal.SIGTERM)
        forced = self.stop_requests > 1 or (self._stop_deadline is not None and now >= self._stop_deadline)
        if forced and self.live_pids():
            log.warning("forced stop: SIGKILL to worker process groups %s", self.live_pids())
            for slot in self.slots:
                self._signal_group(slot, signal.SIGKILL)

    # ----------------------------------------------------------------- run

    def request_stop(self) -> None:
        """Count a stop request (signal-safe: only sets flags)."""
        self.stop_requests += 1
        self.wake.set()

    def done(self) -> bool:
        """True once a stop was requested and every worker has exited."""
        return bool(self.stop_requests) and all(s.process is None for s in self.slots)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop (twice: force). SIGCHLD: wake the loop."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGINT, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGCHLD, lambda signum, frame: self.wake.set())

    def run(self) -> int:
        """Supervise until stopped; returns the exit status.

        0, or ``DatabaseReplacedError.exit_code`` when the fleet stopped because
        its database file was deleted or replaced.
        """
        log.info(
            "supervisor pid=%s: %s workers on %s (app %s)",
            os.getpid(),
            self.options.workers,
            self.config.db,
            self.config.app,
        )
        try:
            while not self.done():
                self.loop_once()
                self.wake.wait(0.2)
                self.wake.clear()
        finally:
            for slot in self.slots:
                self._signal_group(slot, signal.SIGKILL)
                if slot.process is not None:
                    slot.process.wait()
                    self._reap_children(time.time())
            if self.database_replaced is not None:
                self.store.abandon_replaced_file()  # after every worker: the last writer to the old file
            self.store.close()
        log.info("supervisor stopped")
        return DatabaseReplacedError.exit_code if self.database_replaced is not None else 0
