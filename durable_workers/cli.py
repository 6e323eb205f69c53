"""The ``durable`` command line (thin: parse, call the client, print)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import Any, Callable

import click

from .client import Client, WorkerView, parse_input
from .config import load_config
from .context import StepEvent, error_summary
from .errors import CorruptRecordError, DurableError, StoreUnavailable
from .liveness import heartbeat_age, heartbeat_stale
from .models import Status, StepStatus
from .store import StepRecord, WorkflowRecord

EXIT_FAILED = 1  # a workflow ended FAILED or CANCELLED

#: Errors shown as one line (exit 1) instead of a traceback.
ONE_LINE_ERRORS = (DurableError, StoreUnavailable, CorruptRecordError)


class DurableGroup(click.Group):
    """A click group that turns every :class:`DurableError` into one line and exit 1."""

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


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--app``, accepted on the group and on every command."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            # On the root, where _settings() reads it: a subcommand's own ctx.obj is a new dict.
            ctx.find_root().ensure_object(dict)[param.name] = value
        return value

    command = click.option(
        "--app", expose_value=False, callback=remember, is_eager=True,
        help="Module or .py file defining the workflows [env DURABLE_APP; default examples].",
    )(command)
    command = click.option(
        "--db", expose_value=False, callback=remember, is_eager=True,
        help="SQLite database file [env DURABLE_DB; default ./durable.db].",
    )(command)
    return command


def _settings(ctx: click.Context) -> dict[str, Any]:
    return ctx.find_root().ensure_object(dict)


def _client(ctx: click.Context, *, create: bool = True) -> Client:
    settings = _settings(ctx)
    config = load_config(db=settings.get("db"), app=settings.get("app"))
    return Client(config=config, create=create)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _preview(text: str | None, width: int = 48) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(row: StepRecord) -> str:
    if row.started_at is None or row.finished_at is None:
        return "-"
    return f"{(row.finished_at - row.started_at) * 1000:.0f} ms"


def _step_json(row: StepRecord) -> dict[str, Any]:
    return {
        "step_key": row.step_key,
        "name": row.name,
        "scope": row.scope,
        "position": row.position,
        "status": row.status,
        "attempts": row.attempts,
        "output": json.loads(row.output) if row.output is not None else None,
        "error": error_summary(row.error) or None,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "worker_id": row.worker_id,
    }


def _workflow_json(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "input": record.input,
        "result": record.result,
        "error": record.error.splitlines()[0] if record.error else None,
        "attempts": record.attempts,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _print_steps(rows: list[StepRecord]) -> None:
    if not rows:
        click.echo("(no steps recorded yet)")
        return
    width = max(len("KEY"), *(len(r.step_key) for r in rows))
    click.echo(f"{'KEY':<{width}}  {'STATUS':<9}  {'ATTEMPTS':>8}  {'DURATION':>9}  OUTPUT")
    for r in rows:
        shown = r.output if r.status == StepStatus.COMPLETED.value else error_summary(r.error)
        click.echo(
            f"{r.step_key:<{width}}  {r.status:<9}  {r.attempts:>8}  {_duration(r):>9}  {_preview(shown)}"
        )


def _print_event(event: StepEvent) -> None:
    if event.kind == "replayed":
        click.echo(f"  replayed  {event.step_key}  (recorded result, not run again)")
    elif event.kind == "completed":
        click.echo(f"  ran       {event.step_key}  attempt {event.attempt}, {event.duration * 1000:.0f} ms")
    elif event.kind == "retrying":
        click.echo(f"  retrying  {event.step_key}  attempt {event.attempt} failed: {event.error}")
    elif event.kind == "failed":
        click.echo(f"  failed    {event.step_key}  {event.error}")
    elif event.kind == "replayed-failure":
        click.echo(f"  replayed  {event.step_key}  (recorded failure: {event.error})")


def _print_end(record: WorkflowRecord) -> None:
    if record.status == Status.COMPLETED.value:
        click.echo(f"{record.id} COMPLETED: {json.dumps(record.result)}")
    else:
        summary = (record.error or "").splitlines()[0] if record.error else ""
        click.echo(f"{record.id} {record.status}: {summary}")


# --------------------------------------------------------------------------- group


@click.group(cls=DurableGroup, context_settings={"help_option_names": ["-h", "--help"]})
@config_options
@click.option("-v", "--verbose", is_flag=True, help="Log engine events to stderr.")
def main(verbose: bool) -> None:
    """Durable workflows on one SQLite file: run, submit, inspect, recover."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


