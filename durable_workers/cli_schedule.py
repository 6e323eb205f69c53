"""``durable schedule add|list|pause|resume|remove|trigger`` (thin: parse, call ``client.schedules``, print).

Registered on the ``durable`` group by :mod:`durable_workers.cli`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from .cli import _client, _input, config_options
from .cli_format import _emit_json, until
from .cli_options import OneLineGroup, input_options
from .records import ScheduleRecord
from .schedule_admin import SchedulerState
from .schedules import CATCHUP_MODES, slot_iso


def _local(when: float, zone: str) -> str:
    return datetime.fromtimestamp(when, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _schedule_json(schedule: ScheduleRecord) -> dict[str, Any]:
    return {
        "name": schedule.name, "workflow": schedule.workflow, "cron": schedule.cron, "timezone": schedule.timezone,
        "catchup": schedule.catchup, "input": schedule.input, "origin": schedule.origin, "paused": schedule.paused,
        "next_at": schedule.next_at, "next": slot_iso(schedule.next_at),
        "last_slot": None if schedule.last_slot is None else slot_iso(schedule.last_slot),
    }  # fmt: skip


def _describe(schedule: ScheduleRecord, now: float) -> str:
    state = "paused" if schedule.paused else f"next {until(schedule.next_at, now)}"
    local = "" if schedule.paused or schedule.timezone == "UTC" else f" = {_local(schedule.next_at, schedule.timezone)}"
    last = f", last slot {slot_iso(schedule.last_slot)}" if schedule.last_slot is not None else ""
    return (f"{schedule.name}: {schedule.workflow} at '{schedule.cron}' {schedule.timezone}, catchup={schedule.catchup}, "
            f"{schedule.origin}; {state}{local}{last}")  # fmt: skip


def _lease_line(state: SchedulerState) -> str:
    if state.held and state.role is not None:
        return f"scheduler lease: {state.role.holder} (renewed {max(0.0, state.now - state.role.renewed_at):.0f}s ago)"
    return "scheduler lease: not held; schedules fire once a durable-supervisor runs on this database"


@click.group(cls=OneLineGroup)
@config_options
def schedule() -> None:
    """Cron schedules: each slot submits one workflow NAME@<slot ISO UTC>, fired by one supervisor at a time."""


@schedule.command("add")
@config_options
@click.argument("workflow")
@click.argument("cron")
@click.option("--name", help="Schedule name (its workflows' id prefix) [default: the workflow's name].")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone the cron fields are read in.")
@click.option("--catchup", type=click.Choice(CATCHUP_MODES), default="latest", show_default=True,
              help="Slots missed while no supervisor ran: fire the latest, all, or none.")
@input_options
@click.option("--replace", is_flag=True, help="Rewrite the schedule if the name exists.")
@click.pass_context  # fmt: skip
def add(ctx: click.Context, workflow: str, cron: str, name: str | None, timezone: str, catchup: str,
        input_text: str | None, input_file: str | None, replace: bool) -> None:  # fmt: skip
    """Submit WORKFLOW at every slot of CRON ('0 9 * * MON-FRI'; a sixth field gives seconds)."""
    client = _client(ctx)
    added = client.schedules.add(workflow, cron, name=name, timezone=timezone, catchup=catchup,
                                 input=_input(input_text, input_file), replace=replace)  # fmt: skip
    click.echo(f"schedule {_describe(added, client.store.now())}")


@schedule.command("list")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List schedules with their next fire times, and who holds the scheduler lease."""
    client = _client(ctx, create=False)
    found, state = client.schedules.list(), client.schedules.scheduler()
    if as_json:
        holder = state.role.holder if state.held and state.role is not None else None
        _emit_json({"schedules": [_schedule_json(s) for s in found], "scheduler": holder})
        return
    for item in found:
        click.echo(_describe(item, state.now))
    if not found:
        click.echo("no schedules (declare @workflow(schedule=...) or run: durable schedule add WORKFLOW CRON)")
    click.echo(_lease_line(state))


def _switch(verb: str, help: str) -> Any:
    """``durable schedule pause|resume NAME``: one command per verb of ``client.schedules``."""

    @schedule.command(verb, help=help)
    @config_options
    @click.argument("name")
    @click.pass_context
    def command(ctx: click.Context, name: str) -> None:
        client = _client(ctx, create=False)
        changed = getattr(client.schedules, verb)(name)
        click.echo(f"{verb}d {_describe(changed, client.store.now())}")

    return command


pause = _switch("pause", "Stop firing NAME (its slots are skipped until resume).")
resume = _switch("resume", "Fire NAME again from its next slot.")


@schedule.command()
@config_options
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Delete schedule NAME (the workflows it submitted stay)."""
    _client(ctx, create=False).schedules.remove(name)
    click.echo(f"removed schedule {name}")


@schedule.command()
@config_options
@click.argument("name")
@click.pass_context
def trigger(ctx: click.Context, name: str) -> None:
    """Submit one run of schedule NAME now (id NAME@<now ISO UTC>)."""
    record, created = _client(ctx, create=False).schedules.trigger(name)
    click.echo(f"{'submitted' if created else 'already submitted'} {record.id} ({record.status})")
