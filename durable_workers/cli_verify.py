"""``durable verify NAME``: crash-test a workflow at every step boundary (thin: parse, run the kit, print).

Registered on the ``durable`` group by :mod:`durable_workers.cli`.
"""

from __future__ import annotations

import sys
import click

from .cli import _client, _input, config_options
from .cli_format import _emit_json
from .cli_options import input_options, settings
from .progress import progress
from .testing.crashtest import DEFAULT_JOBS, DEFAULT_TIMEOUT, CrashReport, PointResult, verify as run_verify


def _point_line(result: PointResult) -> str:
    if not result.reached:
        verdict = "NOT REACHED"
    elif result.ok:
        verdict = "ok"
    else:
        verdict = "FAIL"
    notes = list(result.doubled) + [f"completed step {k} executed again" for k in result.reexecuted]
    if result.reached and not result.same_end:
        notes.append(f"ended {result.end.status}" + (f" ({result.end.error})" if result.end.error else ""))
    notes += [f"{text} (harmless)" for text in result.deduplicated]
    return f"  {result.point.label:<44} {verdict:<11} {'; '.join(notes)}".rstrip()


def _print_report(report: CrashReport) -> None:
    clean = report.clean
    click.echo(
        f"clean run: {clean.status}" + (f" ({clean.error})" if clean.error else "")
        + f", {len(clean.order)} steps; {len(report.points)} crash points"
    )  # fmt: skip
    for result in report.points:
        click.echo(_point_line(result))
    problems = report.problems()
    if not problems:
        click.echo(f"VERDICT: PASS — {report.name} ends the same after a SIGKILL at each of {len(report.points)} points")
        return
    click.echo(f"VERDICT: FAIL — {len(problems)} problem(s):")
    for line in problems:
        click.echo(f"  {line}")


@click.command()
@config_options
@click.argument("name")
@input_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--jobs", type=click.IntRange(min=1, max=16), default=DEFAULT_JOBS, show_default=True,
              help="Crash points run at once.")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds one run's process may take.")
@click.pass_context  # fmt: skip
def verify(ctx: click.Context, name: str, input_text: str | None, input_file: str | None, as_json: bool,
           jobs: int, timeout: float) -> None:  # fmt: skip
    """Kill workflow NAME at every step boundary in a real subprocess, resume it, and compare with a clean run.

    Each crash point passes when the run ends as the clean run did, no step
    that had completed runs again, and no side effect declared with
    durable_workers.testing.effect() runs twice without one idempotency key.
    The runs use a temporary SQLite file unless --db is given. Exit 0 when
    every point passes, 1 when one fails.
    """
    values = _input(input_text, input_file)
    client = _client(ctx)
    spec = client.registry.get(name)  # unknown name or app: one line, before anything runs
    spec.check_input(values or {})
    app, db = client.config.app, settings(ctx).get("db")

    failed: list[str] = []

    def advance(result: PointResult, ended: int, total: int) -> None:
        if not result.ok:
            failed.append(result.point.label)
        bar.update(completed=ended, total=total, note=f"{len(failed)} failed" + (f" (last: {failed[-1]})" if failed else ""))

    if not as_json:
        click.echo(f"verifying {name}: a clean run, then a SIGKILL at every step boundary (app {app})")
    with progress("crash points", enabled=not as_json) as bar:
        report = run_verify(name, values, app=app, db=db, timeout=timeout, jobs=jobs, on_point=advance)
    if as_json:
        _emit_json(report.to_json())
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(1)
