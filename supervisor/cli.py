"""``durable-supervisor``: start and watch the worker fleet."""

from __future__ import annotations

import os
import sys

import click

from durable_workers.cli_options import (
    CONTEXT,
    OneLineCommand,
    concurrency_option,
    host_id_option,
    log_format_option,
    log_level_option,
    metrics_options,
    pool_size_option,
    shutdown_timeout_option,
    ttl_option,
    version_option,
    workers_option,
)
from durable_workers.config import Config, load_config
from durable_workers.errors import DurableError, StoreUnavailable
from durable_workers.logs import LOG_FORMAT_ENV, setup_logging
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
@log_format_option()
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
    log_format: str | None,
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
    /healthz (the loop turns, the store answers) and /readyz (the workers registered).
    """
    config = _config(db, app, pool_size, retention, log_format)
    setup_logging(log_level, config.log_format, role="supervisor")
    os.environ[LOG_FORMAT_ENV] = config.log_format  # inherited by the workers it starts
    with counters_folder(metrics_port is not None) as counters:  # before any metric exists
        supervisor = _build(config, SupervisorOptions(
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


def _config(db: str | None, app: str | None, pool_size: int | None, retention: str | None,
            log_format: str | None) -> Config:  # fmt: skip
    """The resolved settings; a bad one is one ClickException line."""
    try:
        return load_config(db=db, app=app, pool_size=pool_size, retention=retention, log_format=log_format)
    except DurableError as exc:
        raise click.ClickException(str(exc)) from None


def _build(config: Config, options: SupervisorOptions) -> Supervisor:
    """The supervisor for these settings; a bad app or store is one ClickException line."""
    try:
        load_app(config.app)  # fail here, once, rather than in every worker
        return Supervisor(config, options)
    except (DurableError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
