"""The supervisor's metrics port during real fleet runs (issue 12, items 2 and 3), on both backends.

A real ``durable-supervisor --metrics-port`` and its worker processes: ``/metrics`` is scraped
with urllib and parsed with prometheus-client's own parser, and its counters are compared
with the rows of the database (completed, failed, started), including after a worker was
killed with ``kill -9`` (its counters stay in the sum; the restart is counted). ``/readyz``
answers 200 only once the workers are registered; ``/healthz`` answers 503 while the store
is unreachable (SQLite: the database's WAL locks held by another process; PostgreSQL: the
server halted) and 200 again once it is back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import pg_cluster_or_skip
from tests.integration.fleet_support import (
    DbTarget,
    Fleet,
    Supervisor,
    fleet,  # noqa: F401  (fixture)
    gone,
    is_url,
    on_both_backends,
    query,
    submit_many,
    wait_for,
    wait_status,
)
from tests.pg_cluster import PgCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: One sample: (sample name, sorted label pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
#: Byte range of SQLite's WAL locks in the -shm file (write, checkpoint, recover, read 0-4).
WAL_LOCKS_OFFSET, WAL_LOCKS_LENGTH = 120, 8
#: Makes the fleet's database unreachable while its block runs.
Outage = Callable[[], ContextManager[None]]


def free_port() -> int:
    """A port of 127.0.0.1 nobody listened on a moment ago (bound to port 0 first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` on the metrics port: (HTTP status, body); (0, reason) when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


def scrape(port: int) -> dict[SampleKey, float]:
    """``/metrics`` parsed by prometheus-client's parser: every sample's value by name and labels."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[SampleKey, float], sample: str, **labels: str) -> float:
    """The sample's value; 0 when it is absent (a counter nothing incremented yet)."""
    return samples.get((sample, tuple(sorted(labels.items()))), 0.0)


def scrape_once_counted(port: int, sample: str, expected: float, **labels: str) -> dict[SampleKey, float]:
    """Scrape until ``sample`` reaches ``expected`` (a worker counts just after its commit); it must not pass it."""

    def reached() -> dict[SampleKey, float] | None:
        got = scrape(port)
        return got if value(got, sample, **labels) >= expected else None

    samples = wait_for(reached, 30, f"{sample} {labels} to reach {expected}")
    assert samples is not None
    assert value(samples, sample, **labels) == expected, (sample, labels, value(samples, sample, **labels))
    return samples


def rows(db: DbTarget, name: str, status: str) -> int:
    return int(query(db, "SELECT COUNT(*) AS n FROM workflows WHERE name = ? AND status = ?", (name, status))[0]["n"])


def wait_probe(port: int, path: str, status: int, timeout: float = 60) -> str:
    """Poll ``path`` until it answers ``status``; returns the body."""

    def answered() -> str | None:
        got, body = get(port, path)
        return (body or "(empty)") if got == status else None

    body = wait_for(answered, timeout, f"{path} to answer {status}")
    assert body is not None
    return body


def counters_folder(supervisor: Supervisor) -> Path:
    """The counters folder the supervisor gave its workers (it sets the variable after it started)."""
    (worker,) = supervisor.worker_pids()[:1]
    folder = Path(psutil.Process(worker).environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.is_dir(), folder
    return folder


def stop_and_check_counters_removed(supervisor: Supervisor) -> None:
    """SIGTERM the supervisor; it exits 0 and removes the counters folder its workers were given."""
    folder = counters_folder(supervisor)
    supervisor.terminate()
    assert supervisor.wait_exit(60) == 0, supervisor.log()
    assert not folder.exists(), folder


def greetings(prefix: str, count: int) -> dict[str, dict[str, str]]:
    return {f"{prefix}-{i}": {"name": f"n{i}"} for i in range(count)}


@on_both_backends
def test_readyz_answers_200_only_once_the_workers_registered(fleet) -> None:  # noqa: F811
    port = free_port()
    supervisor = fleet.start(workers=2, ready=False, extra=("--metrics-port", str(port)))

    def ready() -> bool:
        status, body = get(port, "/readyz")
        if status == 0:
            return False  # not listening yet
        registered = len(supervisor.live_workers()) if status == 200 else None
        assert status in (200, 503), (status, body)
        assert status == 503 or registered == 2, f"/readyz said ready with {registered} workers registered"
        return status == 200

    wait_for(ready, 60, "/readyz to answer 200")
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/nowhere")[0] == 404
    stop_and_check_counters_removed(supervisor)


@on_both_backends
def test_counters_match_the_database_also_after_a_worker_is_killed(fleet, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    supervisor = fleet.start(workers=2, extra=("--metrics-port", str(port)))
    wait_probe(port, "/readyz", 200)
    submit_many(fleet.db, "core_greet", greetings("a", 8))
    calls = str(tmp_path / "calls")
    submit_many(fleet.db, "core_retry", {"flaky-ok": {"calls": calls + "-ok", "fail_times": 1, "retries": 2},
                                         "flaky-bad": {"calls": calls + "-bad", "fail_times": 5, "retries": 0}})
    wait_status(fleet.db, list(greetings("a", 8)) + ["flaky-ok"], "COMPLETED", 60)
    wait_for(lambda: rows(fleet.db, "core_retry", "FAILED") == 1, 60, "flaky-bad to fail")

    scrape_once_counted(port, "durable_workflows_failed_total", 1, name="core_retry", queue="default")
    scrape_once_counted(port, "durable_workflows_completed_total", 1, name="core_retry", queue="default")
    samples = scrape_once_counted(port, "durable_workflows_completed_total", 8, name="core_greet", queue="default")
    assert value(samples, "durable_workflows_started_total", name="core_greet", queue="default") == 8
    assert value(samples, "durable_workflows_completed_total", name="core_retry", queue="default") == 1
    assert value(samples, "durable_workflows_failed_total", name="core_retry", queue="default") == 1
    assert value(samples, "durable_steps_retried_total", name="core_retry", queue="default") == 1
    assert value(samples, "durable_steps_failed_total", name="core_retry", queue="default") == 1
    assert value(samples, "durable_step_duration_seconds_count", name="core_greet", queue="default") == 8
    assert value(samples, "durable_workflows", status="COMPLETED") == 9
    assert value(samples, "durable_store_up") == 1

    victim = supervisor.worker_pids()[0]  # idle: every workflow has ended
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: gone(victim) and len(supervisor.live_workers()) == 2, 60, "the killed worker to be replaced")
    submit_many(fleet.db, "core_greet", greetings("b", 6))
    wait_status(fleet.db, list(greetings("b", 6)), "COMPLETED", 60)

    completed = rows(fleet.db, "core_greet", "COMPLETED")
    assert completed == 14
    samples = scrape_once_counted(port, "durable_workflows_completed_total", completed, name="core_greet", queue="default")
    assert value(samples, "durable_workflows_completed_total", name="core_greet", queue="default") == completed
    assert value(samples, "durable_workflows_started_total", name="core_greet", queue="default") == completed
    assert value(samples, "durable_worker_restarts_total", reason="crashed") == 1
    assert value(samples, "durable_workflows", status="COMPLETED") == completed + 1
    assert value(samples, "durable_workflows_running") == 0
    stop_and_check_counters_removed(supervisor)


@contextlib.contextmanager
def sqlite_locked(db: Path) -> Iterator[None]:
    """Another process's hold on the database's WAL locks: every new connection to it fails."""
    fd = os.open(f"{db}-shm", os.O_RDWR)

    def locked() -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, WAL_LOCKS_LENGTH, WAL_LOCKS_OFFSET, os.SEEK_SET)
            return True
        except OSError:
            return False  # a reader holds one of them for a moment

    try:
        wait_for(locked, 30, "the WAL locks", interval=0.01)
        yield
    finally:
        os.close(fd)  # releases the locks


@pytest.fixture(params=["sqlite", "postgresql"])
def outage_fleet(request: pytest.FixtureRequest, tmp_path: Path, db_path: Path) -> Iterator[tuple[Fleet, Outage]]:
    """A fleet on a database this test can make unreachable: (fleet, a context manager factory).

    PostgreSQL: a cluster of this test's own (it is halted), skipped with an external server.
    """
    cluster = None
    if request.param == "postgresql":
        cluster = pg_cluster_or_skip(crash_safe=True)
        if cluster.external:
            pytest.skip("an external PostgreSQL server cannot be halted by the tests")
    started = Fleet(tmp_path, cluster.create_database() if cluster else db_path)
    try:
        yield started, (lambda: _halted(cluster)) if cluster else (lambda: sqlite_locked(db_path))
    finally:
        started.cleanup()
        if cluster is not None:
            cluster.stop()


@contextlib.contextmanager
def _halted(cluster: PgCluster) -> Iterator[None]:
    cluster.halt()
    try:
        yield
    finally:
        cluster.resume()


def test_healthz_answers_503_while_the_store_is_unreachable(outage_fleet) -> None:
    started, unreachable = outage_fleet
    port = free_port()
    supervisor = started.start(workers=1, extra=("--metrics-port", str(port)))
    assert wait_probe(port, "/healthz", 200) == "ok\n"
    with unreachable():
        reason = wait_probe(port, "/healthz", 503)
        assert reason.count("\n") == 1 and reason.strip(), reason
        assert "store" in reason, reason
        assert supervisor.popen.poll() is None  # alive: the probe reports, nothing else gives up
    assert wait_probe(port, "/healthz", 200) == "ok\n"
    wait_probe(port, "/readyz", 200)
    if not is_url(started.db):
        assert "locking protocol" in reason or "has not answered" in reason, reason
    stop_and_check_counters_removed(supervisor)


@on_both_backends
def test_a_metrics_port_already_taken_is_one_error_line(fleet) -> None:  # noqa: F811
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = fleet.start(workers=1, ready=False, extra=("--metrics-port", str(port)))
        assert supervisor.wait_exit(60) == 1
    lines = supervisor.log().strip().splitlines()
    assert lines[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}"), lines
    assert not supervisor.worker_pids()


def test_the_counters_folder_of_a_killed_supervisor_is_removed_by_the_next_one(fleet) -> None:  # noqa: F811
    """kill -9 of a supervisor runs no cleanup: the next supervisor with --metrics-port removes its folder.

    A folder whose supervisor still runs is kept.
    """
    killed = fleet.start(workers=1, extra=("--metrics-port", str(free_port())))
    folder = counters_folder(killed)
    live = fleet.start(workers=1, extra=("--metrics-port", str(free_port())))
    live_folder = counters_folder(live)
    killed.popen.send_signal(signal.SIGKILL)
    killed.popen.wait(60)
    assert folder.is_dir(), folder  # nobody cleaned up after it
    fleet.start(workers=1, extra=("--metrics-port", str(free_port())))
    assert not folder.exists(), folder
    assert live_folder.is_dir(), live_folder
    stop_and_check_counters_removed(live)
