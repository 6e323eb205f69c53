"""OpenTelemetry tracing: attempt and step spans, and the trace context carried from submit.

Spans are collected with the SDK's ``InMemorySpanExporter`` on a tracer provider handed to
``durable_workers.tracing`` for the test (so no other test of the session is traced), and, for
the cross-process test, by a real worker process whose global provider writes them to a file
(``tests/apps/tracing_flows.py``). Every test runs on SQLite and on PostgreSQL (``any_db``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tests.apps.tracing_flows  # noqa: F401  (registers the traced_* workflows)
from durable_workers import Client, default_registry, tracing
from durable_workers.backends import NewWorkflow, open_store
from tests.apps.tracing_flows import SPANS_ENV, read_spans
from tests.conftest import APPS, cli_env
from tests.integration.fleet_support import DbTarget, any_db, cli_cwd, query, wait_for  # noqa: F401  (any_db: fixture)

pytestmark = pytest.mark.timeout(120)

WAIT_S = 60.0


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider exporting to memory, used by durable_workers.tracing for this test only."""
    exporter = InMemorySpanExporter()
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(made)
    try:
        yield made, exporter
    finally:
        tracing.set_tracer_provider(None)
        made.shutdown()


@pytest.fixture
def client(any_db: DbTarget) -> Iterator[Client]:  # noqa: F811
    opened = Client(db=str(any_db), registry=default_registry)
    try:
        yield opened
    finally:
        opened.close()


