"""Messages and events through a real fleet, on SQLite and PostgreSQL (``on_both_backends``).

``approval_flow`` (tests/apps/primitive_flows.py) records a step, waits for a message
on 'approval', publishes it as the event 'decision' and records another step. While
it waits it holds no lease; ``durable send`` wakes it; a timeout returns None; a
worker SIGKILLed after consuming the message but before recording it loses nothing
and delivers nothing twice. Tests wait on database rows, never on fixed sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apps.core_flows import calls_of
from tests.conftest import run_cli
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    APP,
    cli_cwd,
    fleet,
    on_both_backends,
    query,
    submit,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(180)]


def _cli(db, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, db=db, app=APP, cwd=cli_cwd(db))


def _waiting_without_lease(db, workflow_id: str) -> bool:  # type: ignore[no-untyped-def]
    row = query(db, f"SELECT status FROM workflows WHERE id = '{workflow_id}'")
    if not row or row[0]["status"] != "WAITING":
        return False
    held = query(db, f"SELECT count(*) AS n FROM leases WHERE workflow_id = '{workflow_id}' AND worker_id IS NOT NULL")
    assert held[0]["n"] == 0, "a workflow waiting for a message still holds a lease"
    return True


def _result(db, workflow_id: str):  # type: ignore[no-untyped-def]
    return json.loads(query(db, f"SELECT result FROM workflows WHERE id = '{workflow_id}'")[0]["result"])


def test_a_waiting_workflow_holds_no_lease_and_durable_send_wakes_it(fleet, tmp_path: Path) -> None:
    fleet.start(workers=2)
    submit(fleet.db, "approval_flow", "ask", {"calls": str(tmp_path / "ask")})
    wait_for(lambda: _waiting_without_lease(fleet.db, "ask"), 60, "WAITING for approval, no lease held")
    shown = _cli(fleet.db, "status", "ask")
    assert "waiting for a message on 'approval' with no timeout" in shown.stdout, shown.stdout
    for _ in range(2):  # the same key twice: one message
        sent = _cli(fleet.db, "send", "ask", "approval", "--payload", '{"ok": true}', "--key", "k")
        assert sent.returncode == 0, sent.stderr
    wait_status(fleet.db, ["ask"], "COMPLETED", 60)
    assert _result(fleet.db, "ask") == {"ok": True}
    assert calls_of(tmp_path / "ask") == ["before", "after"]
    assert len(query(fleet.db, "SELECT id FROM messages WHERE workflow_id = 'ask'")) == 1
    events = _cli(fleet.db, "events", "ask", "--json")
    assert json.loads(events.stdout) == {"decision": {"ok": True}}
    late = _cli(fleet.db, "send", "ask", "approval")
    assert late.returncode != 0 and late.stderr.startswith("Error: ") and "Traceback" not in late.stderr


def test_recv_with_a_timeout_returns_none(fleet, tmp_path: Path) -> None:
    fleet.start(workers=1)
    submit(fleet.db, "approval_flow", "late", {"calls": str(tmp_path / "late"), "timeout": 1.0})
    wait_status(fleet.db, ["late"], "COMPLETED", 60)
    assert _result(fleet.db, "late") is None
    assert calls_of(tmp_path / "late") == ["before", "after"]


def test_a_worker_killed_after_consuming_before_recording_loses_nothing(fleet, tmp_path: Path) -> None:
    """SIGKILL after the message is consumed, before ``durable:recv`` is recorded: the next attempt gets the same one."""
    submit(fleet.db, "approval_flow", "crashed", {"calls": str(tmp_path / "crashed")}, "--crash-at", "durable:recv:before")
    for payload in ("1", "2"):  # sent while PENDING: the first attempt finds them and dies after consuming "1"
        assert _cli(fleet.db, "send", "crashed", "approval", "--payload", payload).returncode == 0
    fleet.start(workers=2)
    wait_status(fleet.db, ["crashed"], "COMPLETED", 90)
    assert _result(fleet.db, "crashed") == 1
    consumed = query(fleet.db, "SELECT payload FROM messages WHERE workflow_id = 'crashed' AND consumed_by_step IS NOT NULL")
    assert [r["payload"] for r in consumed] == ["1"]  # the second one is still there, not delivered
    assert query(fleet.db, "SELECT attempts FROM workflows WHERE id = 'crashed'")[0]["attempts"] >= 2
