"""Helpers for the fleet integration tests: a supervisor handle, DB queries, bounded polling.

Everything here synchronises on observable state (database rows, files, process exit) with a
bounded polling loop; nothing sleeps a fixed time to "let something happen".

The database of a fleet test is a ``--db`` target: a SQLite path or a ``postgresql://`` URL.
``query`` (fleet_db.py) and the helpers built on it read either (sqlite3 for a path, psycopg for a URL), so a
test written against them runs on both backends; ``@on_both_backends`` parametrises the ``fleet``
fixture over them (SQLite alone is the default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import psutil
import pytest

from tests.apps.fleet_flows import read_ledger
from tests.conftest import APPS, cli_env, run_cli
from tests.integration.fleet_db import (  # noqa: F401  (re-exported: tests import them from here)
    MISSING_TABLE,
    DbTarget,
    can_write,
    cli_cwd,
    db_exists,
    holds_no_transaction,
    is_url,
    pg_in_transaction,
    pg_placeholders,
    query,
)

T = TypeVar("T")

#: The backends a fleet test can run on (``on_both_backends``); the first is the default.
FLEET_BACKENDS = ("sqlite", "postgresql")

APP = APPS / "__init__.py"
BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- database


def workflow_row(db: DbTarget, workflow_id: str) -> dict[str, Any] | None:
    rows = query(db, "SELECT * FROM workflows WHERE id = ?", (workflow_id,))
    return rows[0] if rows else None


def workflow_status(db: DbTarget, workflow_id: str) -> str | None:
    row = workflow_row(db, workflow_id)
    return row["status"] if row else None


def step_rows(db: DbTarget, workflow_id: str) -> dict[str, dict[str, Any]]:
    """The workflow's step rows by step key."""
    return {r["step_key"]: r for r in query(db, "SELECT * FROM steps WHERE workflow_id = ?", (workflow_id,))}


def lease_row(db: DbTarget, workflow_id: str) -> dict[str, Any] | None:
    rows = query(db, "SELECT * FROM leases WHERE workflow_id = ?", (workflow_id,))
    return rows[0] if rows else None


def worker_row(db: DbTarget, worker_id: str) -> dict[str, Any] | None:
    rows = query(db, "SELECT * FROM workers WHERE id = ?", (worker_id,))
    return rows[0] if rows else None


def running_step(db: DbTarget, workflow_id: str, step_key: str, attempts: int = 1) -> dict[str, Any] | None:
    """The step row if it is RUNNING in attempt ``attempts``, else None."""
    row = step_rows(db, workflow_id).get(step_key)
    if row and row["status"] == "RUNNING" and row["attempts"] == attempts:
        return row
    return None


def wait_status(db: DbTarget, workflow_ids: Iterable[str], status: str, timeout: float) -> None:
    """Wait until every workflow has ``status`` (fails early if one ends otherwise)."""
    pending = set(workflow_ids)
    terminal = {"COMPLETED", "FAILED", "CANCELLED"}

    def done() -> bool:
        if not pending:
            return True
        marks = ",".join("?" * len(pending))
        for row in query(db, f"SELECT id, status, error FROM workflows WHERE id IN ({marks})", pending):
            if row["status"] == status:
                pending.discard(row["id"])
            elif row["status"] in terminal:
                raise AssertionError(f"workflow {row['id']} ended {row['status']}: {row['error']}")
        return not pending

    wait_for(done, timeout, f"{len(pending)} workflow(s) to be {status}: {sorted(pending)[:5]}")


def ledger_count(ledger: Path, workflow_id: str, step_key: str, note: str = "") -> int:
    return sum(1 for w, k, _, n in read_ledger(ledger) if w == workflow_id and k == step_key and n == note)


def ledger_pids(ledger: Path, workflow_id: str, step_key: str, note: str = "") -> list[int]:
    return [p for w, k, p, n in read_ledger(ledger) if w == workflow_id and k == step_key and n == note]


# --------------------------------------------------------------------------- processes


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


#: Seconds a test looks for the write lock of a process it just stopped (well under any test's TTL / 3).
STOPPED_LOOK_S = 0.2


def all_threads_stopped(proc: psutil.Process) -> bool:
    """True once every thread of ``proc`` is stopped (SIGSTOP is delivered asynchronously).

    Raises psutil.NoSuchProcess when it is gone (a zombie included).
    """
    if gone(proc.pid):
        raise psutil.NoSuchProcess(proc.pid)
    try:
        tasks = list(Path(f"/proc/{proc.pid}/task").iterdir())
    except FileNotFoundError:
        raise psutil.NoSuchProcess(proc.pid) from None
    states = []
    for task in tasks:
        try:  # "tid (comm) S ...": the state follows the last ")" (comm may hold spaces)
            states.append(task.joinpath("stat").read_text().rpartition(")")[2].split()[0])
        except (FileNotFoundError, ProcessLookupError):  # that thread just ended
            continue
    return all(state in ("T", "t") for state in states)


