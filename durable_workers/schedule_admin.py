"""Schedules at run time: ``client.schedules.add/list/pause/resume/remove/trigger``.

What ``durable schedule ...`` calls. Schedules declared with
``@workflow(schedule=)`` are written by the supervisor that holds the
scheduler lease; these calls manage both kinds (an app schedule can be paused
and triggered, not removed: its declaration would bring it back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .config import SCHEDULER_ROLE
from .errors import ConflictError, InputError, WorkflowNotFound
from .records import RoleRecord, ScheduleRecord, WorkflowRecord
from .schedules import new_schedule, next_slot, slot_workflow_id

if TYPE_CHECKING:
    from .client import Client


class ScheduleNotFound(InputError):
    """No schedule has that name."""


@dataclass(frozen=True)
class SchedulerState:
    """Who fires schedules: the scheduler lease's holder, if its lease is current."""

    role: RoleRecord | None
    now: float

    @property
    def held(self) -> bool:
        """Whether a supervisor holds the lease now (else no schedule fires until one runs)."""
        return self.role is not None and self.role.expires_at > self.now


class Schedules:
    """The schedules of one client's database (``Client.schedules``)."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def add(
        self,
        workflow: str,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        catchup: str = "latest",
        input: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> ScheduleRecord:
        """Add a schedule (``name`` defaults to the workflow's) that fires from its next slot on.

        Checks the workflow name and input against the app and the cron, zone
        and catchup before writing. A name in use raises :class:`ConflictError`
        unless ``replace`` (which rewrites it and restarts it at its next slot).
        """
        spec = self.client.registry.get(workflow)
        values = dict(input or {})
        spec.check_input(values)
        store = self.client.store
        schedule = new_schedule(
            workflow if name is None else name, workflow, cron, timezone_name=timezone, catchup=catchup, input=values, now=store.now()
        )
        existing = store.get_schedule(schedule.name)
        if existing is not None and existing.origin == "app":
            raise ConflictError(f"schedule {schedule.name} is declared by @workflow(schedule=) in the app; "
                                "give this one another --name")  # fmt: skip
        if not store.add_schedule(schedule, replace=replace):
            raise ConflictError(f"schedule {schedule.name} exists; remove it first, or pass --replace")
        return self.get(schedule.name)

    def get(self, name: str) -> ScheduleRecord:
        """The schedule called ``name``; raises :class:`ScheduleNotFound`."""
        found = self.client.store.get_schedule(name)
        if found is None:
            raise ScheduleNotFound(f"no schedule named {name!r}; list them with: durable schedule list")
        return found

    def list(self) -> list[ScheduleRecord]:
        """Every schedule, by name (``next_at``: its next fire time)."""
        return self.client.store.list_schedules()

    def pause(self, name: str) -> ScheduleRecord:
        """Stop firing ``name`` until :meth:`resume` (slots in between are skipped)."""
        self.get(name)
        self.client.store.pause_schedule(name, True)
        return self.get(name)

    def resume(self, name: str) -> ScheduleRecord:
        """Fire ``name`` again from its next slot after now."""
        schedule = self.get(name)
        store = self.client.store
        store.pause_schedule(name, False, next_at=next_slot(schedule, store.now()))
        return self.get(name)

    def remove(self, name: str) -> None:
        """Delete a run-time schedule (the workflows it submitted stay)."""
        if self.get(name).origin == "app":
            raise ConflictError(f"schedule {name} is declared by @workflow(schedule=) in the app; pause it "
                                "(durable schedule pause), or remove schedule= from the code")  # fmt: skip
        self.client.store.remove_schedule(name)

    def trigger(self, name: str) -> tuple[WorkflowRecord, bool]:
        """Submit one run of ``name`` now (id ``NAME@<now, ISO UTC>``); its row, and False if that id existed."""
        schedule = self.get(name)
        workflow_id = slot_workflow_id(name, math.floor(self.client.store.now()))
        try:
            return self.client.store.get_workflow(workflow_id), False
        except WorkflowNotFound:
            return self.client.submit(schedule.workflow, workflow_id, schedule.input), True

    def scheduler(self) -> SchedulerState:
        """Who holds the scheduler lease now."""
        store = self.client.store
        return SchedulerState(store.get_role(SCHEDULER_ROLE), store.now())


__all__ = ["ScheduleNotFound", "SchedulerState", "Schedules"]