def _spans(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def _attempts(exporter: InMemorySpanExporter, workflow_id: str) -> list[ReadableSpan]:
    return [span for span in _spans(exporter, "durable.workflow ") if span.attributes["durable.workflow.id"] == workflow_id]


def _steps_of(exporter: InMemorySpanExporter, attempt: ReadableSpan) -> list[ReadableSpan]:
    return [
        span for span in _spans(exporter, "durable.step ")
        if span.parent is not None and span.parent.span_id == attempt.context.span_id
    ]  # fmt: skip


def _stored(db: DbTarget, workflow_id: str) -> Any:
    return query(db, "SELECT trace_context FROM workflows WHERE id = ?", (workflow_id,))[0]["trace_context"]


def test_an_in_process_run_gives_an_attempt_span_with_step_spans(
    any_db: DbTarget, client: Client, provider: Any  # noqa: F811
) -> None:
    _, exporter = provider
    record, outcome = client.run_here("traced_steps", "t-1", {"n": 3})
    assert record.status == "COMPLETED" and record.result == 8
    [submit] = _spans(exporter, "durable.submit ")
    assert submit.kind is SpanKind.PRODUCER and submit.attributes["durable.workflow.id"] == "t-1"
    [attempt] = _attempts(exporter, "t-1")
    assert attempt.name == "durable.workflow traced_steps" and attempt.kind is SpanKind.CONSUMER
    assert {k: attempt.attributes[k] for k in ("durable.workflow.name", "durable.attempt", "durable.outcome",
                                               "durable.queue", "durable.lease.token")} == {  # fmt: skip
        "durable.workflow.name": "traced_steps", "durable.attempt": 1, "durable.outcome": "COMPLETED",
        "durable.queue": "default", "durable.lease.token": 1,
    }
    assert attempt.parent is not None and attempt.parent.span_id == submit.context.span_id
    assert attempt.context.trace_id == submit.context.trace_id
    assert attempt.status.status_code is StatusCode.UNSET
    steps = {span.name: span for span in _steps_of(exporter, attempt)}
    assert set(steps) == {"durable.step add#1", "durable.step double#1"}
    add = steps["durable.step add#1"]
    assert dict(add.attributes) == {
        "durable.workflow.id": "t-1", "durable.step.key": "add#1", "durable.step.name": "add",
        "durable.attempt": 1, "durable.outcome": "completed",
    }
    assert add.context.trace_id == attempt.context.trace_id
    assert attempt.start_time <= add.start_time <= add.end_time <= attempt.end_time
    assert json.loads(_stored(any_db, "t-1"))["traceparent"].split("-")[1] == format(submit.context.trace_id, "032x")


def test_a_submit_inside_a_span_makes_the_attempt_its_child(
    client: Client, provider: Any  # noqa: F811
) -> None:
    made, exporter = provider
    with made.get_tracer("test").start_as_current_span("checkout request") as request:
        client.submit("traced_steps", "t-2", {"n": 1})
    assert _spans(exporter, "durable.submit ") == []  # the caller's span is the context: no span of its own
    client.run_here("traced_steps", "t-2")  # later, outside the span (its idempotent submit: a span, not stored)
    [attempt] = _attempts(exporter, "t-2")
    assert attempt.context.trace_id == request.get_span_context().trace_id
    assert attempt.parent is not None and attempt.parent.span_id == request.get_span_context().span_id
    assert attempt.parent.is_remote  # it came from the stored row, not from this thread's context


def test_a_child_workflow_shares_the_parents_trace(client: Client, provider: Any) -> None:  # noqa: F811
    _, exporter = provider
    record, _ = client.run_here("traced_parent", "p-1", {"n": 2})
    assert record.status == "COMPLETED" and record.result == 6
    parents = _attempts(exporter, "p-1")
    assert [span.attributes["durable.outcome"] for span in parents] == ["WAITING", "COMPLETED"]
    [child] = [span for span in _spans(exporter, "durable.workflow traced_steps")]
    assert child.attributes["durable.parent.id"] == "p-1"
    assert {span.context.trace_id for span in (*parents, child)} == {child.context.trace_id}
    [start] = [span for span in _steps_of(exporter, parents[0]) if "durable:child:traced_steps" in span.name]
    assert child.parent is not None and child.parent.span_id == start.context.span_id


def test_a_failed_step_gives_error_spans(client: Client, provider: Any) -> None:  # noqa: F811
    _, exporter = provider
    record, _ = client.run_here("traced_failing", "f-1")
    assert record.status == "FAILED"
    [attempt] = _attempts(exporter, "f-1")
    executions = sorted(_steps_of(exporter, attempt), key=lambda span: span.start_time)
    assert [(span.name, span.attributes["durable.attempt"], span.attributes["durable.outcome"]) for span in executions] == [
        ("durable.step boom#1", 1, "retrying"), ("durable.step boom#1", 2, "failed"),
    ]
    for span in executions:
        assert span.status.status_code is StatusCode.ERROR and "no luck" in span.status.description
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "ValueError"
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["durable.outcome"] == "FAILED"
    [event] = [e for e in attempt.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError" and "Traceback" in event.attributes["exception.stacktrace"]


def test_a_sleep_and_its_resume_are_two_attempts_in_one_trace(client: Client, provider: Any) -> None:  # noqa: F811
    _, exporter = provider
    record, _ = client.run_here("traced_sleeper", "s-1", {"seconds": 0.2})
    assert record.status == "COMPLETED"
    first, second = sorted(_attempts(exporter, "s-1"), key=lambda span: span.start_time)
    assert (first.attributes["durable.outcome"], second.attributes["durable.outcome"]) == ("WAITING", "COMPLETED")
    assert first.context.trace_id == second.context.trace_id
    assert first.parent is not None and second.parent is not None and first.parent.span_id == second.parent.span_id
    assert first.attributes["durable.lease.token"] < second.attributes["durable.lease.token"]
    assert "durable.wake_at" in first.attributes
    # replayed steps get no span: the resumed attempt executes only what follows the sleep
    assert [span.name for span in _steps_of(exporter, second)] == ["durable.step after#1"]
    assert second.attributes["durable.steps.replayed"] == 2  # before#1 and the sleep


def test_a_resubmit_of_an_existing_workflow_exports_no_submit_span(client: Client, provider: Any) -> None:
    _, exporter = provider
    client.submit("traced_steps", "again", {"n": 1})
    client.submit("traced_steps", "again", {"n": 1})  # idempotent: the row exists
    record, _ = client.run_here("traced_steps", "again")  # run_here submits (finds) it once more
    assert record.status == "COMPLETED"
    [submit] = _spans(exporter, "durable.submit ")
    [attempt] = _attempts(exporter, "again")
    assert attempt.parent is not None and attempt.parent.span_id == submit.context.span_id


def test_submit_many_and_start_child_store_a_given_trace_context(any_db: DbTarget) -> None:  # noqa: F811
    store = open_store(str(any_db))
    carrier = json.dumps({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
    try:
        store.submit_many([NewWorkflow("b-1", "traced_steps", "{}", trace_context=carrier), NewWorkflow("b-2", "traced_steps", "{}")])
        assert (store.trace_context("b-1"), store.trace_context("b-2")) == (carrier, None)
        assert store.get_workflow("b-1").status == "PENDING"
        claim = store.claim_next("w", ["traced_steps"], ttl=30)
        assert claim is not None
        store.start_child(claim.workflow.id, "c-1", "traced_steps", "{}", worker_id="w", token=claim.token,
                          trace_context=carrier)  # fmt: skip
        assert store.trace_context("c-1") == carrier and store.trace_context("missing") is None
    finally:
        store.close()


def test_client_submit_many_inside_a_span_gives_every_row_that_trace(provider, client: Client) -> None:
    made, _exporter = provider
    from durable_workers import Submission

    with made.get_tracer("test").start_as_current_span("batch request") as span:
        client.submit_many([Submission("traced_steps", "m-1", {"n": 1}), Submission("traced_steps", "m-2", {"n": 1})])
    trace_id = format(span.get_span_context().trace_id, "032x")
    for workflow_id in ("m-1", "m-2"):
        stored = json.loads(client.store.trace_context(workflow_id) or "{}")
        assert stored.get("traceparent", "").split("-")[1] == trace_id, (workflow_id, stored)


_UNTRACED_RUN = """
import sys
import tests.apps.tracing_flows
from durable_workers import Client, default_registry
client = Client(db=sys.argv[1], registry=default_registry)
record, _ = client.run_here("traced_steps", "u-1", {"n": 1})
print(record.status, "opentelemetry" in sys.modules)
"""


def test_without_a_tracer_provider_nothing_is_imported_or_stored(any_db: DbTarget, tmp_path: Path) -> None:  # noqa: F811
    done = subprocess.run([sys.executable, "-c", _UNTRACED_RUN, str(any_db)], capture_output=True, text=True,
                          timeout=WAIT_S, cwd=tmp_path, env=cli_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["COMPLETED", "False"]
    assert _stored(any_db, "u-1") is None


def test_a_worker_process_continues_the_submitters_trace(
    any_db: DbTarget, client: Client, provider: Any, tmp_path: Path  # noqa: F811
) -> None:
    made, _ = provider
    with made.get_tracer("test").start_as_current_span("api call") as request:
        client.submit("traced_steps", "x-1", {"n": 4})
    spans_file = tmp_path / "spans.jsonl"
    command = [sys.executable, "-m", "durable_workers", "--db", str(any_db), "--app", str(APPS / "__init__.py"),
               "worker", "--worker-id", "traced-worker"]  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=cli_cwd(any_db), env=cli_env({SPANS_ENV: str(spans_file)}))  # fmt: skip
    try:
        assert client.wait("x-1", timeout=WAIT_S).status == "COMPLETED"
        spans = wait_for(lambda: _worker_spans(spans_file, 3), WAIT_S, "the worker's attempt and step spans")
    finally:
        worker.terminate()
        try:
            worker.wait(WAIT_S)
        except subprocess.TimeoutExpired:  # pragma: no cover
            worker.kill()
            worker.wait(WAIT_S)
    [attempt] = [span for span in spans if span["name"] == "durable.workflow traced_steps"]
    context = request.get_span_context()
    assert attempt["pid"] != os.getpid() and attempt["pid"] == worker.pid
    assert attempt["trace_id"] == format(context.trace_id, "032x")
    assert attempt["parent_span_id"] == format(context.span_id, "016x")
    assert attempt["attributes"]["durable.worker.id"] == "traced-worker"
    steps = [span for span in spans if span["name"].startswith("durable.step ")]
    assert sorted(span["name"] for span in steps) == ["durable.step add#1", "durable.step double#1"]
    assert {span["parent_span_id"] for span in steps} == {attempt["span_id"]}


def _worker_spans(path: Path, count: int) -> list[dict[str, Any]] | None:
    spans = read_spans(str(path))
    return spans if len(spans) >= count else None
