"""OpenTelemetry spans of workflow attempts and steps, and the trace context a submit stores.

Optional (``pip install durable-workers[otel]``): without ``opentelemetry-api``
installed, or with no tracer provider configured, every function here returns
at once and imports nothing (the check for the package runs once per process).

- A submit (``Client.submit``, ``submit_many``, ``ctx.start_child``) stores the
  W3C ``traceparent`` / ``tracestate`` of the current span with the new rows
  (``workflows.trace_context``). With no current span a submit starts a short
  ``durable.submit NAME`` span of its own, so every attempt of the workflow
  still lands in one trace.
- Each attempt is a ``durable.workflow NAME`` span, a child of that stored
  context, in whichever process, host or day it runs; it is the current span
  while the workflow body runs.
- Each execution of a step is a ``durable.step KEY`` child span of the attempt's,
  current while the step function runs on the attempt's thread (a step with a
  ``timeout`` runs its function in a thread of its own, where it is not). A
  replayed step gets no span; the attempt counts them (``durable.steps.replayed``).

The engine calls :func:`attempt` (and the handle's ``listener`` and ``finish``);
the submit paths call :func:`submit_context` or :func:`current_context`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

from . import keys
from .attempt import Listener, StepEvent
from .codec import safe_str

if TYPE_CHECKING:  # pragma: no cover
    from .backends import Store
    from .engine import Outcome
    from .records import Claim

#: The instrumentation scope of every span made here.
TRACER_NAME = "durable_workers"
#: Attempt outcomes whose span status is ERROR.
ERROR_OUTCOMES = ("FAILED", "CANCELLED")

_present: bool | None = None
_provider: Any = None
_live: dict[tuple[str, int], "_Attempt"] = {}
_live_lock = threading.Lock()


def _otel_present() -> bool:
    global _present
    if _present is None:
        try:
            _present = importlib.util.find_spec("opentelemetry") is not None  # imports nothing
        except (ImportError, ValueError):
            _present = False
    return _present


def set_tracer_provider(provider: Any) -> None:
    """Make spans with ``provider`` instead of OpenTelemetry's global one (``None``: the global one again)."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    """The tracer to use, or None when tracing is off (no package, or no provider configured).

    A process that configured a provider has imported ``opentelemetry.trace``: until one has,
    nothing is imported here.
    """
    if not _otel_present() or (_provider is None and "opentelemetry.trace" not in sys.modules):
        return None
    from opentelemetry import trace

    provider = _provider if _provider is not None else trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer(TRACER_NAME)


def _carrier(span: Any) -> str | None:
    """``span``'s W3C trace context as stored (JSON ``{"traceparent": ..., "tracestate": ...}``)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return json.dumps(carrier, sort_keys=True) if carrier else None


def _parent(stored: str | None) -> Any:
    """The OpenTelemetry context a stored trace context names (None: none, or unreadable)."""
    if not stored:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    return TraceContextTextMapPropagator().extract(carrier) if isinstance(carrier, dict) else None


def current_context() -> str | None:
    """The trace context to store with a workflow started here: the current span's, as JSON text.

    Falls back to the running step's span, then the attempt's span, of the workflow
    running on this thread (a ``ctx.parallel`` branch, a step thread). None when
    tracing is off or there is no span.
    """
    if _tracer() is None:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        span = _durable_span()
    return None if span is None else _carrier(span)


def _durable_span() -> Any:
    ctx = keys.active_context()
    if ctx is None:
        return None
    with _live_lock:
        running = _live.get((ctx.workflow_id, ctx._token))
    if running is None:
        return None
    return running.steps.span(keys.running_step()) or running.span


def _submit_span(name: str, workflow_id: str | None, batch: int | None) -> tuple[str | None, Any]:
    """The context a submit stores, and the ``durable.submit`` span made for it (None: the current one is used)."""
    tracer = _tracer()
    if tracer is None:
        return None, None
    found = current_context()
    if found is not None:
        return found, None
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {"durable.workflow.name": name} if batch is None else {"durable.batch.size": batch}
    if workflow_id is not None:
        attributes["durable.workflow.id"] = workflow_id
    span = tracer.start_span(f"durable.submit {name}" if batch is None else "durable.submit_many",
                             kind=SpanKind.PRODUCER, attributes=attributes)  # fmt: skip
    return _carrier(span), span


def submit_context(name: str, workflow_id: str | None = None, *, batch: int | None = None) -> str | None:
    """The trace context a submit stores: the current one, else a new ``durable.submit NAME`` span's.

    ``batch``: the size of a batch submit (its span is ``durable.submit_many``). None when tracing is off.
    """
    found, span = _submit_span(name, workflow_id, batch)
    if span is not None:
        span.end()
    return found


class Submitting:
    """What :func:`submitting` yields: the ``context`` to store; set ``created`` when the row was inserted."""

    def __init__(self, context: str | None) -> None:
        self.context = context
        self.created = False


@contextlib.contextmanager
def submitting(name: str, workflow_id: str | None) -> Iterator[Submitting]:
    """:func:`submit_context` for one submit whose own span is exported only if the row was new.

    An idempotent re-submit (every resume of ``durable run``) then leaves no
    trace of one empty span behind.
    """
    found, span = _submit_span(name, workflow_id, None)
    handle = Submitting(found)
    try:
        yield handle
    finally:
        if span is not None and handle.created:
            span.end()


def _record_error(span: Any, error: str | None, *, with_traceback: bool = False) -> None:
    """Status ERROR and an ``exception`` event from a stored error text (``Type: message``, traceback)."""
    from opentelemetry.trace import Status, StatusCode

    lines = (error or "error").splitlines()
    kind, _, message = lines[0].partition(": ")
    span.set_status(Status(StatusCode.ERROR, lines[0]))
    event = {"exception.type": kind, "exception.message": message or lines[0]}
    if with_traceback and len(lines) > 1:
        event["exception.stacktrace"] = "\n".join(lines[1:])
    span.add_event("exception", event)


