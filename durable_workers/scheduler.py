"""The fleet's scheduler: one supervisor at a time fires schedules and runs retention.

Every supervisor runs a :class:`Scheduler` in a thread of its own (so a lock
held elsewhere never stalls the supervisor's loop), which calls
:meth:`Scheduler.turn` every :data:`~durable_workers.config.SCHEDULER_INTERVAL` seconds. The turn
takes or renews the ``scheduler`` role (a ``roles`` row held like a lease, for
``ttl`` seconds past its last renewal); only the holder goes on: it writes the
app's ``@workflow(schedule=)`` declarations when it becomes holder, fires due
slots, and runs the retention sweep. A supervisor killed with ``kill -9`` stops
renewing and another takes over within ``ttl``.

Firing a slot submits ``NAME@<slot ISO UTC>`` (idempotent by id), then moves
the schedule's ``next_at`` on with a compare-and-set. A crash between the two
re-submits the same id, which is a no-op, so a slot is never run twice, and
two supervisors that both believe they hold the role (one of them paused past
its lease) cannot run a slot twice either.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from .backends import Store
from .backoff import ErrorBackoff
from .config import SCHEDULER_INTERVAL, SCHEDULER_ROLE
from .errors import ConflictError, DurableError, InputError, StoreUnavailable, UnknownWorkflowError
from .records import ScheduleRecord
from .registry import Registry
from .retention import RetentionSweep
from .schedules import new_schedule, plan_firing, slot_iso, slot_workflow_id

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("durable_workers.scheduler")


def sync_app_schedules(store: Store, registry: Registry, now: float) -> list[str]:
    """Write the app's ``@workflow(schedule=)`` declarations; the names written or changed.

    A new declaration starts at its next slot; a changed one (cron, zone,
    catchup) is rewritten and restarts at its next slot, keeping its pause
    state; a schedule the app declared before but no longer does is removed
    (only for workflows this app registers: another app's are left alone).
    A schedule added at run time under the same name wins over the declaration.
    """
    changed = []
    for spec in registry.scheduled():
        assert spec.schedule is not None
        cron, zone, catchup = spec.schedule
        wanted = new_schedule(spec.name, spec.name, cron, timezone_name=zone, catchup=catchup, origin="app", now=now)
        existing = store.get_schedule(spec.name)
        if existing is not None and (existing.origin != "app" or existing.defines_same(wanted)):
            continue
        paused = existing is not None and existing.paused
        store.add_schedule(replace(wanted, paused=paused), replace=True, now=now)
        changed.append(spec.name)
    declared = {spec.name for spec in registry.scheduled()}
    for schedule in store.list_schedules():
        if schedule.origin == "app" and schedule.workflow in registry and schedule.name not in declared:
            store.remove_schedule(schedule.name)
            changed.append(schedule.name)
    return changed


class Scheduler:
    """The supervisor's scheduler turn: hold the role, then fire due slots and sweep retention."""

    def __init__(self, client: "Client", holder: str, ttl: float, retention: RetentionSweep) -> None:
        self.client = client
        self.holder = holder
        self.ttl = ttl
        self.retention = retention
        #: The role's token while this scheduler holds it, else None.
        self.token: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run turns in a daemon thread until :meth:`stop` (a failed turn is logged and backed off)."""
        self._thread = threading.Thread(target=self._loop, name="durable-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        errors = ErrorBackoff(log, "scheduler")
        interval = min(SCHEDULER_INTERVAL, self.ttl / 3)  # renewed well inside the lease, like heartbeats
        pause = 0.0
        while not self._stop.wait(pause):
            began = time.monotonic()
            try:
                self.turn(self.store.now(), began)
            except (Exception, StoreUnavailable) as exc:  # the next turn retries; nothing is half-fired
                pause = errors.failed(exc)
                continue
            errors.succeeded()
            pause = max(0.0, interval - (time.monotonic() - began))
        self.release()
        self.store.close()  # this thread's connection

    def request_stop(self) -> None:
        """Stop firing after the current turn and hand the role over (a drain began); does not wait."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (after its current turn, up to ``timeout`` s) and give the role up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self.release()  # else the thread releases it when its turn ends

    @property
    def store(self) -> Store:
        """The client's store (the supervisor's)."""
        return self.client.store

    def turn(self, now: float, mono: float) -> int:
        """Renew or take the role; as holder, fire what is due and sweep. The number of slots fired."""
        token = self.store.hold_role(SCHEDULER_ROLE, self.holder, self.ttl, now=now)
        if token is None:
            if self.token is not None:
                log.warning("lost the scheduler lease (another supervisor holds it)")
            self.token = None
            return 0
        if self.token != token:
            log.info("holds the scheduler lease (token %d): fires schedules and runs retention", token)
            for name in sync_app_schedules(self.store, self.client.registry, now):
                log.info("schedule %s: written from the app's @workflow(schedule=)", name)
            self.token = token  # only once written: a failed sync is done again next turn
        fired = sum(self.fire(schedule, now) for schedule in self.store.due_schedules(now=now))
        self.retention.maybe_run(self.store, now, mono)
        return fired

    def fire(self, schedule: ScheduleRecord, now: float) -> int:
        """Submit the slots of ``schedule`` that are due and move it on; the number submitted."""
        slots, next_at = plan_firing(schedule, now)
        for slot in slots:
            self.submit_slot(schedule, slot)
        if not slots:
            log.info("schedule %s: skipped missed slots up to %s (catchup=none)", schedule.name, slot_iso(now))
        last = slots[-1] if slots else schedule.last_slot
        self.store.advance_schedule(schedule.name, expected_next_at=schedule.next_at, next_at=next_at, last_slot=last)
        return len(slots)

    def submit_slot(self, schedule: ScheduleRecord, slot: float) -> None:
        """Submit slot ``slot``'s workflow; a slot the app cannot submit is logged and skipped, never retried forever."""
        workflow_id = slot_workflow_id(schedule.name, slot)
        check = schedule.workflow in self.client.registry
        try:
            self.client.submit(schedule.workflow, workflow_id, schedule.input, check=check)
        except (ConflictError, InputError, UnknownWorkflowError) as exc:
            log.error("schedule %s: slot %s not submitted: %s", schedule.name, slot_iso(slot), exc)
            return
        log.info("schedule %s: submitted %s", schedule.name, workflow_id)

    def release(self) -> None:
        """Give the role up (a clean stop): another supervisor takes it at its next turn."""
        if self.token is None:
            return
        try:
            self.store.release_role(SCHEDULER_ROLE, self.holder)
        except (DurableError, StoreUnavailable) as exc:
            log.warning("could not release the scheduler lease (it expires by itself): %s", exc)
        self.token = None


__all__ = ["Scheduler", "sync_app_schedules"]
