"""Workflows of the tracing tests, and a span exporter to a file for worker processes.

With ``TRACING_TEST_SPANS=PATH`` in its environment, a process importing this module
sets OpenTelemetry's global tracer provider to one that writes every ended span as a
JSON line to PATH (what the cross-process test reads back). Without it, nothing is set.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from durable_workers import Context, workflow

#: The environment variable naming the span file of a worker process.
SPANS_ENV = "TRACING_TEST_SPANS"


@workflow
def traced_steps(ctx: Context, n: int = 1) -> int:
    """Two steps: ``add`` then ``double``."""
    added = ctx.step("add", lambda: n + 1)
    return int(ctx.step("double", lambda: added * 2))


def _boom() -> None:
    raise ValueError("no luck")


@workflow
def traced_failing(ctx: Context) -> None:
    """A step that fails twice (one retry), so the workflow fails."""
    ctx.step("boom", _boom, retries=1, backoff=0.01)


@workflow
def traced_sleeper(ctx: Context, seconds: float = 0.2) -> str:
    """A step, a durable sleep (WAITING, a second attempt), a step."""
    ctx.step("before", lambda: "b")
    ctx.sleep(seconds)
    return str(ctx.step("after", lambda: "a"))


@workflow
def traced_parent(ctx: Context, n: int = 2) -> int:
    """Starts ``traced_steps`` as a child and returns its result."""
    return int(ctx.call("traced_steps", n=n))


def _span_line(span: Any) -> str:
    context, parent = span.get_span_context(), span.parent
    return json.dumps({
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "pid": os.getpid(),
    })


def _install_file_exporter(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class FileSpanExporter(SpanExporter):
        """Appends each span as one JSON line (one write per batch, O_APPEND)."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            with open(path, "a", encoding="utf-8") as out:
                out.write("".join(_span_line(span) + "\n" for span in spans))
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter()))
    trace.set_tracer_provider(provider)


def read_spans(path: str) -> list[dict[str, Any]]:
    """The spans a worker process wrote to ``path`` (none yet: an empty list)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.endswith("\n")]


if os.environ.get(SPANS_ENV):
    _install_file_exporter(os.environ[SPANS_ENV])
