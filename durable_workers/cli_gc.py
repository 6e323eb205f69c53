"""``durable gc`` and ``durable submit --batch`` (thin: parse, call the client or store, print).

Registered on the ``durable`` group (and ``durable-submit``) by
:mod:`durable_workers.cli`, whose shared option and client helpers they use.
"""

from __future__ import annotations

import json
import sys

import click

from .backends import Collected, Store
from .batch import parse_batch
from .cli import _client, config_options
from .config import GC_BATCH, GC_STATUSES, parse_duration
from .errors import ConfigError, InputError
from .progress import progress
from .records import TERMINAL
from .retention import GcReport, collect_garbage


def submit_batch(ctx: click.Context, path: str, *, alone: bool) -> None:
    """``--batch FILE.jsonl`` (``-``: stdin): every line's workflow submitted in one transaction.

    ``alone``: no NAME, ID or other submit option was given (they would be ignored: a usage error).
    """
    if not alone:
        raise click.UsageError("--batch takes the workflows from the file: give no NAME, ID or other option")
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read --batch {path}: {exc}") from None
    submissions, labels = parse_batch(text)
    records = _client(ctx).submit_many(submissions, labels=labels)
    distinct = len({record.id for record in records})
    click.echo(f"submitted {distinct} workflows from {path}" + (f" ({len(records)} lines)" if distinct != len(records) else ""))


def _statuses(text: str) -> list[str]:
    chosen = [part.strip().upper() for part in text.split(",") if part.strip()]
    wrong = [s for s in chosen if s not in TERMINAL]
    if not chosen or wrong:
        raise ConfigError(f"--status takes terminal statuses ({','.join(TERMINAL)}), got {text!r}")
    return chosen


@click.command()
@config_options
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Delete workflows that ended longer ago than this: 30d, 12h, 15m, 90s.")
@click.option("--status", "status_text", default=",".join(GC_STATUSES), show_default=True,
              help="Comma-separated terminal statuses to delete.")
@click.option("--batch-size", type=click.IntRange(min=1), default=GC_BATCH, show_default=True,
              help="Workflows deleted per transaction (the write lock is released between two).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON (and no progress).")
@click.pass_context  # fmt: skip
def gc(ctx: click.Context, older_than: str, status_text: str, batch_size: int, dry_run: bool, as_json: bool) -> None:
    """Delete terminal workflows older than --older-than with their steps, leases, messages and events.

    Never an unfinished workflow, a child whose parent is unfinished, or a
    parent with an unfinished child. Progress (batches deleted of the batches
    counted first) goes to stderr.
    """
    seconds = parse_duration(older_than, "--older-than")
    statuses = _statuses(status_text)
    store = _client(ctx, create=False).store
    if dry_run:
        report = collect_garbage(store, seconds, statuses, batch_size=batch_size, dry_run=True)
    else:  # counted first only for the progress bar's total (not with --json, which shows none)
        counted = None if as_json else collect_garbage(store, seconds, statuses, batch_size=batch_size, dry_run=True)
        report = _delete(store, seconds, statuses, batch_size, counted, shown=not as_json)
    done = report.collected
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "workflows": done.workflows, "steps": done.steps,
                               "messages": done.messages, "events": done.events, "leases": done.leases,
                               "batches": len(report.batches)}))  # fmt: skip
    elif dry_run:
        click.echo(f"would delete {done.workflows} workflows ({', '.join(statuses)}, ended over {older_than} ago)")
    else:
        click.echo(
            f"deleted {done.workflows} workflows, {done.steps} steps, {done.messages} messages, {done.events} events, "
            f"{done.leases} leases in {len(report.batches)} batches"
        )


def _delete(store: Store, seconds: float, statuses: list[str], batch_size: int, counted: GcReport | None, *,
            shown: bool) -> GcReport:  # fmt: skip
    """Delete batch by batch, with a progress bar of the batches (of those ``counted`` by a dry run, if given)."""
    deleted = 0
    with progress("gc", total=None if counted is None else len(counted.batches), enabled=shown) as bar:

        def one_batch(batch: Collected) -> None:
            nonlocal deleted
            deleted += batch.workflows
            bar.update(total=max(bar.total or 0, bar.completed + 1))  # more than counted: ended meanwhile
            bar.advance(1, note=f"{deleted} workflows deleted")

        return collect_garbage(store, seconds, statuses, batch_size=batch_size, on_batch=one_batch)
