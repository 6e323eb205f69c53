"""The ``durable chaos`` command, and the helper processes ``python -m durable_workers.chaos lock|submit``."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from ..backends import open_store
from ..cli_options import (
    AT_LEAST_ONE,
    AT_LEAST_ZERO,
    CONTEXT,
    POSITIVE_SECONDS,
    SECONDS,
    OneLineCommand,
    concurrency_option,
    log_format_option,
    log_level_option,
    ttl_option,
    version_option,
    workers_option,
)
from ..client import Client
from ..errors import DurableError
from ..logs import LOG_FORMAT_ENV
from ..progress import Progress, progress
from ..records import TERMINAL
from .experiment import Experiment
from .options import APP, CHECK_NAMES, UNKNOWN_NAME, DEFAULT_FAULTS, FAULT_KINDS, ChaosOptions, unknown_faults
from .table import render


def _parse_faults(ctx: click.Context | None, param: click.Parameter | None, text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    problem = unknown_faults(kinds)
    if problem:
        raise click.BadParameter(problem)
    return kinds


@click.command("chaos", cls=OneLineCommand, context_settings=CONTEXT)
@version_option
@workers_option(ChaosOptions.workers, help="Worker processes of the supervisor (of each host).")
@click.option("--hosts", type=AT_LEAST_ONE, default=ChaosOptions.hosts, show_default=True,
              help="Supervisors, each with its own --host-id, on the one database (the host fault needs 2).")  # fmt: skip
@click.option("--host-down-seconds", type=POSITIVE_SECONDS, default=None,
              help="How long a host killed by the host fault stays down  [default: 3 x ttl].")  # fmt: skip
@click.option("--workflows", type=AT_LEAST_ONE, default=ChaosOptions.workflows, show_default=True,
              help="Check workflows submitted.")  # fmt: skip
@click.option("--fault-interval", type=POSITIVE_SECONDS, default=ChaosOptions.fault_interval, show_default=True,
              help="Mean seconds between faults (±50 %).")  # fmt: skip
@click.option(
    "--faults", default=",".join(DEFAULT_FAULTS), show_default=True,
    help=f"Comma list of {','.join(FAULT_KINDS)} (or none).", callback=_parse_faults,
)  # fmt: skip
@ttl_option(ChaosOptions.ttl, help="Lease TTL of the workers (SIGSTOP lasts ttl + 1.5 s).")
@click.option("--timeout", "--duration", "timeout", type=POSITIVE_SECONDS, default=ChaosOptions.timeout, show_default=True,
              help="Give up after this many seconds; unfinished workflows count as stuck.")  # fmt: skip
@click.option("--db", help="Database file to create (must not exist), or the URL of an empty PostgreSQL database "
                           "[default: a fresh temp file].")  # fmt: skip
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the verdict as JSON to PATH (or stdout with no PATH).")  # fmt: skip
@click.option("--seed", type=int, help="Random seed of the fault schedule.")
@click.option("--workflow", type=click.Choice(CHECK_NAMES), default="chaos_check", show_default=True,
              help="Check workflow: chaos_check (seq+fan-out+loop+conditional) or chaos_short.")  # fmt: skip
@click.option("--fan", type=AT_LEAST_ONE, default=ChaosOptions.fan, show_default=True,
              help="chaos_check: parallel branches.")  # fmt: skip
@click.option("--loop", type=AT_LEAST_ZERO, default=ChaosOptions.loop, show_default=True,
              help="chaos_check: loop iterations.")  # fmt: skip
@click.option("--work-ms", type=SECONDS, default=ChaosOptions.work_ms, show_default=True,
              help="chaos_check: work per step in ms (±50 %).")  # fmt: skip
@click.option("--lock-seconds", type=POSITIVE_SECONDS, default=ChaosOptions.lock_seconds, show_default=True,
              help="How long the lock fault holds the write lock.")  # fmt: skip
@click.option("--lock-patience", type=POSITIVE_SECONDS, default=ChaosOptions.lock_patience, show_default=True,
              help="With the outage fault: the fleet's lock patience in s (DURABLE_LOCK_PATIENCE).")  # fmt: skip
@click.option("--outage-seconds", type=POSITIVE_SECONDS, default=ChaosOptions.outage_seconds, show_default=True,
              help="How long the outage fault holds the write lock (more than --lock-patience).")  # fmt: skip
@click.option("--diskfull-seconds", type=POSITIVE_SECONDS, default=ChaosOptions.diskfull_seconds, show_default=True,
              help="How long the diskfull fault keeps the database's disk full.")  # fmt: skip
@click.option("--diskfull-mb", type=AT_LEAST_ONE, default=ChaosOptions.diskfull_mb, show_default=True,
              help="With diskfull: size of the tmpfs the database lives on (needs root).")  # fmt: skip
@click.option("--foreign-share", type=click.FloatRange(0.0, 1.0), default=ChaosOptions.foreign_share, show_default=True,
              help="With foreign: share of check workflows whose hazard step raises once.")  # fmt: skip
@click.option("--bad-inputs", type=AT_LEAST_ZERO, default=ChaosOptions.bad_inputs, show_default=True,
              help="Bad-input workflows of each kind mixed in.")  # fmt: skip
@concurrency_option(ChaosOptions.concurrency)
@log_level_option(ChaosOptions.log_level, help="Log level of the fleet (log beside the db).")
@log_format_option()
def chaos(json_out: str | None, faults: tuple[str, ...], log_format: str | None, **values: Any) -> None:
    """Run a self-checking fault-injection experiment on a fresh database.

    Starts a supervisor with --workers (one per host with --hosts), submits --workflows check workflows
    (and a few bad-input ones), sends faults while they run, then prints a
    verdict table. Exit 0 only if every invariant held.
    """
    if values["db"] is None:
        values["db"] = (click.get_current_context().find_root().obj or {}).get("db")
    if log_format is not None:
        os.environ[LOG_FORMAT_ENV] = log_format  # the fleet's log (beside the db) in this format
    options = ChaosOptions(faults=faults, **values)
    to_stdout = json_out == "-"
    echo = (lambda text: click.echo(text, err=True)) if to_stdout else click.echo
    try:
        with progress("chaos workflows ended", enabled=not to_stdout) as bar:
            experiment = Experiment(options, progress=bar.log if not to_stdout else lambda t: click.echo(t, err=True))
            stop = threading.Event()
            watcher = threading.Thread(target=_watch, args=(experiment, bar, stop), name="chaos-progress", daemon=True)
            watcher.start()
            try:
                verdict = experiment.run()
            finally:
                stop.set()
                watcher.join()
    except DurableError as exc:
        raise click.ClickException(str(exc)) from None
    echo(render(verdict))
    if json_out:
        text = json.dumps(verdict, indent=2, default=str)
        if to_stdout:
            click.echo(text)
        else:
            Path(json_out).write_text(text + "\n", encoding="utf-8")
    sys.exit(0 if verdict["ok"] else 1)


def _watch(experiment: Experiment, bar: Progress, stop: threading.Event) -> None:
    """Every second, and once after ``stop``: workflows ended of those submitted, on a connection of that read's own.

    Not with the diskfull fault: its tmpfs is unmounted at the end, and must
    not be held open by this read.
    """
    if "diskfull" in experiment.options.faults:
        return
    store = None
    try:
        while True:
            stopping = stop.wait(1.0)  # and once more at the end: the final count
            try:
                store = store or open_store(experiment.db, create=False, readonly=True)
                counts = store.status_counts_by_name()
            except Exception:  # noqa: BLE001 - a fault (or no database yet) makes a read fail: try again next second
                if stopping:
                    return
                continue
            _show(bar, counts)
            if stopping:
                return
    finally:
        if store is not None:
            store.close()


def _show(bar: Progress, counts: dict[str, dict[str, int]]) -> None:
    """Workflows ended of those submitted, from ``status_counts_by_name``."""
    counts.pop(UNKNOWN_NAME, None)  # no worker runs these: they never end (as the experiment counts)
    by_status = [(status, n) for statuses in counts.values() for status, n in statuses.items()]
    ended = sum(n for status, n in by_status if status in TERMINAL)
    bar.update(completed=ended, total=sum(n for _, n in by_status) or None)


@click.group()
def helpers() -> None:
    """Processes of the chaos experiment (``python -m durable_workers.chaos ...``)."""


helpers.add_command(chaos, "run")


@helpers.command("lock")
@click.option("--db", required=True)
@click.option("--seconds", type=POSITIVE_SECONDS, default=3.0, show_default=True)
def lock_command(db: str, seconds: float) -> None:
    """Hold the write lock of DB for SECONDS (prints ``locked T`` and ``released T``)."""
    store = open_store(db, create=False)
    store.hold_write_lock(seconds, on_locked=lambda at: click.echo(f"locked {at!r}"))
    click.echo(f"released {time.time()!r}")
    store.close()


@helpers.command("submit")
@click.option("--db", required=True)
@click.option("--name", default="chaos_short", show_default=True)
@click.option("--prefix", default="sub-", show_default=True)
@click.option("--total", type=AT_LEAST_ZERO, default=1000, show_default=True, help="Ids PREFIX0..PREFIX(total-1) in all.")
@click.option("--stride", type=AT_LEAST_ONE, default=4, show_default=True, help="Submitters in all.")
@click.option("--offset", type=AT_LEAST_ZERO, default=0, show_default=True, help="This submitter's index.")
@click.option("--overlap", type=AT_LEAST_ZERO, default=0, show_default=True,
              help="Also resubmit the next submitter's ids below this.")  # fmt: skip
@click.option("--seed", type=int, default=0)
def submit_command(db: str, name: str, prefix: str, total: int, stride: int, offset: int, overlap: int, seed: int) -> None:
    """Submit this submitter's share of ids; print JSON ``{"created": [...], "existing": [...]}``."""
    client = Client(db=db, app=APP)
    mine = [i for i in range(total) if i % stride == offset]
    theirs = [i for i in range(min(overlap, total)) if i % stride == (offset + 1) % stride]
    order = mine + theirs
    random.Random(seed + offset).shuffle(order)
    created: list[str] = []
    existing: list[str] = []
    for i in order:
        record, new = client.store.submit(f"{prefix}{i}", name, "{}")
        (created if new else existing).append(record.id)
    click.echo(json.dumps({"created": created, "existing": existing}))
    client.close()
