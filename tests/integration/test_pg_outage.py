"""A PostgreSQL server that goes away mid-run and comes back (issue 9, item 2).

The PostgreSQL counterpart of test_lifecycle_store_outage.py: each test has a cluster of its own
(``own_pg``: ``initdb`` + ``pg_ctl``), halted with ``pg_ctl stop -m immediate`` while a step
runs and started again on the same port. The attempt is a ``StoreUnavailable`` interrupt (for
``durable run``: one line, exit 3), the workflow's ``except Exception`` never sees it, nothing is
FAILED, and the work resumes and completes once the server is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from durable_workers.backends.postgres import PostgresStore
from durable_workers.errors import StoreUnavailable
from tests.apps.core_flows import calls_of
from tests.conftest import APPS, cli_env, pg_cluster_or_skip, run_cli
from tests.integration.fleet_support import (
    Fleet,
    Supervisor,
    cli_cwd,
    ledger_count,
    running_step,
    submit,
    wait_for,
    wait_status,
    workflow_row,
)
from tests.pg_cluster import PgCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
APP = APPS / "__init__.py"


@pytest.fixture
def own_pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster for this test alone (it is halted); skipped without PostgreSQL or
    with an external server (``DURABLE_TEST_PG_URL``: it cannot be halted), failed in CI."""
    cluster = pg_cluster_or_skip(crash_safe=True)  # a halt must not lose acknowledged commits
    if cluster.external:
        pytest.skip("an external PostgreSQL server cannot be halted by the tests")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_durable_run_when_the_server_goes_away_is_one_line_exit_3_and_a_rerun_resumes(
    tmp_path: Path, own_pg: PgCluster
) -> None:
    url = own_pg.create_database()
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    gate.touch()
    values = json.dumps({"calls": str(calls), "gate": str(gate)})
    command = [sys.executable, "-m", "durable_workers", "--db", url, "--app", str(APP),
               "run", "life_guarded", "wf", "--input", values]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=cli_cwd(url))
    try:
        wait_for(lambda: calls_of(str(calls)) == ["pay"], 60, "the step to start")
        own_pg.halt()
        gate.unlink()  # the step returns; recording its result meets a server that is gone
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 3, out + err
    assert "wf interrupted:" in out and "run the same command again to resume" in out, out
    assert "Traceback" not in out + err and "business_decision" not in out, out + err
    own_pg.resume()
    assert workflow_row(url, "wf")["status"] in ("PENDING", "RUNNING")  # not FAILED
    done = run_cli("run", "life_guarded", "wf", db=url, cwd=cli_cwd(url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls_of(str(calls)) == ["pay", "pay", "ship"]  # pay's result was never recorded
    row = workflow_row(url, "wf")
    assert row["status"] == "COMPLETED" and "business_decision" not in (row["result"] or ""), row


#: Lease TTL of the outage fleet, and how long its outage lasts once the supervisor has seen it:
#: several TTLs, so that heartbeats look stale for a while (the fault's length, not a sync).
TTL_S = 1.0
OUTAGE_S = 4 * TTL_S


def hold_outage(sup: Supervisor, seconds: float) -> None:
    """Keep the server down ``seconds`` while checking, meanwhile, that the supervisor lives."""
    until = time.monotonic() + seconds

    def over() -> bool:
        assert sup.popen.poll() is None, sup.log()[-3000:]
        return time.monotonic() >= until

    wait_for(over, seconds + 30, f"a {seconds:g} s outage")


def test_a_fleet_rides_out_a_server_outage_and_completes_the_work(tmp_path: Path, own_pg: PgCluster) -> None:
    """Supervisor and workers outlive the outage: the step's attempt is interrupted (not FAILED),
    no healthy worker is killed as frozen while nothing can be written, and the workflow completes
    once the server is back."""
    url = own_pg.create_database()
    fleet = Fleet(tmp_path, url)
    try:
        sup = fleet.start(workers=2, ttl=TTL_S)
        workers = sorted(sup.worker_pids())
        ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
        submit(url, "fleet_hold", "wf", {"ledger": str(ledger), "release": str(release)})
        wait_for(lambda: running_step(url, "wf", "hold#1"), 60, "the hold step to run")
        own_pg.halt()
        release.touch()  # the step returns; recording its result meets a server that is gone
        sup.wait_log("supervisor loop failed: StoreUnavailable", timeout=60)
        hold_outage(sup, OUTAGE_S)
        own_pg.resume()
        wait_status(url, ["wf"], "COMPLETED", timeout=120)
        assert sorted(sup.worker_pids()) == workers, sup.log()[-3000:]  # none was killed or replaced
        assert "heartbeat is" not in sup.log()  # the supervisor's frozen-worker kill
        assert sup.popen.poll() is None
        row = workflow_row(url, "wf")
        assert row["error"] is None and "Connection refused" in (row["interruption"] or ""), row
        assert ledger_count(ledger, "wf", "prep#1") == 1 and ledger_count(ledger, "wf", "finish#1") == 1
    finally:
        fleet.cleanup()


def wait_out(seconds: float) -> None:
    """Let ``seconds`` pass (the outage's length, not a sync: nothing can be observed meanwhile)."""
    until = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= until, seconds + 30, f"a {seconds:g} s outage")


def test_after_an_outage_a_claim_leaves_expired_leases_to_their_holders_for_a_ttl(own_pg: PgCluster) -> None:
    """No heartbeat or hand-back could be written while the server was down, so a lease that
    expired meanwhile is not taken at once: its holder hands the workflow back first, and the
    interruption is recorded instead of a crash."""
    url = own_pg.create_database()
    holder, claimer = PostgresStore(url, listen=False), PostgresStore(url, listen=False)
    try:
        holder.submit("wf", "n", "{}")
        claim = holder.claim_next("holder", ["n"], ttl=TTL_S)
        assert claim is not None
        assert claimer.claim_next("claimer", ["n"], ttl=TTL_S) is None  # held
        own_pg.halt()
        with pytest.raises(StoreUnavailable):
            claimer.claim_next("claimer", ["n"], ttl=TTL_S)
        wait_out(OUTAGE_S)  # several TTLs: the lease has expired by the time the server is back
        own_pg.resume()
        assert claimer.claim_next("claimer", ["n"], ttl=TTL_S) is None  # left to its holder
        assert holder.release("wf", "holder", claim.token, reason="store unavailable: refused")
        taken = claimer.claim_next("claimer", ["n"], ttl=TTL_S)
        assert taken is not None and taken.workflow.attempts == 1, taken  # an interrupt, not a crash
        assert taken.workflow.interruption == "store unavailable: refused"
    finally:
        holder.close_idle()
        claimer.close_idle()
