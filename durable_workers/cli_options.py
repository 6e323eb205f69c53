"""Options shared by the ``durable``, ``durable-submit`` and ``durable-supervisor`` commands.

Each option is declared once here, with its bounds, and reused by every command
that takes it, so ``durable worker --ttl`` and ``durable-supervisor --ttl``
cannot drift apart. Every bad value is one ``Error:`` line on stderr and exit 2
(see :class:`OneLineCommand`).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable

import click

from . import __version__
from .config import (
    DEFAULT_METRICS_HOST,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_HOST_ID_LENGTH,
    MAX_SECONDS,
    MIN_TTL,
)

F = Callable[..., Any]

#: ``context_settings`` of every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}


#: click >= 8.2 raises this (a UsageError carrying the help text) for a group run with no command.
_HELP_ERRORS: tuple[type[click.ClickException], ...] = tuple(
    kind for kind in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if kind is not None
)


class _OneLine:
    """Mixin: every click error (bad option, missing argument, ClickException) is one line.

    click prints a usage block and a hint before a usage error; here the error
    is one ``Error: ...`` line on stderr with click's exit code (2 for bad
    options and arguments, 1 for other errors).
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        """Run the command; exits with its status (errors: one line, see the class docstring)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)  # type: ignore[misc]
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)  # type: ignore[misc]
        except _HELP_ERRORS as exc:  # a bare group: its help, as click prints it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            click.echo(f"Error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class OneLineCommand(_OneLine, click.Command):
    """A click command whose errors are one line (see :class:`_OneLine`)."""


class OneLineGroup(_OneLine, click.Group):
    """A click group whose errors are one line (see :class:`_OneLine`)."""


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (``nan`` and ``inf`` are bad values)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The float; a click usage error (exit 2) when it is out of range or not finite."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: Seconds: finite, at least 0.
SECONDS = FiniteFloat(min=0.0, max=MAX_SECONDS)
#: Seconds: finite, more than 0.
POSITIVE_SECONDS = FiniteFloat(min=0.0, min_open=True, max=MAX_SECONDS)
#: A count of at least one.
AT_LEAST_ONE = click.IntRange(min=1)
#: A count of at least zero.
AT_LEAST_ZERO = click.IntRange(min=0)


def version_option(command: F) -> F:
    """``--version``: print ``PROG, version X`` and exit 0."""
    return click.version_option(__version__, "--version")(command)


def ttl_option(default: float, help: str = "Lease lifetime in seconds (heartbeat every ttl/3).") -> Callable[[F], F]:
    """``--ttl SECONDS``: a lease lifetime, between ``MIN_TTL`` and ``MAX_SECONDS``."""
    kind = FiniteFloat(min=MIN_TTL, max=MAX_SECONDS)
    return click.option("--ttl", type=kind, default=default, show_default=True, help=help)


def concurrency_option(default: int, help: str = "Workflows each worker runs at once, in threads.") -> Callable[[F], F]:
    """``--concurrency N``: at least 1."""
    return click.option("--concurrency", type=AT_LEAST_ONE, default=default, show_default=True, help=help)


def workers_option(default: int, help: str = "Worker processes to keep alive.") -> Callable[[F], F]:
    """``--workers N``: at least 1."""
    return click.option("--workers", type=AT_LEAST_ONE, default=default, show_default=True, help=help)


def shutdown_timeout_option(default: float) -> Callable[[F], F]:
    """``--shutdown-timeout SECONDS``: at least 0 (0: SIGKILL at once)."""
    return click.option(
        "--shutdown-timeout", type=SECONDS, default=default, show_default=True,
        help="Seconds to drain before SIGKILL (0: at once).",
    )  # fmt: skip


class Duration(click.ParamType):
    """A positive duration: ``30s``, ``15m``, ``12h``, ``2d``, ``1w`` or plain seconds (``config.parse_duration``)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Seconds; a click usage error (exit 2) for anything else."""
        from .config import parse_duration
        from .errors import ConfigError

        try:
            return parse_duration(value, "the duration")
        except ConfigError:
            self.fail(f"{value!r} is not a duration; examples: 30s, 15m, 12h, 2d", param, ctx)


class UtcTime(click.ParamType):
    """An ISO 8601 time such as ``2026-12-24T09:00Z`` (UTC unless it names an offset), as UNIX seconds."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """UNIX seconds; a click usage error (exit 2) for text that is not an ISO 8601 time."""
        from datetime import datetime, timezone

        text = str(value).strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 time; example: 2026-12-24T09:00Z", param, ctx)
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


class HostId(click.ParamType):
    """A host identity: non-empty, printable, no whitespace, at most ``MAX_HOST_ID_LENGTH`` characters."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The identity; a click usage error (exit 2) when it is empty, too long or not printable."""
        text = str(value)
        if not text or len(text) > MAX_HOST_ID_LENGTH or not text.isprintable() or any(c.isspace() for c in text):
            self.fail(
                f"{text!r} is not a host identity: give 1 to {MAX_HOST_ID_LENGTH} printable characters "
                "without spaces (e.g. host-a)",
                param,
                ctx,
            )
        return text


