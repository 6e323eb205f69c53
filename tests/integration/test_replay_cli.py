"""``durable check-replay`` and ``durable fork`` through the real CLI, on both backends.

A history recorded by app v1 (tests/replay_apps) is checked against v1 (passes), against
v2, which renames a step (fails, naming the first diverging step), and against v3, which
makes the same rename behind ``ctx.patched`` (passes); no row changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.fleet_support import DbTarget, any_db, cli_cwd, query  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

APPS = Path(__file__).resolve().parents[1] / "replay_apps"
V1, V2, V3 = APPS / "v1.py", APPS / "v2.py", APPS / "v3.py"
TABLES = ("workflows", "steps", "leases", "workers", "meta")


def durable(db: DbTarget, app: Path, *args: str):
    return run_cli(*args, db=db, app=app, cwd=cli_cwd(db))


def all_rows(db: DbTarget) -> dict[str, list[dict]]:
    return {t: sorted((json.dumps(r, sort_keys=True, default=str) for r in query(db, f"SELECT * FROM {t}"))) for t in TABLES}


def _record_v1_history(db: DbTarget) -> None:
    """wf-1 killed before its ``ship`` step (RUNNING), wf-2 and legacy-1 PENDING, done-1 COMPLETED."""
    crashed = durable(db, V1, "run", "replay_order", "wf-1", "--crash-at", "ship:before")
    assert crashed.returncode != 0 and "Traceback" not in crashed.stderr
    for args in (("submit", "replay_order", "wf-2"), ("submit", "replay_legacy", "legacy-1")):
        assert durable(db, V1, *args).returncode == 0
    done = durable(db, V1, "run", "replay_order", "done-1")
    assert done.returncode == 0, done.stderr


def test_check_replay_passes_v1_and_catches_the_renamed_step_of_v2(any_db: DbTarget) -> None:  # noqa: F811
    _record_v1_history(any_db)
    forked = durable(any_db, V1, "fork", "wf-1", "--from", "charge#1")
    assert forked.returncode == 0, forked.stderr
    assert forked.stdout.strip() == "forked wf-1 from charge#1 as wf-1~fork-1 (PENDING)"
    before = all_rows(any_db)

    same = durable(any_db, V1, "check-replay")
    assert same.returncode == 0, same.stdout + same.stderr
    lines = same.stdout.splitlines()
    assert any(line.startswith("wf-1  replay_order  RUNNING  ok: would continue at ship#1") for line in lines)
    assert any(line.startswith("wf-1~fork-1  replay_order  PENDING  ok: would continue at charge#1") for line in lines)
    assert lines[-1] == "4 unfinished workflows checked: 0 would diverge or break"

    changed = durable(any_db, V2, "check-replay", "--json")
    assert changed.returncode == 1, changed.stderr
    report = json.loads(changed.stdout)
    by_id = {v["workflow_id"]: v for v in report["workflows"]}
    assert (report["checked"], report["diverging"]) == (4, 2)
    assert (by_id["wf-1"]["outcome"], by_id["wf-1"]["step"]) == ("diverges", "bill#1")
    assert "'charge#1'" in by_id["wf-1"]["detail"]
    # The fork kept only reserve#1, so v2 can take it over: its next call is the renamed step.
    assert (by_id["wf-1~fork-1"]["outcome"], by_id["wf-1~fork-1"]["step"]) == ("continues", "bill#1")
    assert (by_id["wf-2"]["outcome"], by_id["wf-2"]["step"]) == ("continues", "reserve#1")
    assert by_id["legacy-1"]["outcome"] == "unregistered"
    assert "done-1" not in by_id

    assert all_rows(any_db) == before  # neither check wrote anything


def test_fork_errors_are_one_line(any_db: DbTarget) -> None:  # noqa: F811
    _record_v1_history(any_db)
    before = all_rows(any_db)
    for args, expected in (
        (("fork", "wf-1", "--from", "nope#1"), "list its step keys with `durable steps wf-1`"),
        (("fork", "missing", "--from", "reserve#1"), "no workflow with id 'missing'"),
        (("fork", "wf-1", "--from", "reserve#1", "--id", "wf-2"), "workflow wf-2 already exists; choose another --id"),
        (("fork", "wf-1", "--from", "reserve#1", "--id", ""), "pass a non-empty --id"),
    ):
        result = durable(any_db, V1, *args)
        assert result.returncode == 1
        assert result.stderr.strip() == f"Error: {result.stderr.strip()[7:]}" and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert all_rows(any_db) == before


def test_check_replay_passes_the_rename_made_behind_ctx_patched(any_db: DbTarget) -> None:  # noqa: F811
    _record_v1_history(any_db)
    before = all_rows(any_db)
    patched = durable(any_db, V3, "check-replay")
    assert patched.returncode == 0, patched.stdout + patched.stderr
    lines = patched.stdout.splitlines()
    # wf-1 was recorded by v1 up to ``ship``: v3 replays ``charge`` (the unpatched branch) and goes on.
    assert any(line.startswith("wf-1  replay_order  RUNNING  ok: would continue at ship#1") for line in lines), lines
    assert any(line.startswith("wf-2  replay_order  PENDING  ok: would continue at reserve#1") for line in lines), lines
    assert any(line.startswith("legacy-1  replay_legacy  PENDING  ok") for line in lines), lines
    assert lines[-1] == "3 unfinished workflows checked: 0 would diverge or break"

    report = json.loads(durable(any_db, V3, "check-replay", "--json").stdout)
    assert (report["checked"], report["diverging"]) == (3, 0)
    assert {v["workflow_id"]: v["outcome"] for v in report["workflows"]} == {
        "wf-1": "continues", "wf-2": "continues", "legacy-1": "continues",
    }  # fmt: skip
    assert all_rows(any_db) == before
