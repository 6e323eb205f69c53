"""``--log-format``: a supervisor (and the workers it starts) writing JSON lines, the one-line error
of a bad value, and text as the default. The fleet tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.integration.fleet_support import (  # noqa: F401  (fleet: fixture)
    APP,
    BIN,
    fleet,
    on_both_backends,
    submit,
    wait_for,
    wait_status,
)

FIELDS = {"ts", "level", "logger", "msg", "pid"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (supervisor|worker)\[(\d+)\] "
                       r"(INFO|WARNING|ERROR|DEBUG) ")


def json_lines(log: str) -> list[dict]:
    """Every line of ``log`` parsed as one JSON object (a line that is not one fails the test)."""
    records = []
    for line in log.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n--- log:\n{log}")
    return records


def supervisor_command(*args: str) -> list[str]:
    script = BIN / "durable-supervisor"
    return ([str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]) + list(args)


@on_both_backends
@pytest.mark.timeout(240)
def test_json_logs_of_the_supervisor_and_its_workers(fleet, tmp_path: Path) -> None:
    sup = fleet.start(workers=2, extra=("--log-format", "json"))
    values = {"ledger": str(tmp_path / "ledger.txt"), "n": 2}
    assert submit(fleet.db, "fleet_steps", "wf-json", values).returncode == 0
    wait_status(fleet.db, ["wf-json"], "COMPLETED", timeout=120)
    wait_for(lambda: '"step_key": "s1#1"' in sup.log(), 60, "the worker's step line in the log")
    sup.terminate()
    assert sup.wait_exit() == 0
    records = json_lines(sup.log())
    for record in records:
        assert FIELDS <= record.keys(), record
        assert ISO_UTC.match(record["ts"]), record
        assert "\n" not in record["msg"]
    roles = {record.get("role") for record in records}
    assert {"supervisor", "worker"} <= roles
    assert any(r["msg"] == "supervisor stopped" and r["pid"] == sup.pid for r in records)
    steps = [r for r in records if r.get("workflow_id") == "wf-json" and r["msg"].startswith("step completed")]
    assert {r["step_key"] for r in steps} == {"s0#1", "s1#1"}
    for step in steps:
        assert step["role"] == "worker" and step["pid"] != sup.pid and step["worker_id"] and step["attempt"] == 1
        assert step["logger"] == "durable_workers.worker" and step["level"] == "INFO"


@on_both_backends
@pytest.mark.timeout(240)
def test_text_is_the_default_and_the_flag_wins_over_the_config(fleet, tmp_path: Path) -> None:
    cwd = tmp_path / "supervisor-cwd"  # where Fleet starts the supervisor: its pyproject.toml asks for JSON
    cwd.mkdir()
    (cwd / "pyproject.toml").write_text('[tool.durable]\nlog_format = "json"\n')
    first = fleet.start(workers=1, extra=("--log-format", "text"))
    first.terminate()
    assert first.wait_exit() == 0
    lines = first.log().splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), first.log()
    assert {TEXT_LINE.match(line).group(1) for line in lines} == {"supervisor", "worker"}

    (cwd / "pyproject.toml").unlink()
    second = fleet.start(workers=1)  # neither flag nor config: text
    second.terminate()
    assert second.wait_exit() == 0
    assert all(TEXT_LINE.match(line) for line in second.log().splitlines()), second.log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "code", "part"),
    [
        (("--log-format", "xml"), {}, 2, "'xml' is not one of 'text', 'json'"),
        ((), {"DURABLE_LOG_FORMAT": "xml"}, 1, "DURABLE_LOG_FORMAT must be one of text, json, got 'xml'"),
    ],
)
def test_a_bad_log_format_is_one_line(args: tuple[str, ...], env: dict[str, str], code: int, part: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    db = tmp_path / "durable.db"
    done = subprocess.run(supervisor_command("--db", str(db), "--app", str(APP), *args), capture_output=True,
                          text=True, timeout=50, cwd=tmp_path, env=cli_env(env))  # fmt: skip
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and part in lines[0], done.stderr
    assert not db.exists()  # refused before anything was opened
