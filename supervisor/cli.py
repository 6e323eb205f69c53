"""``durable-supervisor``: start and watch the worker fleet."""

from __future__ import annotations

import logging
import os
import sys

import click

from durable_workers.config import load_config
from durable_workers.errors import DurableError, StoreUnavailable
from durable_workers.registry import load_app

from .supervisor import Supervisor, SupervisorOptions


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workers", default=4, show_default=True, help="Worker processes to keep alive.")
@click.option("--concurrency", default=1, show_default=True, help="Workflows each worker runs at once.")
@click.option("--db", help="SQLite database file [env DURABLE_DB; default ./durable.db].")
@click.option("--app", help="Module or .py file defining the workflows [env DURABLE_APP; default examples].")
@click.option("--ttl", default=15.0, show_default=True, help="Lease lifetime in seconds.")
@click.option("--shutdown-timeout", default=30.0, show_default=True, help="Seconds to drain before SIGKILL.")
@click.option("--log-level", default="INFO", show_default=True)
def main(
    workers: int,
    concurrency: int,
    db: str | None,
    app: str | None,
    ttl: float,
    shutdown_timeout: float,
    log_level: str,
) -> None:
    """Keep WORKERS worker processes running workflows from one database.

    Ctrl+C or SIGTERM drains (current steps finish, work is released); a
    second one kills the workers at once.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s supervisor[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(db=db, app=app)
        load_app(config.app)  # fail here, once, rather than in every worker
        supervisor = Supervisor(
            config,
            SupervisorOptions(
                workers=workers,
                concurrency=concurrency,
                ttl=ttl,
                shutdown_timeout=shutdown_timeout,
                log_level=log_level.upper(),
            ),
        )
    except (DurableError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    supervisor.install_signal_handlers()
    sys.exit(supervisor.run())
