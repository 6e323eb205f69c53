"""``durable chaos --hosts 2 --faults host,...``: two supervisors with distinct host identities on one
database, and whole hosts killed (supervisor and workers SIGKILLed at once) and restarted (issue 9,
item 7). A short run on each backend must end with a passing verdict. Asserts counts, never timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.fleet_support import FLEET_BACKENDS, database_for
from tests.stress.support import run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WORKFLOWS = 20


@pytest.mark.parametrize("backend", FLEET_BACKENDS)
def test_a_two_host_chaos_run_with_whole_host_kills_passes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = database_for(request, backend, tmp_path / "chaos.db")
    proc, verdict = run_chaos(
        tmp_path,
        "--hosts", "2", "--workers", "2", "--workflows", str(WORKFLOWS), "--fault-interval", "0.5",
        "--faults", "host,kill", "--ttl", "1", "--host-down-seconds", "2", "--bad-inputs", "1",
        "--seed", "20261202", "--timeout", "200",
        timeout=280, db=db,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    assert verdict["config"]["hosts"] == 2, report
    assert verdict["workflows"]["completed"] == WORKFLOWS and verdict["workflows"]["stuck"] == 0, report
    assert verdict["faults"]["host"] >= 1 and verdict["faults"]["kill"] >= 1, report
    assert verdict["steps"]["completed_step_reexecuted"] == 0 and verdict["steps"]["fenced_writes_accepted"] == 0, report
    assert verdict["steps"]["unexplained"] == 0, report
    assert verdict["orphans"] == [], report
    assert verdict["ok"] is True and proc.returncode == 0 and "VERDICT: PASS" in report, report
    assert "kill -9 whole host" in report and "after whole-host kill" in report, report
