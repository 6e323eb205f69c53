"""Core engine in one process: memoization, step keys, determinism, retries, failures, JSON rule.

Workflows live in tests/apps/core_flows.py. Each test runs them on its own SQLite file through
``Client.run_here`` (the code path of ``durable run``). A crash is simulated by a ``halt`` step
raising :class:`SimulatedCrash` (a BaseException nothing catches): its row stays RUNNING and the
workflow stays RUNNING, exactly what ``kill -9`` leaves behind; the next ``run_here`` resumes it.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from durable_workers import Client, StepPolicy
from durable_workers.context import StepEvent
from durable_workers.codec import summarize_error
from durable_workers.records import WorkflowRecord
from tests.apps import core_flows
from tests.apps.core_flows import SimulatedCrash, calls_of

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def halt_file(tmp_path: Path) -> Path:
    """While this file exists, a workflow's ``halt`` step crashes the run."""
    path = tmp_path / "halt"
    path.touch()
    return path


def run(client: Client, name: str, workflow_id: str, **inputs: Any) -> tuple[WorkflowRecord, list[StepEvent]]:
    """Run or resume a workflow here; return its final row and this run's step events."""
    events: list[StepEvent] = []
    record, _ = client.run_here(name, workflow_id, inputs, listener=events.append)
    return record, events


def crash(client: Client, name: str, workflow_id: str, **inputs: Any) -> list[StepEvent]:
    """Run a workflow until its ``halt`` step crashes the run."""
    events: list[StepEvent] = []
    with pytest.raises(SimulatedCrash):
        client.run_here(name, workflow_id, inputs, listener=events.append)
    return events


def keys_of(events: list[StepEvent], kind: str) -> list[str]:
    return sorted(e.step_key for e in events if e.kind == kind)


def statuses(client: Client, workflow_id: str) -> dict[str, str]:
    return {r.step_key: r.status for r in client.store.load_steps(workflow_id)}


def raw_steps(db_path: Path) -> list[tuple]:
    """Every column of every step row, read with plain sqlite3 (independent of the store)."""
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT * FROM steps ORDER BY workflow_id, step_key").fetchall()


# --------------------------------------------------------------------------- memoization


def test_completed_steps_are_not_executed_again_on_replay(client: Client, tmp_path: Path, halt_file: Path) -> None:
    inputs = {"calls": str(tmp_path / "calls"), "halt_file": str(halt_file)}
    crash(client, "core_counted", "wf", **inputs)
    recorded = {r.step_key: r for r in client.store.load_steps("wf")}
    assert statuses(client, "wf") == {"first#1": "COMPLETED", "second#1": "COMPLETED", "halt#1": "RUNNING"}

    halt_file.unlink()
    record, events = run(client, "core_counted", "wf", **inputs)

    assert record.status == "COMPLETED"
    assert calls_of(inputs["calls"]) == ["first", "second"]
    # The values (random tokens) are the recorded ones, not fresh executions.
    assert record.result == {
        "first": json.loads(recorded["first#1"].output),
        "second": json.loads(recorded["second#1"].output),
    }
    assert keys_of(events, "replayed") == ["first#1", "second#1"]
    assert keys_of(events, "started") == ["halt#1"]

    # A finished workflow is not run again at all.
    again, outcome = client.run_here("core_counted", "wf", inputs)
    assert outcome is None and again.result == record.result
    assert calls_of(inputs["calls"]) == ["first", "second"]


# --------------------------------------------------------------------------- step keys

#: step_key -> (scope, position) for everything core_shapes records outside the root scope.
BRANCH_KEYS = {
    "parallel#1/0/provision_laptop#1": ("parallel#1/0/", 0),
    "parallel#1/0/ping#1": ("parallel#1/0/", 1),
    "parallel#1/0/ping#2": ("parallel#1/0/", 2),
    "parallel#1/1/parallel#1/0/x#1": ("parallel#1/1/parallel#1/0/", 0),
    "parallel#1/1/parallel#1/1/x#1": ("parallel#1/1/parallel#1/1/", 0),
    "parallel#1/1/after_inner#1": ("parallel#1/1/", 0),
    "parallel#2/0/notify#1": ("parallel#2/0/", 0),
    "parallel#2/1/notify#1": ("parallel#2/1/", 0),
}


def shape_keys(big: bool) -> dict[str, tuple[str, int]]:
    root = ["charge#1", "charge#2", "charge#3", *(["approve#1"] if big else []), "pay#1", "finish#1", "halt#1"]
    return {key: ("", position) for position, key in enumerate(root)} | BRANCH_KEYS


