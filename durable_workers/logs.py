"""How the long-running commands write their logs: text lines (the default) or JSON lines.

``durable-supervisor``, its workers (``durable worker``), ``durable dashboard``,
``durable -v run`` and the fleet of ``durable chaos`` configure logging with
:func:`setup_logging` only. The format comes from ``--log-format``, else
``DURABLE_LOG_FORMAT``, else ``[tool.durable] log_format``, else ``text``
(``config.load_config``). A supervisor exports its format as
``DURABLE_LOG_FORMAT``, so the workers it starts write the same.

With ``json`` every record is one line holding one JSON object::

    {"ts": "2026-05-01T09:00:00.123Z", "level": "INFO", "logger": "durable_workers.worker",
     "msg": "step completed ...", "pid": 4242, "role": "worker", "worker_id": "...",
     "workflow_id": "...", "step_key": "fetch#1", "attempt": 1}

``ts`` is ISO 8601 in UTC; ``role`` names the process (``supervisor``, ``worker``)
when it has one; any ``extra=`` field of the logging call is a key of its own;
an exception is the ``exc`` field (its traceback as one string), never lines of
its own. Uncaught exceptions of the process and of its threads are logged the
same way, so a JSON log holds nothing but JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Mapping

from .config import DEFAULT_LOG_FORMAT, LOG_FORMATS

#: The environment variable a supervisor sets for its workers (and that every command reads).
LOG_FORMAT_ENV = "DURABLE_LOG_FORMAT"

#: Attributes every ``LogRecord`` has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, pid, the ``fields`` and the record's extras.

    ``fields`` (such as ``{"role": "worker", "worker_id": ...}``) are added to
    every line; a record's own ``extra=`` values win over them.
    """

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values that are not JSON are written as their ``str``)."""
        when = datetime.fromtimestamp(record.created, tz=timezone.utc)
        data: dict[str, Any] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        data.update(self.fields)
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def text_formatter(role: str | None) -> logging.Formatter:
    """The text lines of today: ``TIME ROLE[PID] LEVEL MESSAGE``, or ``TIME LOGGER MESSAGE`` with no role."""
    if role is None:
        return logging.Formatter("%(asctime)s %(name)s %(message)s")
    return logging.Formatter(f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(message)s")


#: The handler :func:`setup_logging` installed on the root logger (replaced by the next call).
_installed: logging.Handler | None = None


def setup_logging(
    level: str | int = "INFO",
    log_format: str = DEFAULT_LOG_FORMAT,
    *,
    role: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` or above to stderr, as ``text`` or ``json`` lines.

    ``role`` (``supervisor``, ``worker``) names the process in each line;
    ``fields`` are added to every JSON line. Calling it again replaces the
    handler the previous call installed. With ``json`` it also logs uncaught
    exceptions (of the main thread and of other threads) and ``warnings`` as
    JSON. Raises ``ValueError`` for a format not in ``LOG_FORMATS``.
    """
    global _installed
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter({**({"role": role} if role else {}), **(fields or {})}))
    else:
        handler.setFormatter(text_formatter(role))
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _installed = handler
    if log_format == "json":
        _log_uncaught()
    return handler


def _log_uncaught() -> None:
    """Route uncaught exceptions and ``warnings`` through logging (one JSON line each, not a traceback)."""
    crash = logging.getLogger("durable_workers.uncaught")

    def on_exception(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        crash.critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        thread = args.thread.name if args.thread is not None else "?"
        crash.critical("uncaught %s in thread %s: %s", args.exc_type.__name__, thread, args.exc_value,
                       exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # fmt: skip

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
    logging.captureWarnings(True)