@main.command()
@config_options
@click.argument("name")
@click.argument("workflow_id", required=False)
@click.option("--input", "input_text", help="JSON object passed as keyword arguments.")
@click.option("--crash-at", help="SIGKILL this process at STEP:before or STEP:after (demo of recovery).")
@click.pass_context
def run(ctx: click.Context, name: str, workflow_id: str | None, input_text: str | None, crash_at: str | None) -> None:
    """Run or resume workflow NAME (id WORKFLOW_ID) in this process.

    Completed steps are replayed from the database; the rest run. Run the same
    command again after a crash to resume.
    """
    values = parse_input(input_text)
    client = _client(ctx)
    client.registry.get(name).check_input(values)
    click.echo(f"running {name} {workflow_id or ''} (database {client.config.db})".replace("  ", " "))
    record, outcome = client.run_here(name, workflow_id, values, crash_at=crash_at, listener=_print_event)
    if outcome is None:
        click.echo(f"{record.id} had already ended; nothing to run (`durable steps {record.id}` shows its steps)")
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
    func = click.option("--wait", is_flag=True, help="Follow progress until the end; exit 1 if it fails.")(func)
    func = click.option("--crash-at", help="The first attempt's worker SIGKILLs itself at STEP:before|after.")(func)
    func = click.option("--input", "input_text", help="JSON object passed as keyword arguments.")(func)
    func = click.argument("workflow_id", required=False)(func)
    func = click.argument("name")(func)
    return config_options(func)


def _do_submit(
    ctx: click.Context, name: str, workflow_id: str | None, input_text: str | None, crash_at: str | None, wait: bool
) -> None:
    values = parse_input(input_text)
    client = _client(ctx)
    record = client.submit(name, workflow_id, values, crash_at=crash_at)
    click.echo(f"submitted {record.name} {record.id} ({record.status})")
    if not wait:
        return

    def show(row: StepRecord) -> None:
        extra = f" attempt {row.attempts}" if row.attempts > 1 else ""
        detail = f" {error_summary(row.error)}" if row.status == StepStatus.FAILED.value else ""
        click.echo(f"  {row.status:<9} {row.step_key}{extra}{detail}")

    final = client.wait(record.id, on_step=show)
    _print_end(final)
    if final.status != Status.COMPLETED.value:
        sys.exit(EXIT_FAILED)