def suspend_outside_write(proc: psutil.Process, db: DbTarget, tries: int = 50) -> float:
    """SIGSTOP ``proc`` at a moment it is not inside a write transaction; the monotonic instant it was stopped.

    A process frozen inside a write transaction (its heartbeat, say) would block other
    writers until it is resumed or killed (SQLite's write lock; PostgreSQL's row locks, until
    the server's idle-in-transaction timeout). The engine copes with that (the supervisor kills
    a stopped worker whose heartbeat is late), but it is not what these tests are about.
    Another process's short transaction may make a try fail; the next one goes through.
    Each try waits until every thread has really stopped before it looks at the locks; it
    executed nothing after the instant returned. Raises psutil.NoSuchProcess when ``proc`` is gone.
    """
    for _ in range(tries):
        proc.suspend()
        wait_for(lambda: all_threads_stopped(proc), 30, f"pid {proc.pid} to stop", interval=0.001)
        stopped = time.monotonic()
        # A short look: while it is stopped holding the lock, nobody can write. A look of two
        # TTLs would get it killed as frozen by its supervisor, and late heartbeats everywhere.
        if holds_no_transaction(proc, db, patience=STOPPED_LOOK_S):
            return stopped
        proc.resume()
        # Let it leave the transaction before the next try: stopping it again at once could
        # catch it inside the same transaction every time.
        wait_for(lambda: holds_no_transaction(proc, db), 30, f"pid {proc.pid} to end its transaction", interval=0.001)
    raise AssertionError(f"could not stop pid {proc.pid} outside a write transaction")


