"""``durable-supervisor``: start and watch the worker fleet."""

from __future__ import annotations

import logging
import os
import sys

import click

from durable_workers.cli_options import (
    CONTEXT,
    OneLineCommand,
    concurrency_option,
    host_id_option,
    log_level_option,
    metrics_options,
    pool_size_option,
    shutdown_timeout_option,
    ttl_option,
    version_option,
    workers_option,
)
from durable_workers.config import load_config
from durable_workers.errors import DurableError, StoreUnavailable
from durable_workers.metrics_http import MetricsServer, counters_folder
from durable_workers.registry import load_app

from .supervisor import Supervisor, SupervisorOptions


@click.command(cls=OneLineCommand, context_settings=CONTEXT)
@workers_option(SupervisorOptions.workers)
@concurrency_option(SupervisorOptions.concurrency)
@click.option("--db", help="SQLite file or postgresql:// URL [env DURABLE_DB; default ./durable.db].")
@click.option("--app", help="Module or .py file defining the workflows [env DURABLE_APP; default examples].")
@pool_size_option()
@click.option("--retention", metavar="DURATION",
              help="Delete terminal workflows older than this (30d, 12h) periodically [env DURABLE_RETENTION; "
                   "[tool.durable] retention; default: keep all].")  # fmt: skip
@ttl_option(SupervisorOptions.ttl)
@host_id_option
@shutdown_timeout_option(SupervisorOptions.shutdown_timeout)
@log_level_option(SupervisorOptions.log_level)
@metrics_options
@version_option
def main(
    workers: int,
    concurrency: int,
    db: str | None,
    app: str | None,
    pool_size: int | None,
    retention: str | None,
    ttl: float,
    shutdown_timeout: float,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Keep WORKERS worker processes running workflows from one database.

    One supervisor of the fleet at a time holds the scheduler lease (for
    --ttl seconds past its last renewal): it fires cron schedules and runs
    --retention.

    Ctrl+C or SIGTERM drains (current steps finish, work is released); a
    second one kills the workers at once.

    --metrics-port serves Prometheus /metrics (the counters of the supervisor
    and of every worker it started, and gauges read from the database),
    /healthz (the store answers) and /readyz (the workers registered).
    """
    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s supervisor[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    with counters_folder(metrics_port is not None) as counters:  # before any metric exists
        supervisor = _build(db, app, pool_size, retention, SupervisorOptions(
            workers=workers, concurrency=concurrency, ttl=ttl, shutdown_timeout=shutdown_timeout,
            log_level=log_level.upper(),
        ))  # fmt: skip
        server = None
        if metrics_port is not None:
            try:
                server = MetricsServer(supervisor, metrics_host, metrics_port, counters).start()
            except OSError as exc:
                supervisor.store.close()
                raise click.ClickException(f"cannot listen on {metrics_host}:{metrics_port}: {exc.strerror or exc}") from None
        supervisor.install_signal_handlers()
        try:
            code = supervisor.run()
        finally:
            if server is not None:
                server.stop()
    sys.exit(code)


def _build(db: str | None, app: str | None, pool_size: int | None, retention: str | None,
           options: SupervisorOptions) -> Supervisor:  # fmt: skip
    """The supervisor for these settings; a bad setting or store is one ClickException line."""
    try:
        config = load_config(db=db, app=app, pool_size=pool_size, retention=retention)
        load_app(config.app)  # fail here, once, rather than in every worker
        return Supervisor(config, options)
    except (DurableError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
