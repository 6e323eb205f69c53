"""The fault injector: chooses each fault, sends it, ends it, and remembers it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import psutil

from ..backends import Store
from ..errors import DurableError
from .disk import SmallDisk
from .fleet import Fleet, Hosts, child_env, is_alive
from .options import ChaosOptions, Fault

#: Relative frequency of each fault kind among those allowed at a given moment.
FAULT_WEIGHTS = {"kill": 6, "stop": 2, "supervisor": 1, "lock": 2, "outage": 1, "diskfull": 1, "host": 1}
#: Fault kinds held by the lock-holder helper process (one at a time).
HOLDER_KINDS = ("lock", "outage")
#: Seconds after a lock holder ended before the next lock or outage fault.
HOLD_GAP = 2.0


class Injector:
    """Chooses and sends faults; remembers each one.

    ``disk`` is the small filesystem the database lives on (the ``diskfull``
    fault is sent only with one).
    """

    def __init__(
        self,
        options: ChaosOptions,
        fleet: Fleet | Hosts,
        store: Store,
        rng: random.Random,
        disk: SmallDisk | None = None,
    ) -> None:
        self.options = options
        self.fleet = fleet
        self.store = store
        self.rng = rng
        self.faults: list[Fault] = []
        self.stopped: dict[int, tuple[psutil.Process, float, Fault]] = {}
        self.lock_proc: subprocess.Popen[str] | None = None
        self.lock_fault: Fault | None = None
        self.last_lock_end = 0.0
        self.last_supervisor_kill = 0.0
        self.old_fleets: list[tuple[Fault, list[psutil.Process]]] = []
        self.skipped = 0
        self.disk = disk

    # ----------------------------------------------------------------- choice

    def _eligible(self, now: float) -> list[str]:
        kinds = []
        for kind in self.options.faults:
            if kind not in FAULT_WEIGHTS:  # planted in the workflows, not sent
                continue
            if kind == "stop" and self.stopped:
                continue
            if kind in HOLDER_KINDS and (self.lock_proc is not None or now - self.last_lock_end < HOLD_GAP):
                continue
            if kind == "diskfull" and (self.disk is None or self.disk.busy(now)):
                continue
            if kind == "supervisor" and (
                now - self.last_supervisor_kill < self.options.supervisor_gap or not self.fleet.alive()
            ):
                continue
            if kind == "host" and not (isinstance(self.fleet, Hosts) and self.fleet.can_lose_host()):
                continue
            kinds.append(kind)
        return kinds

    def inject(self, now: float) -> Fault | None:
        """Send one fault: each allowed kind once first (in random order), then weighted at random.

        Returns the fault sent, or None when no kind was allowed or its target vanished.
        """
        kinds = self._eligible(now)
        if not kinds:
            self.skipped += 1
            return None
        unsent = [k for k in kinds if not any(f.kind == k for f in self.faults)]
        if unsent:
            kind = self.rng.choice(unsent)
        else:
            kind = self.rng.choices(kinds, weights=[FAULT_WEIGHTS[k] for k in kinds])[0]
        fault = getattr(self, f"_{kind}")(now)
        if fault is None:
            self.skipped += 1
        else:
            self.faults.append(fault)
        return fault

    def _held_by_pid(self) -> dict[int, list[str]]:
        try:
            pids = {w.id: w.pid for w in self.store.list_workers(alive_only=True)}
            held = self.store.leases_by_worker()
        except DurableError:
            return {}
        result: dict[int, list[str]] = {}
        for worker_id, leases in held.items():
            if worker_id in pids:
                result.setdefault(pids[worker_id], []).extend(lease.workflow_id for lease in leases)
        return result

    def _targets(self) -> list[psutil.Process]:
        return [p for p in self.fleet.workers() if p.pid not in self.stopped]

    # ----------------------------------------------------------------- faults

    @staticmethod
    def _send(target: psutil.Process, signum: int) -> float | None:
        """Send ``signum`` to ``target``; when it was sent, or None if the process is gone."""
        try:
            at = time.time()
            target.send_signal(signum)
        except psutil.Error:
            return None
        return at

    def _kill(self, now: float) -> Fault | None:
        targets = self._targets()
        if not targets:
            return None
        target = self.rng.choice(targets)
        held = self._held_by_pid().get(target.pid, [])
        at = self._send(target, signal.SIGKILL)
        return None if at is None else Fault("kill", target.pid, at, held=held)

    def _stop(self, now: float) -> Fault | None:
        targets = self._targets()
        if not targets:
            return None
        held_by = self._held_by_pid()
        busy = [p for p in targets if held_by.get(p.pid)]
        target = self.rng.choice(busy or targets)
        at = self._send(target, signal.SIGSTOP)
        if at is None:
            return None
        fault = Fault("stop", target.pid, at, held=held_by.get(target.pid, []))
        self.stopped[target.pid] = (target, at + self.options.stop_for(), fault)
        return fault

    def _supervisor(self, now: float) -> Fault | None:
        if not self.fleet.alive():
            return None
        assert self.fleet.proc is not None
        pid = self.fleet.proc.pid
        held_by = self._held_by_pid()
        at = time.time()
        fleet = self.fleet.kill()
        self.fleet.start()
        self.last_supervisor_kill = at
        held = sorted({wf for p in fleet for wf in held_by.get(p, [])})
        fault = Fault("supervisor", pid, at, held=held, fleet=fleet)
        procs = []
        for p in fleet:
            try:
                procs.append(psutil.Process(p))
            except psutil.Error:
                pass
        self.old_fleets.append((fault, procs))
        return fault

    def _host(self, now: float) -> Fault | None:
        """SIGKILL one host's supervisor and workers at once; it is restarted after ``host_down_for()`` s."""
        assert isinstance(self.fleet, Hosts)
        index = self.rng.randrange(len(self.fleet.fleets))
        held_by = self._held_by_pid()
        at = time.time()
        pid, workers = self.fleet.kill_host(index, at)
        held = sorted({wf for p in workers for wf in held_by.get(p, [])})
        host_id = self.fleet.fleets[index].host_id or ""
        return Fault("host", pid, at, end=at + self.fleet.down_for, held=held, fleet=workers, detail=host_id)

    def _hold(self, kind: str, seconds: float) -> Fault:
        """Start the lock-holder helper: it holds the write lock for ``seconds``."""
        command = [
            sys.executable, "-m", "durable_workers.chaos", "lock",
            "--db", self.fleet.db, "--seconds", str(seconds),
        ]  # fmt: skip
        self.lock_proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
        )
        self.lock_fault = Fault(kind, self.lock_proc.pid, time.time(), detail="starting")
        return self.lock_fault

    def _lock(self, now: float) -> Fault | None:
        return self._hold("lock", self.options.lock_seconds)

    def _outage(self, now: float) -> Fault | None:
        """Hold the write lock past the fleet's lock patience: the store is unavailable meanwhile."""
        return self._hold("outage", self.options.outage_seconds)

    def _diskfull(self, now: float) -> Fault | None:
        assert self.disk is not None
        return self.disk.fill(self.options.diskfull_seconds)

    # ----------------------------------------------------------------- housekeeping

    def tick(self, now: float) -> None:
        """Resume stopped workers whose time is up; collect a finished lock holder and old fleets."""
        for pid, (proc, due, fault) in list(self.stopped.items()):
            if now >= due:
                self._resume(pid, proc, fault)
        if self.lock_proc is not None and self.lock_proc.poll() is not None:
            self._collect_lock()
        for fault, procs in self.old_fleets:
            if fault.end is None and not any(is_alive(p) for p in procs):
                fault.end = time.time()
        if self.disk is not None:
            self.disk.tick(now)
        self.fleet.tick(now)  # restarts a killed host once its down time is over

    def _resume(self, pid: int, proc: psutil.Process, fault: Fault) -> None:
        try:
            proc.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass
        fault.end = time.time()
        del self.stopped[pid]

    def _collect_lock(self) -> None:
        assert self.lock_proc is not None and self.lock_fault is not None
        out = self.lock_proc.stdout.read() if self.lock_proc.stdout else ""
        fault = self.lock_fault
        fault.detail = ""
        for line in out.splitlines():
            word, _, value = line.partition(" ")
            if word == "locked":
                fault.start = float(value)
            elif word == "released":
                fault.end = float(value)
        if fault.end is None:
            fault.detail = f"lock holder failed (exit {self.lock_proc.returncode}): {out.strip()[-300:]}"
            fault.end = time.time()
        self.last_lock_end = time.time()
        self.lock_proc = None
        self.lock_fault = None

    def finish(self) -> None:
        """Resume every stopped worker and wait for the lock holder."""
        for pid, (proc, _, fault) in list(self.stopped.items()):
            self._resume(pid, proc, fault)
        if self.lock_proc is not None:
            self.lock_proc.wait()
            self._collect_lock()
        if self.disk is not None:
            self.disk.empty()

    def wait_old_fleets(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the workers of killed supervisors to exit (timing each)."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline and any(f.end is None for f, _ in self.old_fleets):
            self.tick(time.time())
            pause.wait(0.1)
