"""The experiment's processes: the supervisors it starts, kills and restarts (one per host), and leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from ..backends import Store
from ..errors import DurableError
from ..liveness import process_alive
from .options import APP, ChaosOptions

#: The folder holding the ``durable_workers`` and ``supervisor`` packages.
ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment of a child process: no inherited ``DURABLE_*`` settings, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def is_alive(proc: psutil.Process) -> bool:
    """True while ``proc`` runs (a zombie or a vanished process is not alive)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_using(db: str) -> list[psutil.Process]:
    """Live processes (other than this one and its ancestors) whose command line names ``db``.

    Ancestors are left out: a wrapper that started the experiment (``timeout``,
    ``sudo``) names the database too, and is no orphan.
    """
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid not in mine and db in (proc.info["cmdline"] or []) and is_alive(proc):
            found.append(proc)
    return found


def kill_orphans(db: str, grace: float) -> list[dict[str, Any]]:
    """Processes naming ``db`` still alive after ``grace`` s: described, then killed."""
    deadline = time.monotonic() + grace
    pause = threading.Event()
    left = processes_using(db)
    while left and time.monotonic() < deadline:
        pause.wait(0.1)
        left = processes_using(db)
    found = []
    for proc in left:
        try:
            found.append({"pid": proc.pid, "status": proc.status(), "cmdline": " ".join(proc.cmdline())[:200]})
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        except psutil.Error:
            continue
    return found


def live_worker_ids(store: Store) -> set[str]:
    """Ids of the workers whose process still runs (on this host); an unreadable store gives none."""
    try:
        workers = store.list_workers()
    except DurableError:
        return set()
    return {w.id for w in workers if process_alive(w.pid, w.proc_started_at)}


class Fleet:
    """The supervisor process the harness starts, kills and restarts (of host ``host_id``, if given)."""

    def __init__(self, options: ChaosOptions, db: str, log_path: Path, host_id: str | None = None) -> None:
        self.options = options
        self.db = db
        self.log_path = log_path
        self.host_id = host_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start a supervisor of ``options.workers`` workers, its output appended to the log."""
        command = [
            sys.executable, "-m", "supervisor",
            "--workers", str(self.options.workers),
            "--concurrency", str(self.options.concurrency),
            "--db", self.db,
            "--app", APP,
            "--ttl", str(self.options.ttl),
            "--shutdown-timeout", "20",
            "--log-level", self.options.log_level,
        ] + (["--host-id", self.host_id] if self.host_id else [])  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=str(self.log_path.parent),  # beside the database file (a URL has no folder)
                start_new_session=True,
            )
        self.starts += 1

    def _env(self) -> dict[str, str]:
        """The supervisor's environment (its workers inherit it): the fleet's lock patience and log format, if set."""
        env = child_env()
        if os.environ.get("DURABLE_LOG_FORMAT"):  # `durable chaos --log-format` (child_env drops DURABLE_*)
            env["DURABLE_LOG_FORMAT"] = os.environ["DURABLE_LOG_FORMAT"]
        patience = self.options.fleet_patience()
        if patience is not None:
            env["DURABLE_LOCK_PATIENCE"] = str(patience)
        return env

    def alive(self) -> bool:
        """True while the current supervisor runs."""
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> list[psutil.Process]:
        """Worker processes of the current supervisor."""
        if self.proc is None or not self.alive():
            return []
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                if "worker" in child.cmdline() and is_alive(child):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def kill(self) -> list[int]:
        """``kill -9`` the supervisor; return the pids of its workers at that moment."""
        assert self.proc is not None
        fleet = [p.pid for p in self.workers()]
        self.proc.kill()
        self.proc.wait()
        return fleet

    def kill_host(self) -> list[int]:
        """SIGKILL the supervisor and all its workers at once (the whole host dies); return the workers' pids."""
        assert self.proc is not None
        workers = self.workers()
        for proc in (self.proc, *workers):
            try:
                proc.kill()
            except (psutil.Error, ProcessLookupError):
                pass
        self.proc.wait()
        return [p.pid for p in workers]

    def tick(self, now: float) -> None:
        """Nothing to do for one host (see :meth:`Hosts.tick`)."""

    def stop(self, timeout: float = 40.0) -> bool:
        """Graceful stop (SIGTERM, then SIGKILL of the group); True if it stopped in time."""
        if not self.alive():
            return True
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            return False


class Hosts:
    """``options.hosts`` fleets with distinct host identities on one database, driven as one fleet.

    The supervisor fault kills (and restarts) the supervisor of one host that
    is up; :meth:`kill_host` kills a whole host, which stays down for
    ``options.host_down_for()`` seconds before :meth:`tick` restarts it.
    """

    def __init__(self, options: ChaosOptions, db: str, log_path: Path) -> None:
        self.db = db
        self.fleets = [Fleet(options, db, log_path, host_id=f"chaos-host-{i + 1}") for i in range(options.hosts)]
        self.down_until: dict[int, float] = {}  # index of a killed host -> when it is restarted
        self.down_for = options.host_down_for()

    def _up(self) -> list[Fleet]:
        return [f for i, f in enumerate(self.fleets) if i not in self.down_until]

    def _current(self) -> Fleet:
        """The host a supervisor fault or a restart is about: the first that is up and exited, else the first up."""
        up = self._up()
        return next((f for f in up if not f.alive()), up[0])

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The supervisor process of :meth:`_current`."""
        return self._current().proc

    @property
    def starts(self) -> int:
        """Supervisor starts on every host."""
        return sum(f.starts for f in self.fleets)

    def start(self) -> None:
        """Start the supervisor of every host that is up and not running."""
        for fleet in self._up():
            if not fleet.alive():
                fleet.start()

    def alive(self) -> bool:
        """True while every host that is up has its supervisor running."""
        return all(f.alive() for f in self._up())

    def workers(self) -> list[psutil.Process]:
        """Worker processes of every host."""
        return [p for f in self.fleets for p in f.workers()]

    def kill(self) -> list[int]:
        """``kill -9`` the supervisor of one host (see :meth:`Fleet.kill`)."""
        return self._current().kill()

    def can_lose_host(self) -> bool:
        """True when every host is up and running, so another one takes over a killed one."""
        return not self.down_until and len(self.fleets) > 1 and self.alive()

    def kill_host(self, index: int, now: float) -> tuple[int, list[int]]:
        """Kill host ``index`` whole; return its supervisor's pid and its workers' pids."""
        fleet = self.fleets[index]
        assert fleet.proc is not None
        pid = fleet.proc.pid
        workers = fleet.kill_host()
        self.down_until[index] = now + self.down_for
        return pid, workers

    def tick(self, now: float) -> None:
        """Restart the hosts whose down time is over."""
        for index, due in list(self.down_until.items()):
            if now >= due:
                del self.down_until[index]
                self.fleets[index].start()

    def stop(self, timeout: float = 40.0) -> bool:
        """Stop every host (a host that is down stays down); True if all stopped in time."""
        self.down_until.clear()
        return all([f.stop(timeout) for f in self.fleets])
