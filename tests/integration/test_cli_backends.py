"""CLI behaviour that must be the same on both backends (SQLite path, PostgreSQL URL).

Each test runs the real ``durable`` CLI against ``any_db``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import APP, DbTarget, any_db, cli_cwd, workflow_row  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration]


def test_submit_again_without_input_reuses_the_recorded_input(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    """``durable submit NAME ID`` of an existing workflow takes its recorded input (an idempotent
    resubmit), on PostgreSQL too: there is no file whose absence means "no such workflow"."""
    values = {"ledger": str(tmp_path / "ledger.txt"), "n": 1}
    first = run_cli("submit", "fleet_steps", "wf-1", "--input", json.dumps(values), db=any_db, app=APP, cwd=cli_cwd(any_db))
    assert first.returncode == 0, first.stderr
    again = run_cli("submit", "fleet_steps", "wf-1", db=any_db, app=APP, cwd=cli_cwd(any_db))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first.stdout.strip() == "submitted fleet_steps wf-1 (PENDING)"
    assert json.loads(workflow_row(any_db, "wf-1")["input"]) == values
