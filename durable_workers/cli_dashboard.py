"""``durable dashboard``: serve the web dashboard of the configured database (thin: parse, build, serve).

Registered on the ``durable`` group by :mod:`durable_workers.cli`.
"""

from __future__ import annotations

import logging
import os

import click

from .cli_options import config_options, log_format_option
from .cli_options import settings as _settings
from .client import Client
from .config import load_config
from .logs import setup_logging

#: Where the dashboard listens unless told otherwise (loopback: reachable from this machine only).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
TOKEN_ENV = "DURABLE_DASHBOARD_TOKEN"


@click.command()
@config_options
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (anything but loopback exposes it to the network: give --token).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on.")
@click.option("--read-only", is_flag=True, help="Show everything, allow no action (cancel, retry, send: 403).")
@click.option("--token", default=None, metavar="TOKEN",
              help=f"Require this access token on every request (a login form, or Authorization: Bearer) "
                   f"[env {TOKEN_ENV}].")
@log_format_option()
@click.pass_context  # fmt: skip
def dashboard(ctx: click.Context, host: str, port: int, read_only: bool, token: str | None,
              log_format: str | None) -> None:  # fmt: skip
    """Serve a web dashboard of workflows, steps, queues and workers (Ctrl+C stops it)."""
    try:
        import uvicorn

        from .dashboard import DashboardSettings, create_app
    except ImportError as exc:  # pragma: no cover - the dependencies are install_requires
        raise click.ClickException(f"the dashboard needs starlette, uvicorn and jinja2 ({exc})") from None
    token = token or os.environ.get(TOKEN_ENV) or None
    found = _settings(ctx)
    config = load_config(db=found.get("db"), app=found.get("app"), pool_size=found.get("pool_size"),
                         log_format=log_format)  # fmt: skip
    client = Client(config=config, create=False, readonly=read_only)
    _ = client.store  # opened now: a wrong --db is one clear line, before the server starts
    app = create_app(DashboardSettings(client, read_only=read_only, token=token, host=host))
    mode = "read-only" if read_only else "actions allowed"
    banner = f"durable dashboard on http://{host}:{port}/ ({mode}{', token required' if token else ''})"
    if config.log_format == "json":  # uvicorn's records go through our handler: stderr is JSON lines only
        setup_logging("INFO", "json", role="dashboard")
        logging.getLogger("durable_workers.dashboard").info(banner, extra={"url": f"http://{host}:{port}/"})
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, log_config=None)
        return
    click.echo(banner, err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