@pytest.mark.timeout(60)
def test_step_keys_are_exact_and_stable_across_runs_with_thread_jitter(
    client: Client, tmp_path: Path
) -> None:
    halt_file = tmp_path / "halt"
    for index in range(20):
        big, workflow_id = index % 2 == 0, f"shapes-{index}"
        expected = shape_keys(big)
        halt_file.touch()
        crash(client, "core_shapes", workflow_id, big=big, halt_file=str(halt_file))
        rows = client.store.load_steps(workflow_id)
        assert {r.step_key: (r.scope, r.position) for r in rows} == expected, f"run {index}"
        # Each step returned ctx.step_key, so outputs agree with the keys too.
        assert all(json.loads(r.output) == r.step_key for r in rows if r.status == "COMPLETED")

        halt_file.unlink()
        record, events = run(client, "core_shapes", workflow_id, big=big, halt_file=str(halt_file))
        assert record.status == "COMPLETED", record.error
        assert keys_of(events, "replayed") == sorted(set(expected) - {"halt#1"}), f"replay of run {index}"
        assert keys_of(events, "started") == ["halt#1"]
        assert {r.step_key for r in client.store.load_steps(workflow_id)} == set(expected)


def test_automatic_step_ids_from_function_names_and_lambda_call_sites(client: Client) -> None:
    source = Path(core_flows.__file__).read_text(encoding="utf-8").splitlines()

    def call_site(marker: str) -> str:
        line = next(number for number, text in enumerate(source, 1) if marker in text)
        return f"lambda@core_flows.py:{line}"

    single, looped = call_site("AUTO-ID single lambda"), call_site("AUTO-ID looped lambda")
    record, _ = run(client, "core_auto_ids", "auto")

    assert record.status == "COMPLETED", record.error
    assert record.result == [1.5, "local", "single", 0, 1]
    assert [(r.step_key, r.name) for r in client.store.load_steps("auto")] == [
        ("core_fetch_rate#1", "core_fetch_rate"),
        ("core_auto_ids.local_helper#1", "core_auto_ids.local_helper"),
        (f"{single}#1", single),
        (f"{looped}#1", looped),
        (f"{looped}#2", looped),
    ]


def test_step_key_and_idempotency_key_inside_steps_and_empty_parallel(client: Client) -> None:
    record, _ = run(client, "core_keys_inside", "kid")

    assert record.status == "COMPLETED", record.error
    keys = ["probe#1", "probe#2", "probe#3", "parallel#1/0/probe#1"]
    assert record.result["probes"] == [[key, f"kid/{key}"] for key in keys]
    assert record.result["outside"].startswith("DurableError: ")
    assert record.result["empty"] == []
    assert sorted(statuses(client, "kid")) == sorted(keys)  # ctx.parallel() recorded nothing


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "version, named",
    [
        ("renamed", ["'b#1'", "'c#1'"]),  # a different step at position 2
        ("swapped", ["'a#1'", "'b#1'"]),  # the same steps in another order
        ("looped", ["'b#1'", "'a#2'"]),  # a step called once more instead of the next one
        ("shortened", ["b#1", "halt#1"]),  # recorded steps no longer called at all
        ("swallowed", ["'b#1'", "'c#1'"]),  # the code catches the error and goes on
    ],
)
def test_changed_workflow_code_fails_with_nondeterminism_and_changes_no_row(
    client: Client, db_path: Path, tmp_path: Path, version: str, named: list[str]
) -> None:
    version_file, calls = tmp_path / "version", tmp_path / "calls"
    version_file.write_text("v1")
    inputs = {"version_file": str(version_file), "calls": str(calls)}
    crash(client, "core_versioned", "wf", **inputs)
    before = raw_steps(db_path)
    assert statuses(client, "wf") == {"a#1": "COMPLETED", "b#1": "COMPLETED", "halt#1": "RUNNING"}

    version_file.write_text(version)
    record, events = run(client, "core_versioned", "wf", **inputs)

    assert record.status == "FAILED"
    headline = record.error.splitlines()[0]
    assert headline.startswith("NonDeterminismError: ")
    for key in named:
        assert key in headline
    assert raw_steps(db_path) == before
    assert calls_of(calls) == ["a", "b"]  # nothing ran during the diverging replay
    assert keys_of(events, "started") == []


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "name, key, extra",
    [
        ("core_retry", "flaky#1", {}),
        ("core_retry_decorated", "core_decorated_charge#1", {}),
    ],
)
@pytest.mark.parametrize("fail_times, status", [(2, "COMPLETED"), (3, "FAILED")])
def test_retries_record_attempts_and_exhaustion_records_failed(
    client: Client, tmp_path: Path, name: str, key: str, extra: dict, fail_times: int, status: str
) -> None:
    calls = tmp_path / "calls"
    record, events = run(client, name, "r", calls=str(calls), fail_times=fail_times, **extra)

    (row,) = client.store.load_steps("r")
    assert (row.step_key, row.status, row.attempts) == (key, status, 3)
    assert calls_of(calls) == ["flaky"] * 3
    last = "completed" if status == "COMPLETED" else "failed"
    assert [(e.kind, e.attempt) for e in events] == [
        ("started", 1), ("retrying", 1), ("started", 2), ("retrying", 2), ("started", 3), (last, 3),
    ]
    assert record.status == status
    if status == "COMPLETED":
        assert (record.result, row.output) == (3, "3")
    else:
        assert row.output is None
        assert summarize_error(row.error) == "ConnectionError: attempt 3 failed"
        assert record.error.splitlines()[0] == "ConnectionError: attempt 3 failed"


