"""The dashboard's actions and guards in a real browser against a real fleet, on SQLite and PostgreSQL.

Retry of a FAILED workflow from its page (the page then follows it to COMPLETED by polling); a
fork from a chosen step opens the new workflow, which the fleet runs from that step on; a
forged form (wrong CSRF token) is refused; ``--read-only`` shows no action and refuses one (403);
with ``--token`` a wrong token is refused and the right one signs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import screenshot
from tests.integration.fleet_support import (
    on_both_backends,
    submit,
    wait_for,
    wait_status,
    workflow_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _failed_flaky(fleet: Any, tmp_path: Path, workflow_id: str = "flaky") -> None:
    """A ``fleet_flaky`` run that ended FAILED (its next run succeeds: the marker file now exists)."""
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "marker"
    submit(fleet.db, "fleet_flaky", workflow_id, {"ledger": str(ledger), "marker": str(marker)})
    failed = lambda: (workflow_row(fleet.db, workflow_id) or {}).get("status") == "FAILED"  # noqa: E731
    wait_for(failed, 60, f"{workflow_id} to fail")


def _post(page: Any, board: Any, path: str, form: dict[str, str]) -> int:
    """POST ``form`` to ``path`` from the page's browser context (its cookies); the response status."""
    return int(page.request.post(board.url + path, form=form, max_redirects=0).status)


def _csrf(page: Any) -> str:
    return str(page.get_attribute('meta[name="csrf-token"]', "content"))


def _backend(db: Any) -> str:
    return "postgresql" if str(db).startswith("postgresql") else "sqlite"


@on_both_backends
def test_retry_runs_a_failed_workflow_again_and_a_forged_form_is_refused(
    fleet, dashboard, page, tmp_path: Path
) -> None:
    fleet.start(workers=2)
    _failed_flaky(fleet, tmp_path)
    board = dashboard()
    page.goto(board.url + "/workflows/flaky")
    assert page.inner_text("#wf-status") == "FAILED"
    assert "fleet_flaky fails on its first run" in page.inner_text("#error")
    assert page.locator("#cancel").count() == 0  # a FAILED workflow cannot be cancelled

    assert _post(page, board, "/workflows/flaky/retry", {"csrf_token": "forged"}) == 403
    assert _post(page, board, "/workflows/flaky/retry", {}) == 403
    assert workflow_row(fleet.db, "flaky")["status"] == "FAILED"

    with page.expect_navigation():
        page.click("#retry")
    assert page.inner_text("#flash").startswith("retried")
    wait_status(fleet.db, ["flaky"], "COMPLETED", timeout=60)
    # Live updates: the page polls itself and shows the end without a reload.
    # Imported here: without Playwright the browser fixture skips (or fails in CI).
    from playwright.sync_api import expect

    expect(page.locator("#wf-status")).to_have_text("COMPLETED", timeout=30_000)
    assert page.get_attribute("#live-root", "data-updated")  # swapped in by dashboard.js, not reloaded
    assert '"flaky"' in page.inner_text("#result")
    screenshot(page, f"retried-{_backend(fleet.db)}")


