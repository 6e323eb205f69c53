"""Store operations of cron schedules and of fleet-wide roles (the scheduler lease).

A schedule row says which workflow each slot submits and the first slot not
fired yet (``next_at``); the caller computes slots (``durable_workers.schedules``,
croniter) and moves ``next_at`` on with a compare-and-set, so a scheduler that
lost its role cannot move a schedule back. A role row is held like a lease: a
holder renews it before ``expires_at``; anyone may take it once it has expired,
which bumps its ``token``.
"""

from __future__ import annotations

import json

from peewee import Case

from ..records import RoleRecord, ScheduleRecord
from .rows import RowHelpers

#: The columns a schedule's definition is made of (what ``add_schedule(replace=True)`` rewrites).
_DEFINITION = ("workflow", "cron", "timezone", "catchup", "input", "origin", "paused", "next_at")


class ScheduleOps(RowHelpers):
    """Cron schedules (``schedules``) and fleet-wide roles (``roles``)."""

    # ----------------------------------------------------------------- schedules

    def add_schedule(self, schedule: ScheduleRecord, *, replace: bool = False, now: float | None = None) -> bool:
        """Write a schedule; False (nothing written) when its name exists and not ``replace``.

        ``replace`` rewrites an existing row's definition, pause state and
        ``next_at``, keeping its ``last_slot`` and creation time.
        """
        m = self.m
        now = self._clock(now)
        values = {
            "workflow": schedule.workflow, "cron": schedule.cron, "timezone": schedule.timezone,
            "catchup": schedule.catchup, "input": json.dumps(schedule.input, sort_keys=True),
            "origin": schedule.origin, "paused": int(schedule.paused), "next_at": schedule.next_at,
        }  # fmt: skip

        def body() -> bool:
            query = m.Schedule.insert(name=schedule.name, created_at=now, updated_at=now, **values)
            if replace:
                update = {getattr(m.Schedule, k): values[k] for k in _DEFINITION}
                update[m.Schedule.updated_at] = now
                query.on_conflict(conflict_target=[m.Schedule.name], update=update).execute()
                return True
            return bool(query.on_conflict_ignore().as_rowcount().execute())

        return self.write(body, safe=True)

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule called ``name``, or None."""
        m = self.m
        row = self.read(lambda: m.Schedule.get_or_none(m.Schedule.name == name))
        return None if row is None else ScheduleRecord.from_row(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        m = self.m
        rows = self.read(lambda: list(m.Schedule.select().order_by(m.Schedule.name)))
        return [ScheduleRecord.from_row(row) for row in rows]

    def due_schedules(self, *, now: float | None = None, limit: int = 100) -> list[ScheduleRecord]:
        """Unpaused schedules whose next slot is at or before ``now``, the most overdue first."""
        m = self.m
        now = self._clock(now)
        query = (
            m.Schedule.select()
            .where((m.Schedule.paused == 0) & (m.Schedule.next_at <= now))
            .order_by(m.Schedule.next_at, m.Schedule.name)
            .limit(limit)
        )
        return [ScheduleRecord.from_row(row) for row in self.read(lambda: list(query))]

    def advance_schedule(
        self, name: str, *, expected_next_at: float, next_at: float, last_slot: float | None, now: float | None = None
    ) -> bool:
        """Move a schedule's ``next_at`` on if it is still ``expected_next_at`` (compare-and-set); True if moved."""
        m = self.m
        now = self._clock(now)
        query = m.Schedule.update(next_at=next_at, last_slot=last_slot, updated_at=now).where(
            (m.Schedule.name == name) & (m.Schedule.next_at == expected_next_at)
        )
        return bool(self.write(query.execute, safe=True))

    def pause_schedule(self, name: str, paused: bool, *, next_at: float | None = None, now: float | None = None) -> bool:
        """Pause or resume a schedule (resuming sets ``next_at``, when given); False if there is none."""
        m = self.m
        values: dict[str, object] = {"paused": int(paused), "updated_at": self._clock(now)}
        if next_at is not None:
            values["next_at"] = next_at
        query = m.Schedule.update(**values).where(m.Schedule.name == name)
        return bool(self.write(query.execute, safe=True))

    def remove_schedule(self, name: str) -> bool:
        """Delete a schedule (the workflows it submitted stay); False if there was none."""
        m = self.m
        return bool(self.write(m.Schedule.delete().where(m.Schedule.name == name).execute, safe=True))

    # ----------------------------------------------------------------- roles

    def hold_role(self, role: str, holder: str, ttl: float, *, now: float | None = None) -> int | None:
        """Take or renew ``role`` for ``holder`` until ``now + ttl``; its token if held, else None.

        Succeeds when the role is free, expired, or already ``holder``'s; a
        change of holder bumps the token. Retry-safe: running it twice leaves
        the same holder with the same token.
        """
        m = self.m
        now = self._clock(now)

        def body() -> int | None:
            inserted = (
                m.Role.insert(name=role, holder=holder, token=1, expires_at=now + ttl, renewed_at=now)
                .on_conflict_ignore()
                .as_rowcount()
                .execute()
            )
            if not inserted:
                ours = m.Role.holder == holder
                taken = (
                    m.Role.update(
                        token=Case(None, [(ours, m.Role.token)], m.Role.token + 1),
                        holder=holder, expires_at=now + ttl, renewed_at=now,
                    )  # fmt: skip
                    .where((m.Role.name == role) & (ours | (m.Role.expires_at <= now)))
                    .execute()
                )
                if not taken:
                    return None
            return m.Role.select(m.Role.token).where(m.Role.name == role).scalar()

        return self.write(body, safe=True)

    def release_role(self, role: str, holder: str, *, now: float | None = None) -> bool:
        """Give ``role`` up if ``holder`` holds it (it expires now: anyone may take it); True if released."""
        m = self.m
        now = self._clock(now)
        query = m.Role.update(expires_at=now).where((m.Role.name == role) & (m.Role.holder == holder))
        return bool(self.write(query.execute, safe=True))

    def get_role(self, role: str) -> RoleRecord | None:
        """Who holds (or last held) ``role``, or None if nobody ever did."""
        m = self.m
        row = self.read(lambda: m.Role.get_or_none(m.Role.name == role))
        return None if row is None else RoleRecord.from_row(row)
