"""``durable chaos --db postgresql://...``: the experiment on a PostgreSQL database (issue 9, items 2 and 6).

A short run with every fault that applies to a server database (kill -9, SIGSTOP past the TTL,
supervisor kill, the lock and the outage faults, a foreign BaseException; ``diskfull`` is not
sent: the database is not on a local disk) must end with a passing verdict. The long run on
both backends is the stress tier's (tests/stress/test_chaos.py); SQLite's short runs are the
rest of this tier. Asserts counts, never timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.integration.fleet_support import cli_cwd, submit
from tests.stress.support import run_chaos

pytestmark = [pytest.mark.integration]

WORKFLOWS = 20


@pytest.mark.timeout(420)
def test_a_short_chaos_run_on_postgresql_passes(tmp_path: Path, pg_url: str) -> None:
    proc, verdict = run_chaos(
        tmp_path,
        "--workers", "2", "--workflows", str(WORKFLOWS), "--fault-interval", "0.4",
        "--faults", "kill,stop,supervisor,lock,outage,diskfull,foreign", "--ttl", "2", "--bad-inputs", "1",
        "--seed", "20261201", "--timeout", "330",
        timeout=400, db=pg_url,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    assert verdict["config"]["db"] == pg_url, report
    assert verdict["workflows"]["completed"] == WORKFLOWS and verdict["workflows"]["stuck"] == 0, report
    faults = verdict["faults"]
    assert set(faults["not_sent"]) == {"diskfull"}, report
    assert "PostgreSQL" in faults["not_sent"]["diskfull"], report
    for kind in ("kill", "stop", "supervisor", "lock", "outage"):
        assert faults[kind] >= 1, (kind, report)
    assert verdict["steps"]["completed_step_reexecuted"] == 0 and verdict["steps"]["fenced_writes_accepted"] == 0, report
    assert verdict["orphans"] == [], report
    assert verdict["ok"] is True and proc.returncode == 0 and "VERDICT: PASS" in report, report


def test_chaos_refuses_a_postgresql_database_that_holds_workflows(tmp_path: Path, pg_url: str) -> None:
    submit(pg_url, "fleet_steps", "theirs", {"ledger": str(tmp_path / "ledger.txt"), "n": 1})
    done = subprocess.run(
        [sys.executable, "-m", "durable_workers", "chaos", "--db", pg_url, "--workflows", "1"],
        capture_output=True, text=True, timeout=60, cwd=cli_cwd(pg_url), env=cli_env(),
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"Error: {pg_url} already holds workflows; the chaos experiment needs an empty database"
    ], done.stderr
