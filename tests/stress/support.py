"""Helpers of the stress tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import cli_env


def run_chaos(
    tmp_path: Path, *args: str, timeout: float, db: Path | str | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``durable chaos ARGS --db DB --json tmp/verdict.json``; return the process and verdict.

    ``db`` is a new SQLite path or an empty PostgreSQL database URL (default ``tmp/chaos.db``).
    """
    verdict_path = tmp_path / "verdict.json"
    command = [
        sys.executable, "-m", "durable_workers", "chaos",
        "--db", str(db or tmp_path / "chaos.db"), "--json", str(verdict_path), *args,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=cli_env())
    assert verdict_path.exists(), f"no verdict written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, json.loads(verdict_path.read_text())
