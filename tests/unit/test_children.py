"""Child workflows and deadlines through real in-process runs on a SQLite file (``Client.run_here``).

Replay returns the same child; a failed child fails a parent that does not catch it, with the
wait as the failed step; a taken id, a non-workflow and typed results; a parent waiting on a
child in ``check-replay``; a deadline that only the worker knows (``@workflow(timeout=)``).
The fleet and PostgreSQL forms are tests/integration/test_fleet_children.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from durable_workers import Client, default_registry
from durable_workers.replaycheck import check_replay
from tests.apps import child_flows  # noqa: F401  (registers the workflows)
from tests.apps.core_flows import SimulatedCrash, calls_of

pytestmark = pytest.mark.timeout(60)


def test_replay_returns_the_same_child_and_starts_no_second_one(client: Client, tmp_path: Path) -> None:
    halt_file, calls = tmp_path / "halt", tmp_path / "calls"
    halt_file.touch()
    with pytest.raises(SimulatedCrash):
        client.run_here("child_then_halt", "p", {"calls": str(calls), "halt_file": str(halt_file)})
    assert [c.id for c in client.children("p")] == ["p/child:child_device#1"]
    halt_file.unlink()
    record, _ = client.run_here("child_then_halt", "p")
    assert record.status == "COMPLETED" and record.result == {"device": "tablet", "status": "tablet-ok"}
    assert [c.status for c in client.children("p")] == ["COMPLETED"]
    assert calls_of(calls) == ["provision-tablet"]


def test_an_uncaught_child_failure_fails_the_parent_at_the_wait(client: Client, tmp_path: Path) -> None:
    record, _ = client.run_here("strict_parent", "p", {"calls": str(tmp_path / "calls")})
    assert record.status == "FAILED"
    assert record.error.splitlines()[0] == (
        "ChildFailedError: child workflow p/child:child_device#1 ended FAILED: RuntimeError: no stock for broken"
    )
    assert record.failed_step == "durable:child-result#1"  # what `durable retry` drops: the wait is asked again


def test_a_child_id_taken_by_another_workflow_fails_the_start_step(client: Client, tmp_path: Path) -> None:
    client.submit("child_device", "taken", {"calls": str(tmp_path / "other"), "device": "x"})
    record, _ = client.run_here("call_flow", "p", {"calls": str(tmp_path / "calls"), "workflow_id": "taken"})
    assert record.status == "FAILED" and record.error.startswith("ConflictError: workflow id 'taken' is taken")
    assert client.children("p") == []


def test_a_function_that_is_no_workflow_is_refused_with_a_clear_error(client: Client) -> None:
    record, _ = client.run_here("bad_child_flow", "p", {})
    assert record.status == "FAILED"
    assert "pass a workflow name or an @workflow function" in record.error.splitlines()[0]


def test_a_child_result_is_decoded_into_its_annotated_type(client: Client) -> None:
    record, _ = client.run_here("typed_parent", "p", {})
    assert record.result == "Receipt:mouse:42"


def test_check_replay_stops_a_parent_waiting_on_its_child(client: Client, tmp_path: Path) -> None:
    client.submit("call_flow", "p", {"calls": str(tmp_path / "calls")})
    claim = client.store.claim_workflow("p", "w", ttl=30)
    from durable_workers.engine import run_claim

    outcome = run_claim(client.store, default_registry, claim, worker_id="w")
    assert outcome.status == "WAITING"
    verdicts = {v.workflow_id: v for v in check_replay(client.store, default_registry)}
    assert verdicts["p"].outcome == "continues" and verdicts["p"].step == "durable:child-result#1"
    assert "would wait for child workflow p/child:child_device#1" in verdicts["p"].detail


def test_a_deadline_only_the_worker_knows_still_cancels_the_run(client: Client, tmp_path: Path) -> None:
    """Submitted without the app (no deadline_at): the worker derives created_at + @workflow(timeout=)."""
    client.store.submit("late", "deadline_flow", '{"calls": "%s"}' % (tmp_path / "calls"), now=time.time() - 5)
    assert client.get("late").deadline_at is None
    _, outcome = client.run_here("deadline_flow", "late")
    record = client.get("late")
    assert (record.status, record.error) == ("CANCELLED", "deadline exceeded") and outcome.status == "CANCELLED"
    assert calls_of(tmp_path / "calls") == []


def test_retrying_a_parent_retries_the_failed_child_that_failed_it(client: Client, tmp_path: Path) -> None:
    fail_file, calls = tmp_path / "fail", tmp_path / "calls"
    fail_file.touch()
    record, _ = client.run_here("retry_parent", "p", {"calls": str(calls), "fail_file": str(fail_file)})
    assert record.status == "FAILED" and [c.status for c in client.children("p")] == ["FAILED"]
    fail_file.unlink()
    client.retry("p")
    assert [c.status for c in client.children("p")] == ["PENDING"]  # revived with its parent
    record, _ = client.run_here("retry_parent", "p")
    assert record.status == "COMPLETED" and record.result == "fine"
    assert calls_of(calls) == ["flaky", "flaky"]


def test_retry_after_a_deadline_renews_it_and_revives_the_cancelled_children(client: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    client.submit("deadline_parent_flow", "p", {"calls": str(tmp_path / "calls"), "gate": str(gate)}, timeout=30)
    claim = client.store.claim_workflow("p", "w", ttl=30)
    from durable_workers.engine import run_claim

    assert run_claim(client.store, default_registry, claim, worker_id="w").status == "WAITING"
    client.store.expire_deadlines(now=client.store.now() + 60)  # as the supervisor would, a minute later
    assert client.get("p").status == "CANCELLED" and [c.status for c in client.children("p")] == ["CANCELLED"]
    retried = client.retry("p")
    assert retried.deadline_at is not None and retried.deadline_at - retried.run_at == pytest.approx(30, abs=0.5)
    assert [c.status for c in client.children("p")] == ["PENDING"]
    gate.unlink()
    record, _ = client.run_here("deadline_parent_flow", "p")
    assert record.status == "COMPLETED"


def test_a_foreground_parent_run_returns_while_its_child_waits_for_a_message(client: Client) -> None:
    record, outcome = client.run_here("listening_parent", "p", {})
    assert outcome is not None and outcome.status == "WAITING"
    (child,) = client.children("p")
    assert (client.get("p").status, child.status) == ("WAITING", "WAITING")
    client.send(child.id, "go", {"ok": 1})
    record, _ = client.run_here("listening_parent", "p")
    assert record.status == "COMPLETED" and record.result == {"ok": 1}