@on_both_backends
def test_fork_from_a_step_opens_the_copy_and_the_fleet_runs_only_that_step_and_the_rest(
    fleet, dashboard, page, tmp_path: Path
) -> None:
    fleet.start(workers=1)
    ledger = tmp_path / "ledger.txt"
    submit(fleet.db, "fleet_steps", "source", {"ledger": str(ledger), "n": 3})
    wait_status(fleet.db, ["source"], "COMPLETED", timeout=60)
    board = dashboard()
    page.goto(board.url + "/workflows/source")
    assert page.locator("#fork-step option").all_inner_texts() == ["s0#1", "s1#1", "s2#1"]
    page.select_option("#fork-step", "s1#1")
    page.fill("#fork-id", "source-again")
    with page.expect_navigation():
        page.click("#fork")
    assert page.url.endswith("/workflows/source-again?done=forked+from+source+at+step+s1%231%3A+PENDING"), page.url
    assert page.inner_text("#flash") == "forked from source at step s1#1: PENDING"
    wait_status(fleet.db, ["source-again"], "COMPLETED", timeout=60)
    runs = [line.split()[:2] for line in ledger.read_text().splitlines()]
    assert runs == [["source", "s0#1"], ["source", "s1#1"], ["source", "s2#1"],
                    ["source-again", "s1#1"], ["source-again", "s2#1"]], runs  # fmt: skip
    # a taken id is one line on the source's page, nothing new is written
    page.goto(board.url + "/workflows/source")
    page.fill("#fork-id", "source-again")
    with page.expect_navigation():
        page.click("#fork")
    assert "/workflows/source?error=" in page.url and "source-again" in page.inner_text("#flash")
    screenshot(page, f"fork-{_backend(fleet.db)}")


@on_both_backends
def test_read_only_shows_no_action_and_refuses_one(fleet, dashboard, page, tmp_path: Path) -> None:
    fleet.start(workers=1)
    _failed_flaky(fleet, tmp_path)
    board = dashboard("--read-only")
    page.goto(board.url + "/workflows/flaky")
    assert page.inner_text("#wf-status") == "FAILED"
    assert page.locator("#actions").count() == 0 and "read-only" in page.inner_text("header")
    token = _csrf(page)
    assert _post(page, board, "/workflows/flaky/retry", {"csrf_token": token}) == 403
    assert _post(page, board, "/workflows/flaky/cancel", {"csrf_token": token}) == 403
    assert workflow_row(fleet.db, "flaky")["status"] == "FAILED"
    screenshot(page, f"read-only-{_backend(fleet.db)}")

    # The "why is it not running" lines of `durable status ID`.
    submit(fleet.db, "fleet_steps", "later", {"ledger": str(tmp_path / "ledger.txt"), "n": 1}, "--delay", "2h")
    page.goto(board.url + "/workflows/later")
    assert page.inner_text("#wf-status") == "PENDING"
    assert "delayed until" in page.inner_text("#why")


@on_both_backends
def test_a_wrong_token_is_refused_and_the_right_one_signs_in(fleet, dashboard, page, tmp_path: Path) -> None:
    fleet.start(workers=1)
    _failed_flaky(fleet, tmp_path)
    board = dashboard("--token", "s3cret-token")
    assert board.get("/workflows") == 303  # to the login form
    assert board.get("/workflows", {"Authorization": "Bearer wrong"}) == 401
    assert board.get("/workflows", {"Authorization": "Bearer s3cret-token"}) == 200

    page.goto(board.url + "/workflows/flaky")
    assert page.url.startswith(board.url + "/login")
    page.fill('input[name="token"]', "not-the-token")
    with page.expect_navigation():
        page.click('button[type="submit"]')
    assert page.locator("#refused").count() == 1
    screenshot(page, f"login-refused-{_backend(fleet.db)}")
    assert _post(page, board, "/workflows/flaky/retry", {"csrf_token": _csrf(page)}) == 401
    page.goto(board.url + "/workflows")
    assert page.url.startswith(board.url + "/login")

    page.fill('input[name="token"]', "s3cret-token")
    with page.expect_navigation():
        page.click('button[type="submit"]')
    assert page.url == board.url + "/workflows"
    assert page.locator('#workflow-list tr[data-id="flaky"]').count() == 1


@on_both_backends
def test_the_dashboard_serves_the_database_gauges_on_metrics(fleet, dashboard, tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    fleet.start(workers=1)
    _failed_flaky(fleet, tmp_path)
    board = dashboard("--read-only")
    with urllib.request.urlopen(board.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    by_status = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "durable_workflows"
    }
    assert by_status["FAILED"] == 1 and by_status["COMPLETED"] == 0