class _Steps:
    """The step listener of a traced attempt: a span per execution, between its ``started`` and end events."""

    def __init__(self, tracer: Any, attempt: "_Attempt", inner: Listener | None) -> None:
        self._tracer, self._attempt, self._inner = tracer, attempt, inner
        self._open: dict[str, tuple[Any, Any, int]] = {}  # key -> (span, context token, thread)
        self._lock = threading.Lock()
        self.replayed = 0

    def span(self, key: str | None) -> Any:
        """The open span of step ``key``, if any."""
        with self._lock:
            found = self._open.get(key) if key is not None else None
        return found[0] if found is not None else None

    def __call__(self, event: StepEvent) -> None:
        if event.kind == "started":
            self._start(event)
        elif event.kind in ("replayed", "replayed-failure"):
            self.replayed += 1
        if self._inner is not None:
            self._inner(event)
        if event.kind in ("completed", "retrying", "failed"):
            self._end(event.step_key, event.kind, event)

    def _start(self, event: StepEvent) -> None:
        from opentelemetry import context, trace

        name = event.step_key.rpartition("/")[2].rpartition("#")[0]
        attributes = {"durable.workflow.id": event.workflow_id, "durable.step.key": event.step_key,
                      "durable.step.name": name, "durable.attempt": event.attempt}  # fmt: skip
        parent = trace.set_span_in_context(self._attempt.span)
        span = self._tracer.start_span(f"durable.step {event.step_key}", context=parent, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._open[event.step_key] = (span, token, threading.get_ident())

    def _end(self, key: str, outcome: str, event: StepEvent | None = None) -> None:
        from opentelemetry import context

        with self._lock:
            found = self._open.pop(key, None)
        if found is None:
            return
        span, token, thread = found
        span.set_attribute("durable.outcome", outcome)
        if event is not None and event.kind != "completed":
            if event.timed_out:
                span.set_attribute("durable.step.timed_out", True)
            _record_error(span, event.error)
        if thread == threading.get_ident():
            context.detach(token)
        span.end()

    def close(self) -> None:
        """End the spans of steps the attempt left running (an interrupt: lease lost, drain, timeout)."""
        with self._lock:
            keys_left = list(self._open)
        for key in reversed(keys_left):
            self._end(key, "interrupted")


class _Attempt:
    """A traced attempt: its span (current on the engine's thread) and its step listener."""

    def __init__(self, tracer: Any, store: "Store", claim: "Claim", worker_id: str) -> None:
        self._tracer, self._store, self._claim, self._worker_id = tracer, store, claim, worker_id
        self._token: Any = None
        self._finished = False
        self.span: Any = None
        self.steps = _Steps(tracer, self, None)

    def __enter__(self) -> "_Attempt":
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        record = self._claim.workflow
        try:
            stored = self._store.trace_context(record.id)
        except Exception:  # tracing never fails an attempt: a row without context starts a trace
            stored = None
        attributes = {"durable.workflow.id": record.id, "durable.workflow.name": record.name,
                      "durable.attempt": record.attempts, "durable.lease.token": self._claim.token,
                      "durable.queue": record.queue, "durable.worker.id": self._worker_id}  # fmt: skip
        if record.parent_id is not None:
            attributes["durable.parent.id"] = record.parent_id
        self.span = self._tracer.start_span(
            f"durable.workflow {record.name}", context=_parent(stored), kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._token = context.attach(trace.set_span_in_context(self.span))
        with _live_lock:
            _live[(record.id, self._claim.token)] = self
        return self

    def listener(self, inner: Listener | None) -> Listener:
        """The step listener the attempt's context gets: spans, then ``inner`` (the worker's)."""
        self.steps._inner = inner
        return self.steps

    def finish(self, outcome: "Outcome") -> None:
        """Note how the attempt ended (``durable.outcome``; ERROR for FAILED and CANCELLED)."""
        self._finished = True
        self.span.set_attribute("durable.outcome", outcome.status)
        self.span.set_attribute("durable.steps.replayed", self.steps.replayed)
        if outcome.wake_at is not None:
            self.span.set_attribute("durable.wake_at", outcome.wake_at)
        if outcome.reason:
            self.span.set_attribute("durable.interruption", outcome.reason)
        if outcome.status in ERROR_OUTCOMES:
            _record_error(self.span, outcome.error, with_traceback=True)

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        from opentelemetry import context

        with _live_lock:
            _live.pop((self._claim.workflow.id, self._claim.token), None)
        self.steps.close()
        if exc is not None and not self._finished:
            self.span.set_attribute("durable.outcome", "ABANDONED")
            _record_error(self.span, f"{type(exc).__name__}: {safe_str(exc)}")
        context.detach(self._token)
        self.span.end()


class _Untraced:
    """The attempt handle when tracing is off: passes the listener through, records nothing."""

    def __enter__(self) -> "_Untraced":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def listener(self, inner: Listener | None) -> Listener | None:
        """``inner``, unchanged."""
        return inner

    def finish(self, outcome: "Outcome") -> None:
        """Nothing to note."""


_UNTRACED = _Untraced()


def attempt(store: "Store", claim: "Claim", worker_id: str) -> "_Attempt | _Untraced":
    """The span of one attempt of ``claim`` (a context manager), or a no-op handle when tracing is off."""
    tracer = _tracer()
    if tracer is None:
        return _UNTRACED
    return _Attempt(tracer, store, claim, worker_id)

