"""The in-process runner behind ``durable run`` and :meth:`Client.run_here`.

One workflow, run (or resumed) in this process as a short-lived worker: it
registers a worker row, reaps dead holders on this host, claims the workflow,
heartbeats its lease and records the attempt's outcome like a fleet worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading

from . import clock
from .backends import Store
from .config import NO_TIMEOUT_WAKE_AT, RUN_POLL_S
from .engine import Outcome, run_claim
from .heartbeat import Heartbeat, LiveAttempts
from .liveness import reap_dead_workers
from .context import Listener
from .errors import InvalidStateError, StoreUnavailable
from .records import TERMINAL, Status
from .registry import Registry
from .signals import SignalDispatcher
from .worker import FORCED_EXIT, new_worker_id

log = logging.getLogger("durable_workers.worker")

#: ``workflows.waiting_for`` of a workflow waiting on a child workflow: this prefix and the child's id.
CHILD_PREFIX = "child:"


def _stop_on_signals(attempts: LiveAttempts) -> None:
    """SIGINT/SIGTERM: the first stops the run before its next step, the second exits at once."""
    received = itertools.count(1)

    def on_signal(_count: int) -> None:
        if next(received) == 1:
            log.warning("stopping before the next step (interrupt again to quit at once)")
            attempts.stop()
        else:
            os._exit(FORCED_EXIT)  # the lease is reaped by PID or expires; nothing is recorded

    SignalDispatcher("run-signals").on(signal.SIGINT, on_signal).on(signal.SIGTERM, on_signal)


def _wait_until_due(store: Store, workflow_id: str, stopping: threading.Event) -> bool:
    """Wait until the WAITING workflow is due (a send may make it due early); False when stopped or waiting without end.

    Under a fake clock (``durable_workers.clock``) no real time is waited: see :meth:`FakeClock.reach`.
    """
    while True:
        wake_at = store.get_workflow(workflow_id).wake_at
        if wake_at is None or wake_at >= NO_TIMEOUT_WAKE_AT:
            return False  # a receive with no timeout: a worker (or another run) resumes it after a send
        fake = clock.installed
        if fake is not None:  # a test's clock: jump to the wake time (auto-advance) or hand it back WAITING
            return not stopping.is_set() and fake.reach(wake_at)
        if stopping.wait(min(max(wake_at - store.now(), 0.0), RUN_POLL_S)):
            return False
        if wake_at <= store.now():
            return True


def _await_child(
    store: Store, registry: Registry, workflow_id: str, listener: Listener | None, stopping: threading.Event
) -> bool:
    """The WAITING workflow waits on a child: run it here when this app has it, else wait for its end.

    True when the child ended (resume the parent); False when this run stops (the
    child waits for a message with no timeout, or a signal came): the parent stays WAITING.
    """
    record = store.get_workflow(workflow_id)
    waiting = record.waiting_for or ""
    if record.status != Status.WAITING.value or not waiting.startswith(CHILD_PREFIX):
        return False
    child_id = waiting[len(CHILD_PREFIX):]
    child = store.get_workflow(child_id)
    if child.name in registry and child.status not in TERMINAL:
        try:
            run_here(store, registry, child_id, listener=listener, stopping=stopping)
        except InvalidStateError:
            pass  # a fleet worker runs it: wait for its end below
        else:
            return store.get_workflow(child_id).status in TERMINAL
    while store.get_workflow(child_id).status not in TERMINAL:  # run by the fleet
        if stopping.wait(RUN_POLL_S):
            return False
    return True


def run_here(
    store: Store,
    registry: Registry,
    workflow_id: str,
    *,
    listener: Listener | None = None,
    ttl: float = 15.0,
    stale_after: float = 45.0,
    stop_on_signals: bool = False,
    stopping: threading.Event | None = None,
) -> Outcome | None:
    """Run (or resume) one workflow in this process, as a short-lived worker.

    Leases held by dead processes on this host are reclaimed first, so a
    workflow whose previous runner was killed resumes at once. Returns
    ``None`` when the workflow had already ended. An ``ABANDONED`` outcome
    (a step timed out with retries left, or the store became unavailable)
    or a ``RELEASED`` one (stopped by a signal, see ``stop_on_signals``)
    means: run it again to resume. A workflow that sleeps (``ctx.sleep``) is
    waited for in this process and resumed when due (a ``ctx.recv`` with a
    timeout too, woken early by a send); a child it waits on is run here too
    when this app defines it (else waited for). Stopped meanwhile, or waiting for a
    message with no timeout, it stays WAITING and the ``WAITING`` outcome is
    returned. ``stopping``: an event that stops this run like a signal (a
    parent's run passes its own to the run of a child).
    """
    reap_dead_workers(store, stale_after=stale_after)
    worker_id = new_worker_id()
    store.register_worker(worker_id, names=registry.names(), ttl=ttl)
    attempts = LiveAttempts(stopping or threading.Event())
    if stop_on_signals:
        _stop_on_signals(attempts)
    heartbeat = Heartbeat(store, worker_id, ttl, attempts).start()
    try:
        while True:
            claim = store.claim_workflow(workflow_id, worker_id, ttl=ttl)
            if claim is None:
                return None
            control = attempts.begin(claim.workflow.id, claim.token)
            try:
                outcome = run_claim(store, registry, claim, worker_id=worker_id, listener=listener, control=control)
            finally:
                attempts.end(claim.workflow.id, claim.token)
            if outcome.release_pending:
                attempts.defer_release(claim.workflow.id, claim.token, outcome.reason)
                attempts.retry_releases(store, worker_id)
            # A child awaited: run it here too. A durable sleep or timed receive: a foreground run waits it out
            # here (it stays WAITING if stopped meanwhile).
            if outcome.wake_at is not None and _await_child(store, registry, workflow_id, listener, attempts.stopping):
                continue
            if outcome.wake_at is None or not _wait_until_due(store, workflow_id, attempts.stopping):
                return outcome
    finally:
        heartbeat.stop()
        try:
            store.expire_worker(worker_id, state="stopped")
        except StoreUnavailable as exc:  # the store went away: the row ages out by its TTL
            log.warning("could not mark worker %s stopped: %s", worker_id, exc)
