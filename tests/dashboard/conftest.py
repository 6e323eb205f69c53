"""Fixtures of the dashboard's browser tests: a real ``durable dashboard`` process and Debian's Chromium.

The dashboard runs as ``python -m durable_workers --db DB dashboard --port P`` next to a real fleet
(``tests/integration/fleet_support.py``); Playwright drives the system Chromium (``shutil.which
("chromium")``: ``playwright install`` cannot download browsers here). Without Chromium or Playwright
the tests skip, and fail instead with ``CI=true``. Screenshots go to ``$DURABLE_SCREENSHOTS`` or
``<tmp>/durable-dashboard-screenshots``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import cli_env
from tests.integration.fleet_support import cli_cwd, fleet, wait_for  # noqa: F401  (fixture)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHOTS = Path(os.environ.get("DURABLE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "durable-dashboard-screenshots")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the dashboard browser tests need {reason} in CI", pytrace=False)
    pytest.skip(f"no {reason}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright, for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install playwright)")
    executable = shutil.which("chromium")
    if executable is None:
        _missing("chromium (apt-get install chromium)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; 20 s for any one wait."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``SHOTS/NAME.png``; its path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Dashboard:
    """A running ``durable dashboard`` process and its base URL."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        """The HTTP status of a GET of ``path`` (redirects not followed)."""

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@pytest.fixture
def dashboard(fleet: Any, tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:  # noqa: F811
    """``dashboard(*flags)`` starts ``durable dashboard`` on the fleet's database; it is killed at teardown."""
    started: list[Dashboard] = []

    def start(*flags: str) -> Dashboard:
        port = _free_port()
        log = tmp_path / f"dashboard-{len(started) + 1}.log"
        command = [sys.executable, "-m", "durable_workers", "--db", str(fleet.db), "dashboard", "--port", str(port)]
        command += list(flags)
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=cli_cwd(fleet.db), env=cli_env()
            )
        board = Dashboard(popen, f"http://127.0.0.1:{port}", log)
        started.append(board)

        def up() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"the dashboard exited with {popen.returncode}:\n{log.read_text()}")
            try:
                return board.get("/static/dashboard.css") == 200
            except OSError:
                return False

        wait_for(up, 30, f"the dashboard on port {port}")
        return board

    yield start
    for board in started:
        board.popen.kill()
        board.popen.wait(30)
