"""``durable send`` and ``durable events`` (thin: parse, call the client, print).

Registered on the ``durable`` group by :mod:`durable_workers.cli`, whose shared
option and client helpers they use.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .cli import _client, config_options
from .cli_format import _emit_json
from .errors import InputError


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"--payload is not valid JSON ({exc}); quote it, e.g. --payload '{{\"ok\": true}}'") from None


@click.command()
@config_options
@click.argument("workflow_id")
@click.argument("topic")
@click.option("--payload", metavar="JSON", help="The message, as JSON [default: null].")
@click.option("--key", help="Idempotency key: a second send with the same key sends nothing.")
@click.pass_context
def send(ctx: click.Context, workflow_id: str, topic: str, payload: str | None, key: str | None) -> None:
    """Send a durable message to a workflow on TOPIC (a workflow waiting for it wakes)."""
    message_id = _client(ctx, create=False).send(workflow_id, topic, _payload(payload), key=key)
    click.echo(f"sent {message_id} to {workflow_id} on {topic!r}")


@click.command()
@config_options
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def events(ctx: click.Context, workflow_id: str, as_json: bool) -> None:
    """List the events (key = value) a workflow has set."""
    found = _client(ctx, create=False).events(workflow_id)
    if as_json:
        _emit_json(found)
        return
    for key, value in found.items():
        click.echo(f"{key} = {json.dumps(value)}")
    if not found:
        click.echo(f"{workflow_id} has set no events")
