"""The ``durable`` command line (thin: parse, call the client, print).

Option declarations shared with ``durable-supervisor`` live in
:mod:`durable_workers.cli_options`; what the commands print, in
:mod:`durable_workers.cli_format`.
"""

from __future__ import annotations

import functools
import sys
import time
import uuid
from typing import Any, Callable

import click

from .codec import summarize_error
from .cli_show import queue_rows, show_workflow
from .cli_format import (
    delayed_note,
    sleeping_note,
    _emit_json,
    _preview,
    _print_end,
    event_printer,
    _print_steps,
    _step_json,
    _stale,
    _worker_json,
    _workflow_json,
)
from .cli_options import (
    AT_LEAST_ONE,
    POSITIVE_SECONDS,
    Duration,
    CONTEXT,
    OneLineCommand,
    OneLineGroup,
    concurrency_option,
    config_options,
    settings as _settings,
    host_id_option,
    input_options,
    log_format_option,
    log_level_option,
    read_input,
    remember_on_root,
    ttl_option,
    UtcTime,
)
from .client import Client
from .codec import parse_input
from .config import DEFAULT_STATUS_LIMIT, load_config
from .errors import CorruptRecordError, DurableError, StoreUnavailable
from .liveness import heartbeat_age
from .logs import setup_logging
from .progress import progress
from .queues import ON_DUPLICATE
from .records import Status, StepRecord, StepStatus
from .worker import WorkerOptions

EXIT_FAILED = 1  # a workflow ended FAILED or CANCELLED
EXIT_INTERRUPTED = 3  # `durable run` stopped an attempt that must resume in a fresh process

#: Errors shown as one line (exit 1) instead of a traceback.
ONE_LINE_ERRORS = (DurableError, StoreUnavailable, CorruptRecordError)
#: Commands that only read: they open the database read-only (never create or write it).
READ_COMMANDS = frozenset({"status", "steps", "workers", "check-replay"})


class DurableGroup(OneLineGroup):
    """A click group that turns every :class:`DurableError` into one line and exit 1."""

    command_class = OneLineCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ONE_LINE_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ONE_LINE_ERRORS as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _client(ctx: click.Context, *, create: bool = True) -> Client:
    """A client of the configured database; read commands open it read-only, on first use."""
    settings = _settings(ctx)
    config = load_config(db=settings.get("db"), app=settings.get("app"), pool_size=settings.get("pool_size"))
    readonly = ctx.command.name in READ_COMMANDS
    return Client(config=config, create=create and not readonly, readonly=readonly)


def _verbose_logging(ctx: click.Context) -> None:
    """``durable -v``: engine events on stderr, in the ``--log-format`` of the group or of the command."""
    found = _settings(ctx)
    if found.get("verbose"):
        setup_logging("INFO", load_config(log_format=found.get("log_format")).log_format)


def _input(input_text: str | None, input_file: str | None) -> dict[str, Any] | None:
    """The parsed ``--input``/``--input-file`` object, or ``None`` when neither was given."""
    text, source = read_input(input_text, input_file)
    return None if text is None else parse_input(text, source)


# --------------------------------------------------------------------------- group


