"""A real fleet for the process benchmarks: ``python -m supervisor`` as a subprocess.

The supervisor is the project's own (``durable-supervisor``); it spawns the
worker processes, which load ``benchmarks.flows``. The benchmark process
talks to the fleet only through the database (raw read-only queries, so its
polling costs little) and through signals.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .databases import is_postgres, reader

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.flows"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


class FleetError(RuntimeError):
    """The fleet did not do what the benchmark waited for."""


class Fleet:
    """One supervisor process and its workers on ``db`` (a SQLite path or a PostgreSQL URL).

    ``host_id`` runs the supervisor as another host (``DURABLE_HOST_ID``);
    ``log_path`` defaults to ``db`` with a ``.fleet.log`` suffix (needed for a URL).
    """

    def __init__(
        self,
        db: str | Path,
        *,
        workers: int,
        synchronous: str,
        concurrency: int = 1,
        ttl: float = 15.0,
        log_level: str = "WARNING",
        host_id: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.db = db if is_postgres(db) else Path(db)
        self.host_id = host_id
        self.workers = workers
        self.synchronous = synchronous
        self.concurrency = concurrency
        self.ttl = ttl
        self.log_level = log_level
        self.log_path = log_path if log_path is not None else Path(db).with_suffix(".fleet.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()
        self._log: Any = None

    # ----------------------------------------------------------------- lifecycle

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        if not is_postgres(self.db):
            env["DURABLE_SYNCHRONOUS"] = self.synchronous
        if self.host_id:
            env["DURABLE_HOST_ID"] = self.host_id
        return env

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "supervisor",
            "--workers", str(self.workers),
            "--concurrency", str(self.concurrency),
            "--db", str(self.db),
            "--app", APP,
            "--ttl", str(self.ttl),
            "--shutdown-timeout", "20",
            "--log-level", self.log_level,
        ]  # fmt: skip

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> "Fleet":
        """Start the supervisor; with ``wait``, return once every worker is registered and running."""
        if self._log is None:
            self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            env=self.env(),
            cwd=str(self.log_path.parent),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.seen_pids.add(self.process.pid)
        if wait:
            self.wait_ready(timeout=timeout)
        return self

    def worker_pids(self) -> list[int]:
        """PIDs of this supervisor's live worker processes."""
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        self.seen_pids.update(pids)
        return pids

    def wait_ready(self, *, timeout: float = 60.0) -> list[int]:
        """Block until ``workers`` live children each have a ``running`` worker row."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FleetError(f"supervisor exited with {self.process.returncode}\n{self.log_tail()}")
            pids = self.worker_pids()
            if len(pids) == self.workers and (is_postgres(self.db) or Path(self.db).exists()):
                try:
                    with reader(self.db) as conn:
                        rows = conn.execute(
                            "SELECT pid FROM workers WHERE state = 'running' AND supervisor_pid = ?",
                            (self.process.pid,),
                        ).fetchall()
                except (sqlite3.OperationalError, *_pg_errors()):
                    rows = []
                if set(pids) <= {pid for (pid,) in rows}:
                    return pids
            time.sleep(0.02)
        raise FleetError(f"fleet of {self.workers} not ready within {timeout}s\n{self.log_tail()}")

    def kill_supervisor(self) -> None:
        """SIGKILL the supervisor only (its workers get SIGTERM from the kernel)."""
        assert self.process is not None
        self.worker_pids()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM, as Ctrl+C would); SIGKILL everything left after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            self.worker_pids()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.kill_leftovers()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill_leftovers(self) -> None:
        """SIGKILL any process of this fleet still alive (workers orphaned by a killed supervisor)."""
        for pid in sorted(self.seen_pids):
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            if str(self.db) in cmdline:  # never a reused pid of someone else's process
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass

    def __enter__(self) -> "Fleet":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- measurement

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds used so far by the supervisor and each worker, by pid."""
        pids = ([self.process.pid] if self.process else []) + self.worker_pids()
        used = {}
        for pid in pids:
            seconds = cpu_seconds(pid)
            if seconds is not None:
                used[pid] = seconds
        return used


def _pg_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process: the sum of its threads' nanosecond ``schedstat`` on Linux.

    ``psutil``'s user + system times tick at 10 ms, too coarse for an idle
    process; it is the fallback elsewhere. ``None`` once the process is gone.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e9
    except OSError:
        pass
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    return times.user + times.system


def wait_terminal(
    db: str | Path, ids: tuple[str, str], count: int, *, timeout: float, fleet: Fleet | None = None, poll: float = 0.05
) -> tuple[float, dict[str, int]]:
    """Wait until ``count`` workflows with ``ids[0] <= id < ids[1]`` are terminal.

    Returns the latest ``updated_at`` among them (the last completion, in the
    fleet's clock) and the counts by status.
    """
    deadline = time.monotonic() + timeout
    with reader(db) as conn:
        while True:
            rows = conn.execute(
                "SELECT status, COUNT(*), MAX(updated_at) FROM workflows WHERE id >= ? AND id < ? GROUP BY status",
                ids,
            ).fetchall()
            counts = {status: n for status, n, _ in rows}
            done = sum(counts.get(s, 0) for s in TERMINAL)
            if done >= count:
                last = max(at for status, _, at in rows if status in TERMINAL)
                return last, counts
            if fleet is not None and fleet.process is not None and fleet.process.poll() is not None:
                raise FleetError(f"supervisor died ({fleet.process.returncode})\n{fleet.log_tail()}")
            if time.monotonic() > deadline:
                raise FleetError(
                    f"{done}/{count} workflows finished within {timeout}s ({counts})\n"
                    + (fleet.log_tail() if fleet else "")
                )
            time.sleep(poll)