@main.command()
@_submit_command
@click.pass_context
def submit(ctx: click.Context, **kwargs: Any) -> None:
    """Submit workflow NAME with id WORKFLOW_ID (idempotent) for the worker fleet."""
    _do_submit(ctx, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_submit_command
@click.pass_context
@_one_line_errors
def submit_main(ctx: click.Context, **kwargs: Any) -> None:
    """Submit workflow NAME with id WORKFLOW_ID (idempotent) for the worker fleet."""
    _do_submit(ctx, **kwargs)


@main.command()
@config_options
@click.argument("workflow_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=20, show_default=True, help="Workflows listed.")
@click.pass_context
def status(ctx: click.Context, workflow_id: str | None, as_json: bool, limit: int) -> None:
    """Counts by status and recent workflows, or one workflow with its steps and lease."""
    client = _client(ctx, create=False)
    if workflow_id:
        record = client.get(workflow_id)
        rows = client.steps(workflow_id)
        lease = client.lease(workflow_id)
        if as_json:
            data = _workflow_json(record) | {
                "steps": [_step_json(r) for r in rows],
                "lease": None if lease is None else lease.__dict__,
                "error_detail": record.error,
            }
            _emit_json(data)
            return
        click.echo(f"{record.id}  {record.name}  {record.status}  attempts={record.attempts}")
        click.echo(f"input: {json.dumps(record.input)}")
        if lease is not None and lease.worker_id:
            left = (lease.expires_at or 0) - time.time()
            click.echo(f"lease: worker {lease.worker_id} token {lease.token} (expires in {left:.1f}s)")
        if record.status == Status.PENDING.value and record.name in client.unserved_names():
            click.echo(f"waiting: no live worker registers {record.name!r}")
        if record.status == Status.COMPLETED.value:
            click.echo(f"result: {json.dumps(record.result)}")
        elif record.error:
            click.echo(f"error: {record.error}")
        _print_steps(rows)
        return
    counts = client.counts()
    recent = client.list(limit=limit)
    unserved = client.unserved_names()
    if as_json:
        _emit_json({"counts": counts, "workflows": [_workflow_json(r) for r in recent], "unserved_names": unserved})
        return
    click.echo("  ".join(f"{k}={v}" for k, v in counts.items()))
    for name in unserved:
        click.echo(f"waiting: no live worker registers {name!r}")
    for r in recent:
        summary = f"  {r.error.splitlines()[0]}" if r.error else ""
        click.echo(f"{r.id:<24} {r.name:<16} {r.status:<10} attempts={r.attempts}{_preview(summary, 60)}")


def _stale(view: WorkerView) -> bool:
    """The worker looks alive but its heartbeat is overdue (frozen, or its store writes fail)."""
    from .worker import WorkerOptions

    return view.alive and heartbeat_stale(view.worker, default_ttl=WorkerOptions.ttl)


def _worker_json(view: WorkerView) -> dict[str, Any]:
    w = view.worker
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "state": w.state,
        "alive": view.alive,
        "stale": _stale(view),
        "names": list(w.names),
        "workflows": [lease.workflow_id for lease in view.leases],
        "heartbeat_at": w.heartbeat_at,
    }


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
    click.echo(f"{'PID':>7}  {'STATE':<9}  {'ALIVE':<5}  {'HEARTBEAT':>9}  {'':<5}  WORKFLOWS")
    for v in views:
        held = ",".join(lease.workflow_id for lease in v.leases) or "-"
        click.echo(
            f"{v.worker.pid:>7}  {v.worker.state:<9}  {'yes' if v.alive else 'no':<5}  "
            f"{heartbeat_age(v.worker):>7.1f}s  {'STALE' if _stale(v) else '':<5}  {held}"
        )


@main.command()
@config_options
@click.argument("workflow_id")
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str) -> None:
    """Cancel a PENDING or RUNNING workflow (its worker stops at the next step)."""
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
@click.option("--concurrency", default=1, show_default=True, help="Workflows run at once, in threads.")
@click.option("--ttl", default=15.0, show_default=True, help="Lease lifetime in seconds (heartbeat every ttl/3).")
@click.option("--max-claims", default=20, show_default=True, help="Fail a workflow claimed more often than this.")
@click.option("--supervisor-pid", type=int, help="Stop gracefully when this parent process is gone.")
@click.option("--worker-id", help="Id of the worker row (the supervisor chooses one).")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int,
    ttl: float,
    max_claims: int,
    supervisor_pid: int | None,
    worker_id: str | None,
    log_level: str,
) -> None:
    """Run one worker process (the supervisor starts these for you)."""
    from .worker import WorkerOptions, WorkerProcess, install_signal_handlers

    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    client = _client(ctx)
    options = WorkerOptions(ttl=ttl, concurrency=concurrency, max_claims=max_claims, supervisor_pid=supervisor_pid)
    process = WorkerProcess(client.store, client.registry, options, worker_id=worker_id)
    install_signal_handlers(process)
    process.run()


# The chaos experiment lives in the chaos package; the CLI only registers it.
from .chaos import chaos as _chaos  # noqa: E402

main.add_command(_chaos)


if __name__ == "__main__":  # pragma: no cover
    main()