def _adopt_host_id(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        os.environ["DURABLE_HOST_ID"] = value  # read by liveness.host_identity(), inherited by workers


def host_id_option(command: F) -> F:
    """``--host-id ID`` [env ``DURABLE_HOST_ID``]: this process's host identity (see liveness.py).

    Validated (:class:`HostId`), then set as ``DURABLE_HOST_ID`` for this
    process and the workers it starts; the command does not receive it.
    """
    return click.option(
        "--host-id", type=HostId(), envvar="DURABLE_HOST_ID", callback=_adopt_host_id, expose_value=False,
        is_eager=True, help="Host identity for liveness checks [env DURABLE_HOST_ID; default: boot id + PID namespace].",
    )(command)  # fmt: skip


def log_level_option(default: str, help: str = "Log level (case-insensitive).") -> Callable[[F], F]:
    """``--log-level``: one of ``LOG_LEVELS``, any case; the value is upper-case."""
    kind = click.Choice(LOG_LEVELS, case_sensitive=False)
    return click.option("--log-level", type=kind, default=default, show_default=True, help=help)


def log_format_option(**extra: Any) -> Callable[[F], F]:
    """``--log-format text|json`` (any case; None when not given: env and config decide, see ``durable_workers.logs``)."""
    kind = click.Choice(LOG_FORMATS, case_sensitive=False)
    return click.option(
        "--log-format", type=kind, default=None, **extra,
        help="Log lines as text or one JSON object per line [env DURABLE_LOG_FORMAT; [tool.durable] log_format; "
             "default text].",
    )  # fmt: skip


def metrics_options(command: F) -> F:
    """``--metrics-port PORT`` (None: no metrics server) and ``--metrics-host HOST``."""
    command = click.option(
        "--metrics-host", default=DEFAULT_METRICS_HOST, show_default=True, metavar="HOST",
        help="Address the metrics port listens on (0.0.0.0: every interface).",
    )(command)  # fmt: skip
    return click.option(
        "--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
        help="Serve /metrics, /healthz and /readyz on this port (0: any free port; default: no server).",
    )(command)  # fmt: skip


def pool_size_option(**extra: Any) -> Callable[[F], F]:
    """``--pool-size N``: PostgreSQL connections per process, at least 1 (SQLite ignores it)."""
    return click.option(
        "--pool-size", type=AT_LEAST_ONE, **extra,
        help="PostgreSQL connections per process; ignored with SQLite [env DURABLE_POOL_SIZE; default 8].",
    )  # fmt: skip


def input_options(command: F) -> F:
    """``--input JSON`` and ``--input-file PATH|-`` (``input_text`` and ``input_file``)."""
    command = click.option(
        "--input-file", "input_file", type=click.Path(dir_okay=False, allow_dash=True),
        help="Read the JSON input from PATH ('-' for stdin) instead of --input.",
    )(command)  # fmt: skip
    return click.option("--input", "input_text", help="JSON object passed as keyword arguments.")(command)


def read_input(input_text: str | None, input_file: str | None) -> tuple[str | None, str]:
    """The input text of ``--input`` or ``--input-file`` and where it came from.

    Returns ``(None, "--input")`` when neither was given. Raises
    :class:`click.UsageError` (exit 2) when both were given, and
    :class:`click.BadParameter` when the file cannot be read.
    """
    if input_file is None:
        return input_text, "--input"
    if input_text is not None:
        raise click.UsageError("give --input or --input-file, not both")
    try:
        if input_file == "-":
            return sys.stdin.read(), "--input-file -"
        with open(input_file, encoding="utf-8") as handle:
            return handle.read(), f"--input-file {input_file}"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.BadParameter(f"cannot read {input_file}: {reason}", param_hint="--input-file") from None


def remember_on_root(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback: keep a given value on the root context, where ``_settings()`` reads it.

    A subcommand's own ``ctx.obj`` is a new dict, so the value is stored on the root's.
    """
    if value is not None:
        ctx.find_root().ensure_object(dict)[param.name] = value
    return value


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--db``, ``--app``, ``--pool-size`` and ``--version``, accepted on the group and on every command."""
    command = version_option(command)
    command = pool_size_option(expose_value=False, callback=remember_on_root, is_eager=True)(command)
    command = click.option(
        "--app", expose_value=False, callback=remember_on_root, is_eager=True,
        help="Module or .py file defining the workflows [env DURABLE_APP; default examples].",
    )(command)
    command = click.option(
        "--db", expose_value=False, callback=remember_on_root, is_eager=True,
        help="SQLite file or postgresql:// URL [env DURABLE_DB; default ./durable.db].",
    )(command)
    return command


def settings(ctx: click.Context) -> dict[str, Any]:
    """The options ``config_options`` remembered (on the root context: ``--db``, ``--app``, ``--pool-size``)."""
    return ctx.find_root().ensure_object(dict)
