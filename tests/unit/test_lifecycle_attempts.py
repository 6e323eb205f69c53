"""Attempt endings, integrity and semantics in one process (issue 8, items 1, 2, 6, 8, 13, 16-19).

Each test runs workflows of tests/apps/lifecycle_flows.py on its own SQLite file, through
``Client.run_here`` (the code path of ``durable run``) or an in-process ``WorkerProcess``, and
checks the rows the store recorded.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from durable_workers import Client, DurableError, default_registry
from durable_workers.backends import Store, open_store
from durable_workers.keys import idempotency_key
from durable_workers.registry import Registry
from durable_workers.worker import WorkerOptions, WorkerProcess
from tests.apps.core_flows import SimulatedCrash, calls_of
from tests.integration.fleet_support import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(db_path: Path):
    opened = Client(db=str(db_path), registry=default_registry)
    yield opened
    opened.close()


def raw(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path, timeout=30)) as con:
        rows = con.execute(sql, params).fetchall()
        con.commit()
        return rows


def lease_holder(db_path: Path, workflow_id: str) -> Any:
    rows = raw(db_path, "SELECT worker_id FROM leases WHERE workflow_id = ?", (workflow_id,))
    return rows[0][0] if rows else None


# --------------------------------------------------------------------------- item 1: foreign BaseExceptions


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "CancelledError", "GeneratorExit"])
def test_foreign_base_exception_in_a_step_is_that_steps_recorded_failure(client, tmp_path, db_path, kind) -> None:
    calls = str(tmp_path / "calls")
    halt_file = tmp_path / "halt"
    halt_file.touch()
    with pytest.raises(SimulatedCrash):
        client.run_here("life_foreign_step", "wf", {"calls": calls, "kind": kind, "halt_file": str(halt_file)})
    rows = {r.step_key: r for r in client.store.load_steps("wf")}
    assert rows["boom#1"].status == "FAILED" and kind in (rows["boom#1"].error or "")
    halt_file.unlink()
    record, _ = client.run_here("life_foreign_step", "wf", {"calls": calls, "kind": kind, "halt_file": str(halt_file)})
    assert record.status == "COMPLETED", record.error
    # First run and replay saw the same catchable StepFailedError; the step ran once.
    assert record.result["seen"]["type"] == "StepFailedError"
    assert record.result["seen"]["error_type"].endswith(kind)
    assert calls_of(calls) == ["boom", "fallback"]
    assert lease_holder(db_path, "wf") is None


def test_uncaught_foreign_base_exception_fails_the_workflow_and_releases_the_lease(client, tmp_path, db_path) -> None:
    record, outcome = client.run_here("life_foreign_step", "wf", {"calls": str(tmp_path / "c"), "kind": "SystemExit", "catch": False})
    assert record.status == "FAILED" and outcome.status == "FAILED"
    assert record.error.startswith("StepFailedError: step boom#1 failed: builtins.SystemExit")
    assert lease_holder(db_path, "wf") is None


def test_foreign_base_exception_in_the_workflow_body_fails_it_with_the_lease_released(client, tmp_path, db_path) -> None:
    record, _ = client.run_here("life_foreign_body", "wf", {"calls": str(tmp_path / "c")})
    assert record.status == "FAILED" and record.error.startswith("SystemExit: 3")
    assert lease_holder(db_path, "wf") is None


# --------------------------------------------------------------------------- item 2: heartbeat of exact pairs


def test_heartbeat_renews_exactly_the_given_pairs_and_reports_the_lost_ones(store: Store) -> None:
    for wf in ("a", "b"):
        store.submit(wf, "n", "{}")
    store.register_worker("w", names=["n"])
    a = store.claim_next("w", ["n"], ttl=30)
    b = store.claim_next("w", ["n"], ttl=30)
    before = store.get_lease(b.workflow.id).expires_at
    # Only a's attempt is alive; b's ended without releasing: its lease must not be renewed.
    assert store.heartbeat("w", ttl=60, leases=[(a.workflow.id, a.token)]) == []
    assert store.get_lease(b.workflow.id).expires_at == before
    store.cancel(a.workflow.id)  # takes the lease away
    assert store.heartbeat("w", ttl=60, leases=[(a.workflow.id, a.token)]) == [a.workflow.id]


def test_an_attempt_whose_lease_is_gone_stops_at_once_even_in_a_long_retry_backoff(tmp_path, db_path) -> None:
    store = open_store(db_path)
    client = Client(db=str(db_path), registry=default_registry)
    client.submit("life_slow_retry", "wf", {"calls": str(tmp_path / "calls"), "backoff": 60.0})
    worker = WorkerProcess(store, default_registry, WorkerOptions(ttl=0.3, poll_max=0.05))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: calls_of(str(tmp_path / "calls")) == ["flaky"], 20, "the first failed call")
        wait_for(lambda: worker.attempts.count() == 1, 20, "the attempt waiting in its back-off")
        client.cancel("wf")
        # The heartbeat (every 0.1 s) finds the lease gone and wakes the attempt: far sooner than 60 s.
        wait_for(lambda: worker.attempts.count() == 0, 20, "the attempt to stop")
        assert [o.status for o in worker.outcomes] == ["LOST"]
        assert calls_of(str(tmp_path / "calls")) == ["flaky"]
    finally:
        worker.request_stop()
        thread.join(30)


# --------------------------------------------------------------------------- item 6: corrupt records


def test_a_corrupt_input_at_the_head_of_the_queue_fails_that_workflow_and_the_queue_flows(tmp_path, db_path) -> None:
    store = open_store(db_path)
    client = Client(db=str(db_path), registry=default_registry)
    client.submit("life_pair", "bad", {"calls": str(tmp_path / "bad")})
    client.submit("life_pair", "good", {"calls": str(tmp_path / "good")})
    raw(db_path, "UPDATE workflows SET input = '{not json' WHERE id = 'bad'")
    worker = WorkerProcess(store, default_registry, WorkerOptions(ttl=5))
    worker.initialize()
    try:
        ended = lambda: all(client.get(w).status in ("COMPLETED", "FAILED") for w in ("bad", "good"))
        wait_for(lambda: worker.loop_once() and False or ended(), 20, "both workflows to end")
    finally:
        worker.shutdown()
    bad, good = client.get("bad"), client.get("good")
    assert bad.status == "FAILED" and "CorruptRecordError" in bad.error and "input of workflow bad" in bad.error
    assert good.status == "COMPLETED"
    assert bad.corrupt == ("input",)


def test_a_corrupt_step_output_fails_loudly_and_is_not_catchable(client, tmp_path, db_path) -> None:
    halt_file = tmp_path / "halt"
    halt_file.touch()
    inputs = {"calls": str(tmp_path / "calls"), "halt_file": str(halt_file)}
    with pytest.raises(SimulatedCrash):
        client.run_here("life_guarded_pair", "wf", inputs)
    raw(db_path, "UPDATE steps SET output = 'garbage{' WHERE step_key = 'a#1'")
    halt_file.unlink()
    record, _ = client.run_here("life_guarded_pair", "wf", inputs)
    assert record.status == "FAILED"
    assert record.error.splitlines()[0] == (
        "CorruptRecordError: corrupt record: output of step a#1 of workflow wf does not decode "
        "(Expecting value: line 1 column 1 (char 0))"
    )


def test_a_corrupt_step_error_fails_loudly(client, tmp_path, db_path) -> None:
    halt_file = tmp_path / "halt"
    halt_file.touch()
    inputs = {"calls": str(tmp_path / "calls"), "local": False, "halt_file": str(halt_file)}
    with pytest.raises(SimulatedCrash):
        client.run_here("life_kw_error", "wf", inputs)
    raw(db_path, "UPDATE steps SET error = 'plain words' WHERE step_key = 'fail#1'")
    halt_file.unlink()
    record, _ = client.run_here("life_kw_error", "wf", inputs)
    assert record.status == "FAILED" and "error of step fail#1 of workflow wf" in record.error


# --------------------------------------------------------------------------- item 8: idempotency keys


def test_idempotency_keys_are_unambiguous_for_workflow_ids_with_slashes(client) -> None:
    assert idempotency_key("w/parallel#1/0", "x#1") != idempotency_key("w", "parallel#1/0/x#1")
    assert idempotency_key("a%2Fb", "x#1") != idempotency_key("a/b", "x#1")
    record, _ = client.run_here("life_keys", "order/7", {})
    assert record.result == "order%2F7/x#1"


# --------------------------------------------------------------------------- item 13: replayed timeouts


def test_a_replayed_step_timeout_does_not_drain_the_worker(tmp_path, db_path) -> None:
    store = open_store(db_path)
    client = Client(db=str(db_path), registry=default_registry)
    halt_file = tmp_path / "halt"
    halt_file.touch()
    client.submit("life_caught_timeout", "wf", {"calls": str(tmp_path / "calls"), "halt_file": str(halt_file)})

    def one_attempt() -> WorkerProcess:
        worker = WorkerProcess(store, default_registry, WorkerOptions(ttl=1))
        worker.initialize()
        try:  # after the live overrun, the held lease expires by its TTL before anyone may claim
            wait_for(worker.loop_once, 15, "a claim of the workflow")
        finally:
            worker.shutdown()  # waits for the attempt
        return worker

    live = one_attempt()
    # The live overrun drains its worker; before its next step the attempt stops and keeps its
    # lease until the worker is gone (the timed-out thread may still run in that process).
    assert live.stopping.is_set() and [(o.status, o.hold) for o in live.outcomes] == [("ABANDONED", True)]
    replay = one_attempt()  # replays the recorded timeout, runs `after`, then crashes at `halt`
    assert not replay.stopping.is_set() and list(replay.outcomes) == []
    assert calls_of(str(tmp_path / "calls")) == ["after"]
    halt_file.unlink()
    record, _ = client.run_here("life_caught_timeout", "wf", {"calls": str(tmp_path / "calls"), "halt_file": str(halt_file)})
    assert record.status == "COMPLETED" and record.result == {"slow": "timed out"}


# --------------------------------------------------------------------------- item 16: clock jumps


def test_a_wall_clock_jump_does_not_hand_a_live_holders_lease_to_another_worker(store: Store, tmp_path) -> None:
    store.submit("wf", "n", "{}")
    store.register_worker("holder", names=["n"], ttl=5)
    store.register_worker("other", names=["n"], ttl=5)
    claim = store.claim_next("holder", ["n"], ttl=5)
    assert store.heartbeat("holder", ttl=5, leases=[("wf", claim.token)]) == []
    jumped = time.time() + 120  # the wall clock jumps; the holder (this process) lives and renews
    assert store.claim_next("other", ["n"], ttl=5, now=jumped) is None
    lease = store.get_lease("wf")
    assert (lease.worker_id, lease.token) == ("holder", claim.token)

    # A holder whose process is gone gets no such protection.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.register_worker("ghost", names=["n"], ttl=5, pid=None)
    raw_db = Path(store.path)
    store.submit("wf2", "n", "{}")
    ghost = store.claim_next("ghost", ["n"], ttl=5)
    raw(raw_db, "UPDATE workers SET pid = ? WHERE id = 'ghost'", (dead.pid,))
    taken = store.claim_next("other", ["n"], ttl=5, now=time.time() + 120)
    assert taken is not None and taken.workflow.id == ghost.workflow.id and taken.token == ghost.token + 1


# --------------------------------------------------------------------------- item 17: retry


def test_retry_after_a_caught_failure_keeps_the_branch_and_reruns_only_the_ending_failure(client, tmp_path) -> None:
    calls, flag = str(tmp_path / "calls"), tmp_path / "flag"
    flag.touch()
    record, _ = client.run_here("life_fallback", "wf", {"calls": calls, "flag": str(flag)})
    assert record.status == "FAILED" and "mail server down" in record.error
    flag.unlink()
    client.retry("wf")
    record, _ = client.run_here("life_fallback", "wf", {"calls": calls, "flag": str(flag)})
    assert record.status == "COMPLETED", record.error
    assert record.result == {"branch": "refunded", "notify": "sent"}
    assert calls_of(calls) == ["charge", "refund", "notify", "notify"]


# --------------------------------------------------------------------------- item 18: scopes


def test_ctx_step_from_a_thread_pool_is_refused_naming_ctx_parallel(client) -> None:
    record, _ = client.run_here("life_pool_steps", "wf", {})
    assert record.status == "FAILED"
    assert "ctx.parallel" in record.error.splitlines()[0] and "thread the workflow did not start" in record.error
    assert client.steps("wf") == []


def test_ctx_step_from_a_plain_thread_is_refused(client) -> None:
    record, _ = client.run_here("life_thread_step", "wf", {})
    assert record.status == "COMPLETED" and "ctx.parallel" in record.result


@pytest.mark.parametrize("where", ["parallel-in-step", "step-in-branch-step", "step-in-timed-step"])
def test_nesting_inside_a_running_step_is_refused(client, where) -> None:
    record, _ = client.run_here("life_nested", "wf", {"where": where})
    assert record.status == "FAILED"
    assert "steps cannot nest" in record.error.splitlines()[0], record.error


def test_a_step_called_outside_any_workflow_is_refused(client) -> None:
    from durable_workers.context import Context

    ctx = Context(workflow_id="x", store=client.store, worker_id="w", token=1)
    with pytest.raises(DurableError, match="ctx.parallel"):
        ctx.step("s", lambda: 1)


# --------------------------------------------------------------------------- item 19: exceptions


def test_keyword_only_exceptions_are_raised_as_themselves_on_first_run_and_replay(client, tmp_path) -> None:
    halt_file = tmp_path / "halt"
    halt_file.touch()
    inputs = {"calls": str(tmp_path / "calls"), "halt_file": str(halt_file)}
    with pytest.raises(SimulatedCrash):
        client.run_here("life_kw_error", "wf", inputs)
    halt_file.unlink()
    record, _ = client.run_here("life_kw_error", "wf", inputs)
    assert record.result == {"type": "LifeKeywordError", "code": 7}
    assert calls_of(inputs["calls"]) == ["fail"]


def test_an_unimportable_exception_replays_as_step_failed_error_with_its_attributes(client, tmp_path) -> None:
    halt_file = tmp_path / "halt"
    halt_file.touch()
    inputs = {"calls": str(tmp_path / "calls"), "local": True, "halt_file": str(halt_file)}
    with pytest.raises(SimulatedCrash):
        client.run_here("life_kw_error", "first", inputs)
    first_run = client.store.load_steps("first")
    assert first_run[0].status == "FAILED"
    halt_file.unlink()
    record, _ = client.run_here("life_kw_error", "first", inputs)
    assert record.result == {"type": "StepFailedError", "code": 9}


# --------------------------------------------------------------------------- item 6: read commands


def test_read_commands_mark_corrupt_rows_instead_of_crashing(client, tmp_path, db_path) -> None:
    from tests.conftest import run_cli

    client.run_here("life_pair", "wf", {"calls": str(tmp_path / "calls")})
    client.submit("life_pair", "bad", {"calls": str(tmp_path / "bad")})
    raw(db_path, "UPDATE steps SET output = 'garbage{' WHERE step_key = 'a#1'")
    raw(db_path, "UPDATE workflows SET result = 'nope[' WHERE id = 'wf'")
    raw(db_path, "UPDATE workflows SET input = '{x' WHERE id = 'bad'")
    for args in (["status"], ["status", "--json"], ["status", "wf"], ["status", "wf", "--json"],
                 ["status", "bad"], ["steps", "wf"], ["steps", "wf", "--json"]):
        shown = run_cli(*args, db=db_path)
        assert shown.returncode == 0, (args, shown.stderr)
        assert "Traceback" not in shown.stderr
    detail = json.loads(run_cli("status", "wf", "--json", db=db_path).stdout)
    assert detail["corrupt"] == ["result"] and detail["result"] == "<corrupt: does not decode>"
    assert [s["corrupt"] for s in detail["steps"]] == [["output"], []]
    assert "<corrupt: does not decode>" in run_cli("steps", "wf", db=db_path).stdout
    assert "input: <corrupt: does not decode>" in run_cli("status", "bad", db=db_path).stdout


# --------------------------------------------------------------------------- item 16: process identity


def test_process_identity_is_counted_from_boot_not_from_the_wall_clock() -> None:
    """psutil's create time is boot time + start ticks, and boot time is re-derived from the wall
    clock, so a clock step moved every recorded create time; the kernel's start ticks do not move."""
    import os

    import psutil

    from durable_workers.liveness import process_alive, process_start_time

    with open("/proc/self/stat", "rb") as handle:
        ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
    started = process_start_time(os.getpid())
    assert started == ticks / os.sysconf("SC_CLK_TCK")
    assert started < time.time() - psutil.boot_time() + 1  # seconds since boot, not since the epoch
    assert process_alive(os.getpid(), started)


def test_reaping_leaves_the_workers_a_supervisor_excludes_alone(store: Store) -> None:
    from durable_workers.liveness import reap_dead_workers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for worker_id in ("mine", "stranger"):
        store.register_worker(worker_id, names=["n"])
        raw(Path(store.path), "UPDATE workers SET pid = ? WHERE id = ?", (dead.pid, worker_id))
    reaped = reap_dead_workers(store, stale_after=60, exclude={"mine"})
    assert [worker.id for worker, _ in reaped] == ["stranger"]
    assert store.get_worker("mine").state == "running"


@pytest.mark.parametrize("where", ["step", "body"])
def test_an_exception_whose_str_raises_still_ends_the_attempt_with_one_outcome(client, db_path, where) -> None:
    record, outcome = client.run_here("life_broken_str", "wf", {"where": where})
    assert record.status == "FAILED" and outcome.status == "FAILED"
    assert "LifeBrokenStr" in record.error.splitlines()[0] and "str() failed" in record.error.splitlines()[0]
    assert lease_holder(db_path, "wf") is None
