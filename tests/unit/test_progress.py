"""``durable_workers.progress`` as a person meets it: plain lines off a terminal, rich's bar on one
(a real pty), nothing with ``--json``; ``durable gc`` uses it on both backends."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from durable_workers import Client
from tests.conftest import ROOT, cli_env
from tests.integration.fleet_support import APP, any_db  # noqa: F401  (fixture)

#: A short script: a progress block of five steps, with one logged line.
SCRIPT = textwrap.dedent(
    """
    import sys
    from durable_workers.progress import progress

    with progress("demo", total=5, interval=float(sys.argv[1]), enabled=sys.argv[2] == "on") as bar:
        bar.log("a kept line")
        for i in range(5):
            bar.advance(1, note=f"item {i}")
    print("done", flush=True)
    """
)


def run_script(interval: str, enabled: str = "on") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, interval, enabled], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=cli_env())  # fmt: skip


def run_in_pty(interval: str) -> str:
    """Run SCRIPT with stdout and stderr on a pseudo-terminal; everything it wrote."""
    leader, follower = pty.openpty()
    env = cli_env({"TERM": "xterm", "COLUMNS": "100"})
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, interval, "on"], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, cwd=ROOT, env=env)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.timeout(60)
def test_off_a_terminal_the_progress_is_plain_lines() -> None:
    every = run_script("0")  # interval 0: a line per change, then the final one
    assert every.returncode == 0, every.stderr
    assert every.stdout == "done\n"
    lines = every.stderr.splitlines()
    assert lines[0] == "a kept line"
    assert lines[1:] == [f"demo: {i + 1}/5 item {i}" for i in range(5)] + ["demo: 5/5 item 4"]
    assert "\x1b" not in every.stderr  # no terminal control codes in a log

    quiet = run_script("3600")  # a long interval: only the final line
    assert quiet.stderr.splitlines() == ["a kept line", "demo: 5/5 item 4"]


@pytest.mark.timeout(60)
def test_disabled_progress_prints_nothing() -> None:
    done = run_script("0", enabled="off")
    assert done.returncode == 0 and done.stdout == "done\n" and done.stderr == ""


@pytest.mark.timeout(60)
def test_on_a_terminal_the_progress_is_a_rich_bar() -> None:
    text = run_in_pty("0")
    assert "a kept line" in text and "done" in text
    assert "5/5" in text and "demo" in text
    assert "━" in text  # rich's bar
    assert "demo: 1/5" not in text  # not the plain lines


def old_cancelled(db: object, count: int) -> None:
    """``count`` CANCELLED workflows in ``db`` (terminal: what ``durable gc`` deletes)."""
    client = Client(db=str(db), app=str(APP))
    try:
        for i in range(count):
            client.submit("fleet_steps", f"old-{i}", {"ledger": "unused.txt", "n": 1})
            client.cancel(f"old-{i}")
    finally:
        client.close()


def gc(db: object, *extra: str) -> subprocess.CompletedProcess[str]:
    # --older-than 0.01s: the workflows ended before this process even started
    command = [sys.executable, "-m", "durable_workers", "gc", "--db", str(db), "--app", str(APP),
               "--older-than", "0.01s", "--batch-size", "2", *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=cli_env())


@pytest.mark.timeout(120)
def test_gc_shows_batches_deleted_off_a_terminal(any_db: object) -> None:
    old_cancelled(any_db, 3)
    done = gc(any_db)
    assert done.returncode == 0, done.stderr
    assert "deleted 3 workflows" in done.stdout and "in 2 batches" in done.stdout
    assert done.stderr.splitlines() == ["gc: 2/2 3 workflows deleted"]


@pytest.mark.timeout(120)
def test_gc_json_prints_no_progress(any_db: object) -> None:
    old_cancelled(any_db, 3)
    done = gc(any_db, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["workflows"] == 3 and report["batches"] == 2 and report["dry_run"] is False


def test_a_block_that_raises_prints_no_final_line() -> None:
    import io

    from durable_workers.progress import progress

    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with progress("work", total=3, stream=out) as bar:
            bar.advance(1)
            raise RuntimeError("the command's own error")
    assert out.getvalue() == ""
    with progress("work", total=3, stream=out) as bar:
        bar.advance(3)
    assert out.getvalue() == "work: 3/3\n"
