"""ctx.recv, ctx.set_event and the client's send / get_event through real runs on a SQLite file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from durable_workers import Client, InputError, InvalidStateError, WorkflowNotFound, default_registry
from tests.apps import primitive_flows  # noqa: F401  (registers approval_flow)
from tests.apps.core_flows import calls_of

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def client(db_path: Path):
    opened = Client(db=str(db_path), registry=default_registry)
    yield opened
    opened.close()


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
