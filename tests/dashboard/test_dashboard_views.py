"""The dashboard's views in a real browser against a real fleet, on SQLite and PostgreSQL.

The list's filters and keyset paging; the detail page of a workflow whose worker was killed
(kill -9) inside a step and which another worker resumed; the overview and workers pages.
Each view is saved as a screenshot (see conftest.SHOTS).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.dashboard.conftest import screenshot
from tests.integration.fleet_support import (
    lease_row,
    ledger_pids,
    on_both_backends,
    query,
    running_step,
    submit,
    wait_for,
    wait_status,
    worker_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _listed(page: Any) -> list[str]:
    """The ids in the list's table, in order."""
    return page.locator("#workflow-list tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")


def _filter(page: Any, board: Any, **fields: str) -> list[str]:
    """Fill the filter form (fields by input name; ``status`` ticks one box), submit it, return the ids."""
    page.goto(board.url + "/workflows")
    for name, value in fields.items():
        if name == "status":
            page.check(f'#filters input[name="status"][value="{value}"]')
        else:
            page.fill(f'#filters input[name="{name}"]', value)
    with page.expect_navigation():
        page.click('#filters button[type="submit"]')
    return _listed(page)


@on_both_backends
def test_the_list_filters_by_status_name_queue_prefix_and_time_and_pages_by_keyset(
    fleet, dashboard, page, tmp_path: Path
) -> None:
    fleet.start(workers=2)
    db, ledger = fleet.db, tmp_path / "ledger.txt"
    steps = [f"steps-{i}" for i in range(5)]
    for workflow_id in steps:
        submit(db, "fleet_steps", workflow_id, {"ledger": str(ledger), "n": 1}, "--queue", "bulk")
    submit(db, "fleet_flaky", "flaky-1", {"ledger": str(ledger), "marker": str(tmp_path / "marker")})
    wait_status(db, steps, "COMPLETED", timeout=60)
    wait_for(lambda: query(db, "SELECT status FROM workflows WHERE id = 'flaky-1'")[0]["status"] == "FAILED",
             60, "flaky-1 to fail")  # fmt: skip
    board = dashboard()
    newest_first = list(reversed(steps))

    page.goto(board.url + "/workflows")
    assert _listed(page) == ["flaky-1", *newest_first]
    screenshot(page, f"workflows-{_backend(db)}")
    assert _filter(page, board, status="FAILED") == ["flaky-1"]
    assert _filter(page, board, status="COMPLETED") == newest_first
    assert _filter(page, board, name="fleet_flaky") == ["flaky-1"]
    assert _filter(page, board, queue="bulk") == newest_first
    assert _filter(page, board, prefix="steps-") == newest_first
    assert _filter(page, board, prefix="Steps-") == []
    assert _filter(page, board, status="COMPLETED", name="fleet_flaky") == []
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
    assert _filter(page, board, **{"from": future}) == []
    assert _filter(page, board, to=future, name="fleet_steps") == newest_first

    # Keyset paging, two rows a page, filters kept across pages: every row once, newest first.
    page.goto(board.url + "/workflows?limit=2&queue=bulk")
    seen = _listed(page)
    while page.locator("#next-page").count():
        assert re.search(r"after=", page.get_attribute("#next-page", "href") or "")
        page.click("#next-page")
        page.wait_for_load_state()
        seen += _listed(page)
    assert seen == newest_first


def _holding(db: Any, ledger: Path, attempts: int) -> Any:
    """The hold#1 step row once attempt ``attempts`` is inside the step function."""
    def inside() -> Any:
        row = running_step(db, "held", "hold#1", attempts)
        return row if row and len(ledger_pids(ledger, "held", "hold#1", "enter")) >= attempts else None

    return wait_for(inside, 60, f"hold#1 attempt {attempts} to be inside the step")


@on_both_backends
def test_detail_shows_the_timeline_of_a_workflow_killed_and_resumed(fleet, dashboard, page, tmp_path: Path) -> None:
    supervisor = fleet.start(workers=2)
    db, ledger, release = fleet.db, tmp_path / "ledger.txt", tmp_path / "release"
    submit(db, "fleet_hold", "held", {"ledger": str(ledger), "release": str(release)})
    first = _holding(db, ledger, 1)
    board = dashboard()

    page.goto(board.url + "/workflows/held")
    assert page.inner_text("#wf-status") == "RUNNING"
    assert first["worker_id"] in page.inner_text("#lease")
    page.goto(board.url + "/workers")
    assert page.locator(f'#workers tr[data-worker="{first["worker_id"]}"]').inner_text().count("held") == 1
    screenshot(page, f"workers-{_backend(db)}")

    victim = worker_row(db, first["worker_id"])["pid"]
    assert victim in supervisor.worker_pids()
    psutil.Process(victim).kill()
    second = _holding(db, ledger, 2)
    assert second["worker_id"] != first["worker_id"]
    release.touch()
    wait_status(db, ["held"], "COMPLETED", timeout=60)
    assert lease_row(db, "held")["worker_id"] is None

    page.goto(board.url + "/workflows/held")
    assert page.inner_text("#wf-status") == "COMPLETED"
    bars = page.locator("#timeline svg g.step")
    assert bars.evaluate_all("gs => gs.map(g => [g.dataset.step, g.dataset.attempts])") == [
        ["prep#1", "1"], ["hold#1", "2"], ["finish#1", "1"],
    ]  # fmt: skip
    assert "hold#1 ×2" in page.inner_text("#timeline")
    assert page.locator("#timeline svg rect.ok").count() == 3
    # the killed attempt of hold#1 is its own bar, lost, ending where the second attempt began
    hold = page.locator('#timeline svg g.step[data-step="hold#1"] rect')
    assert hold.evaluate_all("rs => rs.map(r => [r.dataset.attempt, r.getAttribute('class')])") == [["1", "lost"], ["2", "ok"]]
    tip = hold.nth(0).evaluate("r => r.textContent")
    assert first["worker_id"] in tip and "did not finish" in tip, tip
    lost_end = hold.nth(0).evaluate("r => +r.getAttribute('x') + +r.getAttribute('width')")
    assert abs(lost_end - float(hold.nth(1).get_attribute("x") or 0)) < 0.2
    rows = page.locator("#steps tbody tr[data-step]")
    assert rows.count() == 3 and second["worker_id"] in rows.nth(1).inner_text()
    assert '"finish"' in page.inner_text("#result")
    screenshot(page, f"detail-{_backend(db)}")
    supervisor.wait_ready()  # the killed worker's replacement is registered
    page.goto(board.url + "/")
    assert page.inner_text('.count[data-status="COMPLETED"] .n') == "1"
    assert page.locator("svg.chart rect.ok").count() == 60
    assert page.locator("#live-workers tbody tr").count() == 2
    screenshot(page, f"overview-{_backend(db)}")


def _backend(db: Any) -> str:
    return "postgresql" if str(db).startswith("postgresql") else "sqlite"
