"""``durable migrate``: create or migrate the schema of the configured database, or report on it.

Thin: the migration itself is ``Store.migrate`` (``backends/migrations``), run in
one transaction under the dialect's schema lock, so it may run while workers
and supervisors are up, and any number of ``durable migrate`` at once.
"""

from __future__ import annotations

import click

from .backends import SCHEMA_VERSION, Store, open_store
from .cli_options import config_options, settings
from .config import load_config

#: Exit status of ``--check`` when migrations are pending.
EXIT_PENDING = 1


def _open(ctx: click.Context, *, create: bool, readonly: bool) -> Store:
    """The configured database, opened without migrating it (a missing SQLite file is created only if ``create``)."""
    chosen = settings(ctx)
    config = load_config(db=chosen.get("db"), app=chosen.get("app"), pool_size=chosen.get("pool_size"))
    return open_store(
        config.db, synchronous=config.synchronous, lock_patience=config.lock_patience, pool_size=config.pool_size,
        create=create, readonly=readonly, auto_migrate=False,
    )  # fmt: skip


@click.command()
@config_options
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when migrations are pending.")
@click.option("--dry-run", is_flag=True, help="Print the statements that would run; change nothing.")
@click.pass_context
def migrate(ctx: click.Context, check: bool, dry_run: bool) -> None:
    """Bring the database schema up to this version, under the schema lock.

    Prints 'schema vN -> vM' or 'schema is current (vN)'. A database of a
    newer version is an error: upgrade durable_workers.
    """
    if check and dry_run:
        raise click.UsageError("give --check or --dry-run, not both")
    store = _open(ctx, create=not (check or dry_run), readonly=check)
    try:
        if check:
            version = store.schema_version()
            if version < SCHEMA_VERSION:
                click.echo(f"migrations pending: schema v{version} -> v{SCHEMA_VERSION}; run `durable migrate`")
                ctx.exit(EXIT_PENDING)
            click.echo(f"schema is current (v{version})")
            return
        done = store.migrate(dry_run=dry_run)
    finally:
        store.close()
    if dry_run and done.changed:
        click.echo(f"would migrate: {done.summary()}")
        for statement in done.statements:
            click.echo(" ".join(statement.split()) + ";")
        return
    click.echo(done.summary())
