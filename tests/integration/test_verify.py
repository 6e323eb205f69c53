"""The crash-test kit (``durable verify``, ``durable_workers.testing``) on real subprocesses.

Every crash point is a real ``durable run`` process SIGKILLed there and resumed; the runs
use the given database (SQLite file or PostgreSQL, ``any_db``). The kit must pass the clean
workflows and find each planted bug: a side effect doubled without an idempotency key, a
result that differs after a crash, and (synthetically, since the engine never does it) a
completed step run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from durable_workers.testing import CrashPoint, VerifyError, assert_crash_safe, crash_points, verify
from durable_workers.testing.crashtest import judge
from durable_workers.testing.runs import RunEnd
from tests.conftest import ROOT, cli_env, run_cli
from tests.integration.fleet_support import any_db  # noqa: F401  (fixture)

import tests.apps.verify_flows  # noqa: F401  (registers the kit_* workflows)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
APP = "tests.apps.verify_flows"


def test_a_workflow_with_branches_a_sleep_and_a_child_is_crash_safe_at_every_point(any_db) -> None:
    report = assert_crash_safe("kit_everything", {"nap": 0.2}, db=str(any_db))
    labels = [p.point.label for p in report.points]
    for key in ("reserve#1", "parallel#1/0/left#1", "parallel#1/1/right#1", "durable:sleep#1", "durable:now#1", "ship#1"):
        assert {f"before {key}", f"returned {key}", f"after {key}"} <= set(labels), (key, labels)
    assert {"before suspend", "after suspend"} <= set(labels)
    assert any("durable:child" in label for label in labels), labels
    assert all(p.reached and p.same_end and not p.doubled for p in report.points), report.problems()
    # the keyed effects that ran twice (killed after returning) are noted as harmless, not failures
    assert any(p.deduplicated for p in report.points if p.point.point == "returned")
    assert report.clean.status == "COMPLETED" and len(report.points) == len(crash_points(report.clean))


def test_a_side_effect_without_its_idempotency_key_is_flagged_at_the_point_that_doubles_it(any_db) -> None:
    report = verify("kit_double_charge", {"amount": 7}, db=str(any_db))
    failed = {p.point.spec: p for p in report.points if not p.ok}
    assert list(failed) == ["charge#1:returned"], report.problems()
    assert failed["charge#1:returned"].doubled == ['"charge card" in step charge#1 ran 2 times without an idempotency key']
    with pytest.raises(AssertionError, match="charge#1 ran 2 times without an idempotency key"):
        assert_crash_safe("kit_double_charge", {"amount": 7}, db=str(any_db), jobs=4)


def test_a_result_that_differs_after_a_crash_fails_every_point_and_a_failed_end_must_stay_failed(any_db) -> None:
    drifting = verify("kit_drifting", db=str(any_db))
    assert drifting.points and all(p.reached and not p.same_end for p in drifting.points)
    assert not drifting.ok and "ended COMPLETED with the result {\"finished_by\": " in drifting.problems()[0]
    failing = assert_crash_safe("kit_failing", db=str(any_db))
    assert failing.clean.status == "FAILED" and failing.clean.error == "ValueError"
    assert [p.point.spec for p in failing.points] == ["fine#1:before", "fine#1:returned", "fine#1:after", "broken#1:before"]


def test_recorded_values_in_the_result_are_masked_and_a_sleep_of_zero_has_no_suspend_point(any_db) -> None:
    report = assert_crash_safe("kit_stamped", db=str(any_db))
    assert report.clean.status == "COMPLETED" and not report.clean.waited
    assert not any(p.point.label.endswith("suspend") for p in report.points)
    assert {"before durable:now#1", "after durable:uuid4#1", "returned durable:random#1"} <= {p.point.label for p in report.points}


def test_a_workflow_waiting_for_a_message_nobody_sends_is_one_clear_error(any_db) -> None:
    with pytest.raises(VerifyError, match="waits for a message with no timeout"):
        verify("kit_waits_forever", db=str(any_db))


def test_a_completed_step_started_again_after_the_kill_is_caught() -> None:
    clean = RunEnd("c", killed=False, processes=1, status="COMPLETED", result=1, error=None,
                   attempts={"a#1": 1, "b#1": 1}, order=["a#1", "b#1"], completed={"a#1", "b#1"})  # fmt: skip
    crashed = RunEnd("x", killed=True, processes=2, status="COMPLETED", result=1, error=None,
                     attempts={"a#1": 2, "b#1": 2}, order=["a#1", "b#1"], completed={"a#1", "b#1"},
                     completed_at_kill={"a#1": 1})  # fmt: skip
    result = judge(CrashPoint("b#1", "before"), crashed, clean)
    assert result.reexecuted == ["a#1"] and not result.ok  # b#1 may run again: it was killed before it ran


def test_durable_verify_passes_a_safe_example_and_fails_the_planted_bug(any_db, tmp_path: Path) -> None:
    examples = str(ROOT / "examples" / "__init__.py")
    safe = run_cli("verify", "signup", db=any_db, app=examples, cwd=tmp_path, timeout=240)
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert "VERDICT: PASS" in safe.stdout and "returned send_welcome#1" in safe.stdout
    unsafe = run_cli("verify", "signup_unsafe", "--json", db=any_db, app=examples, cwd=tmp_path, timeout=240)
    assert unsafe.returncode == 1, unsafe.stdout + unsafe.stderr
    data = json.loads(unsafe.stdout)
    assert data["ok"] is False and data["problems"] == [
        'returned send_welcome#1: "send welcome email" in step send_welcome#1 ran 2 times without an idempotency key'
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["verify", "no_such_flow"], "unknown workflow 'no_such_flow'"),
        (["verify", "kit_failing", "--input", "{bad"], "--input is not valid JSON"),
        (["verify", "kit_double_charge", "--input", '{"nope": 1}'], "nope"),
        (["verify", "kit_failing", "--jobs", "0"], "--jobs"),
    ],
)
def test_bad_verify_input_is_one_line_and_a_non_zero_exit(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli(*args, db=tmp_path / "x.db", app=APP, cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_workflow_defined_in_main_is_refused_with_what_to_do(tmp_path: Path) -> None:
    script = tmp_path / "main_flow.py"
    script.write_text(
        "from durable_workers import workflow\nfrom durable_workers.testing import verify, VerifyError\n"
        "@workflow\ndef here(ctx):\n    return 1\n"
        "try:\n    verify('here')\nexcept VerifyError as exc:\n    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path)
    assert "refused: workflow 'here' is defined in __main__" in done.stdout, done.stdout + done.stderr
    assert issubclass(VerifyError, Exception)