def test_no_retries_by_default_means_one_attempt(client: Client, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    record, _ = run(client, "core_retry", "r", calls=str(calls), fail_times=1, retries=0)
    (row,) = client.store.load_steps("r")
    assert (record.status, row.status, row.attempts, calls_of(calls)) == ("FAILED", "FAILED", 1, ["flaky"])


def test_backoff_doubles_from_its_base_up_to_the_cap() -> None:
    policy = StepPolicy(retries=5, backoff=0.01, max_backoff=0.05)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert policy.attempts_allowed() == 6
    assert core_flows.core_decorated_charge.__durable_policy__ == StepPolicy(retries=2, backoff=0.01)


# --------------------------------------------------------------------------- recorded failures


@pytest.mark.parametrize(
    "kind, type_name, message",
    [
        ("builtin", "ValueError", "card 42 declined"),
        ("custom", "CoreDeclined", "card declined with code 42"),
        # A keyword-only constructor: rebuilt without calling it, same type on both runs.
        ("opaque", "CoreOpaque", "opaque failure 7"),
    ],
)
def test_recorded_failure_replays_as_same_exception_without_running_again(
    client: Client, tmp_path: Path, halt_file: Path, kind: str, type_name: str, message: str
) -> None:
    inputs = {"calls": str(tmp_path / "calls"), "kind": kind, "halt_file": str(halt_file)}
    crash(client, "core_catcher", "wf", **inputs)
    assert statuses(client, "wf") == {"charge#1": "FAILED", "refund#1": "COMPLETED", "halt#1": "RUNNING"}

    halt_file.unlink()
    record, events = run(client, "core_catcher", "wf", **inputs)

    assert record.status == "COMPLETED", record.error
    result = record.result
    assert result["branch"] == "refund"
    assert result["seen"] == result["first_seen"]  # replay raised what the first run raised
    assert result["seen"]["type"] == type_name
    assert result["seen"]["message"].endswith(message)
    assert calls_of(inputs["calls"]) == ["charge"]
    assert keys_of(events, "replayed-failure") == ["charge#1"]
    assert keys_of(events, "replayed") == ["refund#1"]


# --------------------------------------------------------------------------- JSON rule


def test_tuple_comes_back_as_list_on_first_run_and_on_replay(client: Client, halt_file: Path) -> None:
    crash(client, "core_json", "wf", halt_file=str(halt_file))
    halt_file.unlink()
    record, events = run(client, "core_json", "wf", halt_file=str(halt_file))

    assert record.result == {"pair": [1, "two"], "first_run": "list", "this_run": "list"}
    assert keys_of(events, "replayed") == ["pair#1", "seen#1"]


@pytest.mark.parametrize("kind", sorted(core_flows.UNSERIALISABLE))
def test_unserialisable_step_result_raises_at_that_step_and_writes_no_output(
    client: Client, tmp_path: Path, kind: str
) -> None:
    calls = tmp_path / "calls"
    record, _ = run(client, "core_unserialisable", "wf", kind=kind, calls=str(calls))

    assert record.status == "COMPLETED", record.error
    assert record.result["caught"] == "NotSerializableError"
    assert "step bad#1 returned" in record.result["message"]
    (row,) = client.store.load_steps("wf")
    assert (row.step_key, row.status, row.output) == ("bad#1", "FAILED", None)
    assert summarize_error(row.error).startswith("NotSerializableError: step bad#1 returned")
    assert calls_of(calls) == ["bad"]


def test_unserialisable_workflow_result_fails_the_workflow(client: Client) -> None:
    record, _ = run(client, "core_bad_result", "wf")
    assert (record.status, record.result) == ("FAILED", None)
    assert record.error.startswith("NotSerializableError: workflow wf returned set")