def submit(db: DbTarget, name: str, workflow_id: str, values: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    """``durable submit NAME ID --input JSON`` (asserts success)."""
    done = run_cli("submit", name, workflow_id, "--input", json.dumps(values), *extra, db=db, app=APP, cwd=cli_cwd(db))
    assert done.returncode == 0, done.stderr
    return done


def submit_many(db: DbTarget, name: str, items: dict[str, dict[str, Any]]) -> None:
    """Submit many workflows at once from this process (the CLI path is tested elsewhere)."""
    from durable_workers import Client

    client = Client(db=str(db), app=str(APP))
    try:
        for workflow_id, values in items.items():
            client.submit(name, workflow_id, values)
    finally:
        client.close()


def run_submit_script(*args: str, db: DbTarget, app: Path | str = APP, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The ``durable-submit`` entry point (falls back to the same click command)."""
    script = BIN / "durable-submit"
    if script.exists():
        command = [str(script)]
    else:  # pragma: no cover - not installed as a script
        command = [sys.executable, "-c", "from durable_workers.cli import submit_main; submit_main()"]
    return subprocess.run(
        [*command, "--db", str(db), "--app", str(app), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cli_cwd(db),
        env=cli_env(),
    )


class Supervisor:
    """A running ``durable-supervisor`` started by a test, with its log file."""

    def __init__(self, fleet: "Fleet", popen: subprocess.Popen[bytes], log: Path, workers: int) -> None:
        self.fleet = fleet
        self.popen = popen
        self.log_path = log
        self.workers = workers

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """PIDs of the supervisor's live (non-zombie) worker children."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        self.fleet.seen.update(pids)
        return pids

    def live_workers(self) -> list[dict[str, Any]]:
        """Worker rows in state running whose process is one of this supervisor's children."""
        pids = set(self.worker_pids())
        rows = query(self.fleet.db, "SELECT * FROM workers WHERE state = 'running'")
        return [r for r in rows if r["pid"] in pids]

    def wait_ready(self, timeout: float = 90) -> list[dict[str, Any]]:
        """Wait until every slot has a registered, running worker."""

        def ready() -> list[dict[str, Any]] | None:
            if self.popen.poll() is not None:
                raise AssertionError(f"supervisor exited with {self.popen.returncode}:\n{self.log()}")
            if not db_exists(self.fleet.db):
                return None
            try:
                rows = self.live_workers()
            except MISSING_TABLE:  # tables not created yet
                return None
            return rows if len(rows) == self.workers else None

        return wait_for(ready, timeout, f"{self.workers} workers of supervisor {self.pid} to register")

    def wait_log(self, text: str, timeout: float = 60) -> str:
        return wait_for(lambda: text in self.log() and self.log(), timeout, f"{text!r} in the supervisor log")

    def terminate(self) -> None:
        self.popen.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 90) -> int:
        return self.popen.wait(timeout)


class Fleet:
    """Starts supervisors on one test database and makes sure no process outlives the test."""

    def __init__(self, tmp_path: Path, db: DbTarget) -> None:
        self.tmp_path = tmp_path
        self.db = db
        self.supervisors: list[Supervisor] = []
        self.seen: set[int] = set()

    def start(
        self,
        workers: int = 2,
        ttl: float = 10.0,
        shutdown_timeout: float = 60.0,
        ready: bool = True,
        host_id: str | None = None,
        extra: tuple[str, ...] = (),
        app: Path | str = APP,
    ) -> Supervisor:
        log = self.tmp_path / f"supervisor-{len(self.supervisors) + 1}.log"
        script = BIN / "durable-supervisor"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]
        command += [
            "--workers", str(workers),
            "--db", str(self.db),
            "--app", str(app),
            "--ttl", str(ttl),
            "--shutdown-timeout", str(shutdown_timeout),
        ] + (["--host-id", host_id] if host_id else []) + list(extra)
        # A working directory of its own: --db and --app must be honoured, not found by luck
        # as ./durable.db or through pyproject.toml.
        cwd = self.tmp_path / "supervisor-cwd"
        cwd.mkdir(exist_ok=True)
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=cli_env(),
            )
        supervisor = Supervisor(self, popen, log, workers)
        self.supervisors.append(supervisor)
        if ready:
            supervisor.wait_ready()
        return supervisor

    def _ours(self, proc: psutil.Process) -> bool:
        """A process started for this test: its command line names this test's database."""
        try:
            return str(self.db) in " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def cleanup(self) -> None:
        """SIGKILL every supervisor and every worker this test started, then reap them."""
        victims: dict[int, psutil.Process] = {}
        for supervisor in self.supervisors:
            try:
                victims.update({p.pid: p for p in psutil.Process(supervisor.pid).children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        for pid in self.seen:
            try:
                victims.setdefault(pid, psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        for proc in psutil.process_iter(["pid"]):  # orphans re-parented away from a killed supervisor
            if proc.pid not in victims and proc.pid != os.getpid() and self._ours(proc):
                victims[proc.pid] = proc
        for supervisor in self.supervisors:
            if supervisor.popen.poll() is None:
                supervisor.popen.kill()
        for proc in victims.values():
            if not self._ours(proc):
                continue
            try:
                proc.send_signal(signal.SIGCONT)  # a stopped process must run to die promptly
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        for supervisor in self.supervisors:
            try:
                supervisor.popen.wait(30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        psutil.wait_procs(list(victims.values()), timeout=30)


def database_for(request: pytest.FixtureRequest, backend: str, db_path: Path) -> DbTarget:
    """The test's database on ``backend`` (one of ``FLEET_BACKENDS``): ``db_path`` for SQLite,
    a fresh ``pg_url`` for PostgreSQL (skipped without PostgreSQL, a failure with ``CI=true``)."""
    if backend not in FLEET_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {FLEET_BACKENDS}")
    return request.getfixturevalue("pg_url") if backend == "postgresql" else db_path


@pytest.fixture(params=FLEET_BACKENDS)
def any_db(request: pytest.FixtureRequest, db_path: Path) -> DbTarget:
    """This test's database on each backend in turn (ids ``[sqlite]``, ``[postgresql]``)."""
    return database_for(request, request.param, db_path)


#: Decorate a test (or set as ``pytestmark``) to run it once per backend: the ``fleet``
#: fixture is parametrised over ``FLEET_BACKENDS``; ids ``[sqlite]`` and ``[postgresql]``.
on_both_backends = pytest.mark.parametrize("fleet", FLEET_BACKENDS, indirect=True)


@pytest.fixture
def fleet(request: pytest.FixtureRequest, tmp_path: Path, db_path: Path):
    """Start supervisors with ``fleet.start(...)``; every process is killed at teardown.

    The fleet's database (``fleet.db``) is the test's SQLite file (``db_path``) unless the test
    is parametrised with ``on_both_backends``; then, for ``postgresql``, it is a fresh database
    URL (``pg_url``: skipped without PostgreSQL, a failure with ``CI=true``).
    """
    started = Fleet(tmp_path, database_for(request, getattr(request, "param", FLEET_BACKENDS[0]), db_path))
    try:
        yield started
    finally:
        started.cleanup()
