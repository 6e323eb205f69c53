"""``durable fork`` and ``durable check-replay`` (thin: parse, call the client, print).

Registered on the ``durable`` group by :mod:`durable_workers.cli`, whose shared
option and client helpers they use.
"""

from __future__ import annotations

import click

from .cli import EXIT_FAILED, _client, config_options
from .cli_format import _emit_json
from .replaycheck import ReplayVerdict


@click.command()
@config_options
@click.argument("workflow_id")
@click.option("--from", "from_step", required=True, metavar="STEP_KEY",
              help="First step to run afresh (a key from `durable steps ID`, e.g. charge#1).")  # fmt: skip
@click.option("--id", "new_id", help="Id of the new workflow [default: ID~fork-N].")
@click.pass_context
def fork(ctx: click.Context, workflow_id: str, from_step: str, new_id: str | None) -> None:
    """Start a copy of a workflow that keeps the steps before STEP_KEY and re-runs the rest."""
    forked = _client(ctx, create=False).fork(workflow_id, from_step=from_step, new_id=new_id)
    click.echo(f"forked {workflow_id} from {from_step} as {forked} (PENDING)")


def _line(verdict: ReplayVerdict) -> str:
    mark = "ok" if verdict.ok else verdict.outcome.upper()
    where = f" at {verdict.step}" if verdict.step and not verdict.ok else ""
    return f"{verdict.workflow_id}  {verdict.name}  {verdict.status}  {mark}{where}: {verdict.detail}"


@click.command("check-replay")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def check_replay(ctx: click.Context, as_json: bool) -> None:
    """Replay every unfinished workflow against the app's code (nothing runs or is written).

    Exit 1 when any would diverge: deploy the new code only when this passes.
    """
    verdicts = _client(ctx, create=False).check_replay()
    diverging = [v for v in verdicts if not v.ok]
    if as_json:
        _emit_json({"checked": len(verdicts), "diverging": len(diverging), "workflows": [v.as_json() for v in verdicts]})
    else:
        for verdict in verdicts:
            click.echo(_line(verdict))
        click.echo(f"{len(verdicts)} unfinished workflows checked: {len(diverging)} would diverge or break")
    if diverging:
        ctx.exit(EXIT_FAILED)
