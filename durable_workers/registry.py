"""Workflow registry and loading of the user's app module."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar, overload

from .errors import ConfigError, DurableError, InputError, UnknownWorkflowError
from .typed import to_json, typed_inputs, workflow_inputs

F = TypeVar("F", bound=Callable[..., Any])


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(fn)``, computed once per function (a batch submit checks many inputs of one)."""
    return inspect.signature(fn)


@dataclass(frozen=True)
class WorkflowSpec:
    """A registered workflow: its name, function, deadline (seconds from its start, or None) and queue."""

    name: str
    fn: Callable[..., Any]
    timeout: float | None = None
    #: The queue its runs go to unless a submit names another (None: the default queue).
    queue: str | None = None
    #: ``(cron, timezone, catchup)`` of its ``@workflow(schedule=)``, or None (see ``durable_workers.schedules``).
    schedule: tuple[str, str, str] | None = None

    def check_input(self, values: dict[str, Any]) -> None:
        """Raise :class:`InputError` unless ``values`` bind to the keyword parameters and fit their annotated types."""
        try:
            _signature(self.fn).bind(None, **values)
            if typed_inputs(self.fn):  # else decoding is the identity: nothing more to check
                workflow_inputs(self.fn, json.loads(json.dumps(values, default=to_json)))
        except (TypeError, ValueError) as exc:  # TypedValueError is a TypeError
            raise InputError(f"input does not fit workflow {self.name!r}: {exc}") from None


class Registry:
    """Maps workflow names to functions. ``@workflow`` fills :data:`default_registry`."""

    def __init__(self) -> None:
        self._specs: dict[str, WorkflowSpec] = {}
        self._queues: dict[str, Any] = {}

    def register_queue(self, queue: Any) -> None:
        """Record a declared :class:`~durable_workers.Queue`; the same name with other limits is an error."""
        existing = self._queues.get(queue.name)
        if existing is not None and existing != queue:
            raise DurableError(f"queue {queue.name!r} is declared twice with different limits ({existing} and {queue})")
        self._queues[queue.name] = queue

    def queues(self) -> list[Any]:
        """The declared queues, by name."""
        return [self._queues[name] for name in sorted(self._queues)]

    def register(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        timeout: float | None = None,
        queue: Any = None,
        schedule: tuple[str, str, str] | None = None,
    ) -> WorkflowSpec:
        """Register ``fn`` under ``name`` (default: the function's name) with an optional deadline ``timeout``.

        ``queue``: a :class:`~durable_workers.Queue` or a queue name its runs go to by default.
        ``schedule``: ``(cron, timezone, catchup)``, checked here (a scheduled run gets no input).
        """
        from .queues import queue_name

        name = name or fn.__name__
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise DurableError(f"@workflow(timeout={timeout!r}) for {name!r}: timeout must be a positive number of seconds")
        existing = self._specs.get(name)
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise DurableError(
                f"workflow name {name!r} is registered twice ({_origin(existing.fn)} and {_origin(fn)}); "
                "give one of them @workflow(name=...)"
            )
        spec = WorkflowSpec(name, fn, None if timeout is None else float(timeout), queue_name(queue), schedule)
        if schedule is not None:
            _check_schedule(spec, schedule)
        self._specs[name] = spec
        return spec

    def scheduled(self) -> list[WorkflowSpec]:
        """The workflows declared with ``@workflow(schedule=)``, by name."""
        return [self._specs[name] for name in sorted(self._specs) if self._specs[name].schedule is not None]

    def get(self, name: str) -> WorkflowSpec:
        """The workflow registered as ``name``; raises :class:`UnknownWorkflowError`."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise UnknownWorkflowError(
                f"unknown workflow {name!r}; registered workflows: {known} (load others with --app)"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


def _check_schedule(spec: WorkflowSpec, schedule: tuple[str, str, str]) -> None:
    """Raise :class:`DurableError` naming the workflow for a bad schedule or one its runs cannot start with no input."""
    from .schedules import check_definition

    try:
        check_definition(*schedule)
        spec.check_input({})
    except InputError as exc:
        raise DurableError(f"@workflow(schedule=...) for {spec.name!r}: {exc}") from None


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


#: The registry that ``@workflow`` writes to and workers read from.
default_registry = Registry()


@overload
def workflow(fn: F) -> F: ...
@overload
def workflow(
    *,
    name: str | None = None,
    timeout: float | None = None,
    queue: Any = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    catchup: str = "latest",
) -> Callable[[F], F]: ...


def workflow(
    fn: F | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    queue: Any = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    catchup: str = "latest",
) -> Any:
    """Register a function as a durable workflow.

    The function receives a :class:`~durable_workers.Context` first and the
    submitted JSON input's keys as keyword arguments; it must return a JSON
    value. Use ``@workflow``, ``@workflow(name="...")``, and ``timeout=SECONDS``
    for a deadline: a run still unfinished that long after it was submitted
    ends CANCELLED with "deadline exceeded", its child workflows included
    (``submit(..., timeout=)`` overrides it per run). ``queue``: a
    :class:`~durable_workers.Queue` (or its name) whose limits its runs obey
    (``submit(..., queue=)`` overrides it per run). ``schedule``: a cron
    expression read in ``timezone`` (an IANA name); each slot submits one run
    with no input and the id ``NAME@<slot, ISO UTC>``, fired by the supervisor
    that holds the scheduler lease; ``catchup`` (``latest``, ``all``, ``none``)
    says what happens to slots missed while no supervisor ran.
    """
    cron = None if schedule is None else (schedule, timezone, catchup)

    def decorate(target: F) -> F:
        spec = default_registry.register(target, name, timeout=timeout, queue=queue, schedule=cron)
        target.__durable_name__ = spec.name  # type: ignore[attr-defined]  # ctx.start_child(fn) finds the name
        return target

    return decorate(fn) if fn is not None else decorate


def _module_for_path(app: str) -> str:
    """Dotted module name for a file or package folder path; puts its root on ``sys.path``."""
    path = Path(app).resolve()
    if path.is_dir():
        path = path / "__init__.py"
    if not path.is_file():
        raise ConfigError(f"app file {app} does not exist; pass --app module.path or path/to/file.py")
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return ".".join(parts)


def load_app(app: str, registry: Registry = default_registry) -> Registry:
    """Import the module that defines the workflows and return the registry.

    ``app`` is a dotted module (``examples.onboarding``, importable from the
    current directory) or a path to a ``.py`` file. Raises :class:`ConfigError`
    with a one-line reason when it cannot be imported.
    """
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if app.endswith(".py") or "/" in app:
            importlib.import_module(_module_for_path(app))
        else:
            importlib.import_module(app)
    except ConfigError:
        raise
    except DurableError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"cannot import app {app!r}: {exc}; run from the project folder or pass --app"
        ) from exc
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(f"importing app {app!r} failed: {type(exc).__name__}: {exc}") from exc
    return registry
