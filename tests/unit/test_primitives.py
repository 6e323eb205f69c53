"""Durable primitives (sleep, recorded values, patches, messages, events) through real runs on a SQLite file (``Client.run_here``).

A crash is a ``halt`` step raising SimulatedCrash (tests/apps/core_flows.py): the workflow
stays RUNNING with its history, and the next ``run_here`` replays it.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from durable_workers import Client, DurableError, InputError, InvalidStateError, WorkflowNotFound
from tests.apps import primitive_flows
from tests.apps.core_flows import SimulatedCrash, calls_of

pytestmark = pytest.mark.timeout(30)


def _steps(db_path: Path, workflow_id: str) -> list[tuple[str, str | None]]:
    with closing(sqlite3.connect(db_path)) as con:
        return con.execute(
            "SELECT step_key, output FROM steps WHERE workflow_id = ? ORDER BY seq", (workflow_id,)
        ).fetchall()


def test_a_foreground_run_sleeps_in_process_and_runs_each_step_once(client: Client, db_path: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    record, outcome = client.run_here("sleep_flow", "s1", {"calls": str(calls), "seconds": 0.3})
    assert record.status == "COMPLETED" and record.result == "woke"
    assert calls_of(calls) == ["before", "after"]
    keys = [key for key, _ in _steps(db_path, "s1")]
    assert keys == ["before#1", "durable:sleep#1", "after#1"]
    wake_at = json.loads(_steps(db_path, "s1")[1][1])
    assert wake_at >= record.created_at + 0.3


def test_recorded_values_are_the_same_on_replay(client: Client, db_path: Path, tmp_path: Path) -> None:
    halt_file = tmp_path / "halt"
    halt_file.touch()
    with pytest.raises(SimulatedCrash):
        client.run_here("recorded_values_flow", "r1", {"halt_file": str(halt_file)})
    first = [json.loads(output) for key, output in _steps(db_path, "r1") if key.startswith("durable:")]
    assert len(first) == 3 and isinstance(first[1], str) and 0 <= first[2] < 1
    halt_file.unlink()
    record, _ = client.run_here("recorded_values_flow", "r1")
    assert record.status == "COMPLETED" and record.result == first


def test_user_steps_cannot_take_reserved_names(client: Client) -> None:
    from durable_workers import keys

    with pytest.raises(DurableError, match="reserved"):
        keys.check_name("durable:sleep")


@pytest.fixture
def version():
    saved = primitive_flows.CODE_VERSION
    yield lambda v: setattr(primitive_flows, "CODE_VERSION", v)
    primitive_flows.CODE_VERSION = saved


def _crash(client: Client, workflow_id: str, calls: Path, halt_file: Path) -> None:
    halt_file.touch()
    with pytest.raises(SimulatedCrash):
        client.run_here("patch_flow", workflow_id, {"calls": str(calls), "halt_file": str(halt_file)})
    halt_file.unlink()


def test_patched_is_false_replaying_a_history_from_before_the_patch(client: Client, db_path: Path, tmp_path: Path, version) -> None:
    calls, halt_file = tmp_path / "calls", tmp_path / "halt"
    version(1)
    _crash(client, "old", calls, halt_file)
    version(2)
    record, _ = client.run_here("patch_flow", "old")
    assert record.status == "COMPLETED" and record.result == "old"
    assert calls_of(calls) == ["a", "b"]
    assert not [key for key, _ in _steps(db_path, "old") if key.startswith("durable:")]


def test_patched_is_true_for_new_runs_and_on_their_replay(client: Client, db_path: Path, tmp_path: Path, version) -> None:
    calls, halt_file = tmp_path / "calls", tmp_path / "halt"
    version(2)
    _crash(client, "new", calls, halt_file)
    record, _ = client.run_here("patch_flow", "new")
    assert record.status == "COMPLETED" and record.result == "new"
    assert [key for key, _ in _steps(db_path, "new")][:3] == ["a#1", "durable:patch:use-new#1", "new#1"]


def test_deprecate_patch_accepts_histories_with_and_without_the_marker(client: Client, tmp_path: Path, version) -> None:
    calls, halt_file = tmp_path / "calls", tmp_path / "halt"
    version(2)
    _crash(client, "marked", calls, halt_file)
    version(3)
    record, _ = client.run_here("patch_flow", "marked")
    assert record.status == "COMPLETED" and record.result == "new"
    record, _ = client.run_here("patch_flow", "fresh", {"calls": str(calls)})
    assert record.status == "COMPLETED" and record.result == "new"


def test_sleeping_parallel_branches_resume_after_their_wakes_and_run_each_step_once(client: Client, db_path: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    record, _ = client.run_here("parallel_sleep_flow", "p1", {"calls": str(calls)})
    assert record.status == "COMPLETED" and record.result == ["short", "long", "none"]
    labels = calls_of(calls)
    assert sorted(labels) == sorted(
        ["short-before", "short-after", "long-before", "long-after", "none-before", "none-after", "last"]
    )
    assert labels[-1] == "last"
    sleeps = [key for key, _ in _steps(db_path, "p1") if "durable:sleep" in key]
    assert len(sleeps) == 2


def test_status_shows_when_a_waiting_workflow_wakes() -> None:
    from dataclasses import replace

    from durable_workers.cli_format import sleeping_note
    from durable_workers.records import WorkflowRecord

    base = WorkflowRecord.from_values(
        {"id": "w", "name": "n", "input": "{}", "status": "WAITING", "result": None, "error": None, "attempts": 0,
         "run_at": 0.0, "created_at": 0.0, "updated_at": 0.0, "crash_at": None, "wake_at": 1_800_000_123.0}
    )  # fmt: skip
    assert sleeping_note(base, 1_800_000_000.0) == "sleeping until 2027-01-15T08:02:03Z (in 2m3s)"
    assert sleeping_note(base, 1_800_000_200.0) == "sleeping until 2027-01-15T08:02:03Z (due now)"
    assert sleeping_note(replace(base, status="PENDING"), 0.0) == ""


def _keys(db_path: Path, workflow_id: str) -> list[str]:
    with closing(sqlite3.connect(db_path)) as con:
        rows = con.execute("SELECT step_key FROM steps WHERE workflow_id = ? ORDER BY seq", (workflow_id,))
        return [key for (key,) in rows]


def test_a_receive_without_a_message_waits_and_a_send_lets_it_finish(client: Client, db_path: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    record, outcome = client.run_here("approval_flow", "a1", {"calls": str(calls)})
    assert record.status == "WAITING" and outcome is not None and outcome.status == "WAITING"
    assert client.lease("a1") is None or client.lease("a1").worker_id is None  # type: ignore[union-attr]
    assert client.get_event("a1", "decision") is None
    [verdict] = client.check_replay()
    assert verdict.ok and "would wait for a message on 'approval'" in verdict.detail
    client.send("a1", "approval", {"ok": True})
    record, _ = client.run_here("approval_flow", "a1")
    assert record.status == "COMPLETED" and record.result == {"ok": True}
    assert calls_of(calls) == ["before", "after"]
    assert _keys(db_path, "a1") == ["before#1", "durable:recv-wait#1", "durable:recv#1", "durable:event:decision#1", "after#1"]
    assert client.get_event("a1", "decision") == {"ok": True} and client.events("a1") == {"decision": {"ok": True}}


def test_a_receive_with_a_timeout_returns_none_in_a_foreground_run(client: Client, tmp_path: Path) -> None:
    record, _ = client.run_here("approval_flow", "t1", {"calls": str(tmp_path / "c"), "timeout": 0.2})
    assert record.status == "COMPLETED" and record.result is None


def test_bad_sends_are_refused(client: Client, tmp_path: Path) -> None:
    with pytest.raises(WorkflowNotFound):
        client.send("nope", "approval")
    client.run_here("approval_flow", "done", {"calls": str(tmp_path / "c"), "timeout": 0})
    with pytest.raises(InvalidStateError):
        client.send("done", "approval", 1)
    with pytest.raises(InputError):
        client.send("done", "", 1)
    with pytest.raises(InputError):
        client.send("done", "approval", object())