@click.group(cls=DurableGroup, context_settings=CONTEXT)
@config_options
@click.option("-v", "--verbose", is_flag=True, callback=remember_on_root, help="Log engine events to stderr.")
@log_format_option(callback=remember_on_root, expose_value=False)
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Durable workflows on one SQLite file: run, submit, inspect, recover."""
    _verbose_logging(ctx)


@main.command()
@config_options
@click.argument("name")
@click.argument("workflow_id", required=False)
@input_options
@click.option("--crash-at", help="SIGKILL this process at STEP:before, STEP:returned or STEP:after (demo of recovery).")
@log_format_option(callback=remember_on_root, expose_value=False)
@click.pass_context
def run(
    ctx: click.Context, name: str, workflow_id: str | None, input_text: str | None, input_file: str | None,
    crash_at: str | None,
) -> None:  # fmt: skip
    """Run or resume workflow NAME (id WORKFLOW_ID) in this process.

    Completed steps are replayed from the database; the rest run. Run the same
    command again after a crash to resume: without --input an existing
    workflow resumes with its recorded input.
    """
    _verbose_logging(ctx)  # again: `durable -v run --log-format json`
    values = _input(input_text, input_file)
    client = _client(ctx)
    spec = client.registry.get(name)  # the app and name are checked before the database is opened
    if values is not None:
        spec.check_input(values)
    click.echo(f"running {name} {workflow_id or ''} (database {client.config.db})".replace("  ", " "))
    try:
        record, outcome = client.run_here(
            name, workflow_id, values, crash_at=crash_at, listener=event_printer(), stop_on_signals=True
        )
    finally:
        client.close()
    if outcome is None:
        click.echo(f"{record.id} had already ended; nothing to run (`durable steps {record.id}` shows its steps)")
    elif outcome.status in ("ABANDONED", "RELEASED", Status.WAITING.value):
        waiting = outcome.wake_at is not None
        reason = outcome.reason or ("stopped while it sleeps (WAITING)" if waiting else "stopped by a signal before its next step")
        click.echo(f"{record.id} interrupted: {reason}; run the same command again to resume")
        sys.exit(EXIT_INTERRUPTED)
    _print_end(record)
    if record.status != Status.COMPLETED.value:
        sys.exit(EXIT_FAILED)


@main.command()
@config_options
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def steps(ctx: click.Context, workflow_id: str, as_json: bool) -> None:
    """Print the step table of a workflow (key, status, attempts, duration, output)."""
    rows = _client(ctx, create=False).steps(workflow_id)
    if as_json:
        _emit_json([_step_json(r) for r in rows])
    else:
        _print_steps(rows)


def _submit_command(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--on-duplicate", type=click.Choice(ON_DUPLICATE), default="raise", show_default=True,
                        help="When --dedupe-key is held: fail (exit 1), or print the holder and exit 0.")(func)  # fmt: skip
    func = click.option("--dedupe-key", help="Refuse while an unfinished workflow of the queue has this key.")(func)
    func = click.option("--concurrency-key", help="The queue's per-key limit counts runs with this key.")(func)
    func = click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first in its queue.")(func)
    func = click.option("--queue", help="Queue whose limits apply (default: the workflow's own, else 'default').")(func)
    func = click.option("--wait", is_flag=True, help="Follow progress until the end; exit 1 if it fails.")(func)
    func = click.option("--crash-at", help="The first attempt's worker SIGKILLs itself at STEP:before|returned|after.")(func)
    func = click.option(
        "--timeout", type=POSITIVE_SECONDS, help="Deadline in seconds: past it the run ends CANCELLED (children too)."
    )(func)
    func = click.option("--delay", type=Duration(), help="Start no sooner than this from now (30s, 15m, 2h, 1d).")(func)
    func = click.option("--at", "at", type=UtcTime(), help="Start no sooner than this time (2026-12-24T09:00Z).")(func)
    func = input_options(func)
    func = click.option("--batch", "batch", metavar="FILE.jsonl",
                        help="Submit every line's workflow (name, id, input, options) in one transaction.")(func)  # fmt: skip
    func = click.argument("workflow_id", required=False)(func)
    func = click.argument("name", required=False)(func)
    return config_options(func)


def _do_submit(
    ctx: click.Context, name: str, workflow_id: str | None, input_text: str | None, input_file: str | None,
    crash_at: str | None, wait: bool, timeout: float | None, batch: str | None, delay: float | None,
    at: float | None, **placement: Any,
) -> None:  # fmt: skip
    if batch is not None:
        from .cli_gc import submit_batch

        alone = not any((name, workflow_id, input_text, input_file, crash_at, wait, timeout, delay, at)) and placement == {
            "queue": None, "priority": 0, "concurrency_key": None, "dedupe_key": None, "on_duplicate": "raise"}
        return submit_batch(ctx, batch, alone=alone)
    if name is None:
        raise click.UsageError("missing argument NAME (or give --batch FILE.jsonl)")
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    values = _input(input_text, input_file)
    client = _client(ctx)
    workflow_id = workflow_id or uuid.uuid4().hex  # known here, so a dedupe key's holder is told apart
    record = client.submit(
        name, workflow_id, values, crash_at=crash_at, timeout=timeout, delay=delay or 0.0, at=at, **placement
    )
    if record.id != workflow_id:
        click.echo(f"not submitted: dedupe key {record.dedupe_key!r} is held by {record.id} ({record.status})")
        return
    note = delayed_note(record, client.store.now())
    click.echo(f"submitted {record.name} {record.id} ({record.status}{', ' + note if note else ''})")
    if not wait:
        return

    def show(row: StepRecord) -> None:
        extra = f" attempt {row.attempts}" if row.attempts > 1 else ""
        detail = f" {summarize_error(row.error)}" if row.status == StepStatus.FAILED.value else ""
        click.echo(f"  {row.status:<9} {row.step_key}{extra}{detail}")
        bar.advance(1 if row.status == StepStatus.COMPLETED.value else 0, note=f"steps done; {row.step_key} {row.status}")

    with progress(f"{record.name} {record.id}") as bar:  # on stderr: a bar on a terminal, else plain lines
        final = client.wait(record.id, on_step=show)
        bar.update(note=f"steps done; {final.status}")
    _print_end(final)
    if final.status != Status.COMPLETED.value:
        sys.exit(EXIT_FAILED)


@main.command()
@_submit_command
@click.pass_context
def submit(ctx: click.Context, **kwargs: Any) -> None:
    """Submit workflow NAME with id WORKFLOW_ID (idempotent) for the worker fleet.

    Without --input an existing workflow is attached to with its recorded input;
    --batch FILE.jsonl submits every line's workflow instead, in one transaction.
    """
    _do_submit(ctx, **kwargs)


@click.command(cls=OneLineCommand, context_settings=CONTEXT)
@_submit_command
@click.pass_context
@_one_line_errors
def submit_main(ctx: click.Context, **kwargs: Any) -> None:
    """Submit workflow NAME with id WORKFLOW_ID (idempotent) for the worker fleet.

    Without --input an existing workflow is attached to with its recorded input;
    --batch FILE.jsonl submits every line's workflow instead, in one transaction.
    """
    _do_submit(ctx, **kwargs)


@main.command()
@config_options
@click.argument("workflow_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (inputs and results in full).")
@click.option("--limit", type=AT_LEAST_ONE, default=DEFAULT_STATUS_LIMIT, show_default=True, help="Workflows listed.")
@click.option("--full", is_flag=True, help="With ID: print the whole input and result, not a preview.")
@click.pass_context
def status(ctx: click.Context, workflow_id: str | None, as_json: bool, limit: int, full: bool) -> None:
    """Counts by status and recent workflows, or one workflow with its steps and lease."""
    client = _client(ctx, create=False)
    if workflow_id:
        show_workflow(client, workflow_id, as_json, full)
        return
    counts = client.counts()
    recent = client.list(limit=limit)
    unserved = client.unserved_names()
    queues = queue_rows(client)
    if as_json:
        _emit_json({"counts": counts, "queues": queues, "workflows": [_workflow_json(r) for r in recent],
                    "unserved_names": unserved})  # fmt: skip
        return
    click.echo("  ".join(f"{k}={v}" for k, v in counts.items()))
    for q in queues if len(queues) > 1 else []:  # the default queue alone: the counts say it all
        limits = " ".join(f"{k}={v}" for k, v in q["limits"].items()) or "unlimited"  # type: ignore[union-attr]
        click.echo(f"queue {q['queue']:<14} pending={q['pending']} running={q['running']} waiting={q['waiting']}  {limits}")
    for name in unserved:
        click.echo(f"waiting: no live worker registers {name!r}")
    for r in recent:
        summary = f"  {r.error.splitlines()[0]}" if r.error else f"  {sleeping_note(r, time.time()) or delayed_note(r, time.time())}".rstrip()
        click.echo(f"{r.id:<24} {r.name:<16} {r.status:<10} attempts={r.attempts}{_preview(summary, 60)}")


@main.command()
@config_options
@click.option("--all", "include_stopped", is_flag=True, help="Include stopped and dead workers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workers(ctx: click.Context, include_stopped: bool, as_json: bool) -> None:
    """The worker fleet: pid, state, current workflows, last heartbeat (STALE when overdue)."""
    views = _client(ctx, create=False).workers(include_stopped=include_stopped)
    if as_json:
        _emit_json([_worker_json(v) for v in views])
        return
    if not views:
        click.echo("no live workers (start them with `durable-supervisor --workers 4`)")
        return
    click.echo(f"{'HOST':<20}  {'PID':>7}  {'STATE':<9}  {'ALIVE':<5}  {'HEARTBEAT':>9}  {'':<5}  WORKFLOWS")
    for v in views:
        held = ",".join(lease.workflow_id for lease in v.leases) or "-"
        click.echo(
            f"{_preview(v.worker.host_id or v.worker.host, 20):<20}  {v.worker.pid:>7}  {v.worker.state:<9}  "
            f"{'yes' if v.alive else 'no':<5}  {heartbeat_age(v.worker, now=v.now):>7.1f}s  "
            f"{'STALE' if _stale(v) else '':<5}  {held}"
        )


@main.command()
@config_options
@click.argument("workflow_id")
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str) -> None:
    """Cancel an unfinished workflow and its unfinished children (their workers stop at their next write)."""
    record = _client(ctx, create=False).cancel(workflow_id)
    click.echo(f"{record.id} {record.status}")


@main.command()
@config_options
@click.argument("workflow_id")
@click.pass_context
def retry(ctx: click.Context, workflow_id: str) -> None:
    """Re-run a FAILED or CANCELLED workflow; completed steps are kept."""
    record = _client(ctx, create=False).retry(workflow_id)
    click.echo(f"{record.id} {record.status} (completed steps kept; failed steps run again)")


@main.command(hidden=False)
@config_options
@concurrency_option(WorkerOptions.concurrency, help="Workflows run at once, in threads.")
@ttl_option(WorkerOptions.ttl)
@click.option("--max-claims", type=AT_LEAST_ONE, default=WorkerOptions.max_claims, show_default=True,
              help="Fail a workflow claimed more often than this.")  # fmt: skip
@click.option("--supervisor-pid", type=AT_LEAST_ONE, help="Stop gracefully when this parent process is gone.")
@click.option("--worker-id", help="Id of the worker row (the supervisor chooses one).")
@host_id_option
@log_level_option("INFO")
@log_format_option()
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int, ttl: float, max_claims: int, supervisor_pid: int | None,
    worker_id: str | None, log_level: str, log_format: str | None,
) -> None:  # fmt: skip
    """Run one worker process (the supervisor starts these for you)."""
    from .worker import WorkerProcess, install_signal_handlers

    fields = {"worker_id": worker_id} if worker_id else None
    setup_logging(log_level, load_config(log_format=log_format).log_format, role="worker", fields=fields)
    client = _client(ctx)
    options = WorkerOptions(ttl=ttl, concurrency=concurrency, max_claims=max_claims, supervisor_pid=supervisor_pid)
    registry = client.registry  # a bad app fails here, before the database is opened or created
    process = WorkerProcess(client.store, registry, options, worker_id=worker_id)
    install_signal_handlers(process)
    process.run()


# Commands with modules of their own (they use the helpers above); the group only registers them.
from .chaos import chaos as _chaos  # noqa: E402
from .cli_dashboard import dashboard as _dashboard  # noqa: E402
from .cli_gc import gc as _gc  # noqa: E402
from .cli_messages import events as _events, send as _send  # noqa: E402
from .cli_migrate import migrate as _migrate  # noqa: E402
from .cli_replay import check_replay as _check_replay, fork as _fork  # noqa: E402
from .cli_schedule import schedule as _schedule  # noqa: E402
from .cli_verify import verify as _verify  # noqa: E402

for _command in (_chaos, _migrate, _fork, _check_replay, _send, _events, _gc, _schedule, _dashboard, _verify):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
