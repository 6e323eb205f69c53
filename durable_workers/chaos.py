"""``durable chaos``: a self-checking fault-injection experiment.

The experiment creates a fresh database, submits ``--workflows`` check workflows
(:mod:`durable_workers.checkflows`) plus a few bad-input workflows, starts a real
supervisor with ``--workers`` worker processes, and while they run sends faults
every ``--fault-interval`` seconds (±50 %), chosen among ``--faults``:

``kill``        ``kill -9`` of a random worker of the current fleet.
``stop``        ``SIGSTOP`` of a worker that holds a lease, ``SIGCONT`` after
                ``ttl + 1.5`` s (past its lease: it must come back fenced).
``supervisor``  ``kill -9`` of the supervisor, restarted at once by the
                harness; its workers must drain and exit by themselves.
``lock``        a separate process holds the SQLite write lock
                (``BEGIN IMMEDIATE``) for ``--lock-seconds``.

When every workflow has ended (or ``--timeout`` passed) the fleet is stopped and
the verdict is computed from the database alone: the workflows table, the steps
table, and the side-effect ledger every check step appends to in its own
transaction, matched against the faults sent (each with its time and target
pid). See docs/reliability.md for what each line means.

Exit status 0 only when: every check workflow COMPLETED; no COMPLETED step was
executed again; every re-execution of a step is explained by a kill or stop of
the worker that ran it, during that step; no write from a fenced worker was
accepted; no ``database is locked`` reached workflow code; every COMPLETED step
holds the value its step returned; each bad-input workflow ended in its
documented state; and no worker process outlived the experiment.

Helpers run as separate processes: ``python -m durable_workers.chaos lock``
(the lock holder) and ``python -m durable_workers.chaos submit`` (a
concurrent submitter for the stress tests).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import click
import psutil

from .client import Client
from .errors import DurableError
from .models import Status, StepStatus
from .store import TERMINAL, LedgerRecord, StepRecord, Store, WorkflowRecord

#: The app of the experiment's workers (not imported here: importing it registers workflows).
APP = "durable_workers.checkflows"
#: Names of the check workflows, whose steps the verdict matches against the ledger.
CHECK_NAMES = ("chaos_check", "chaos_short")
#: Bad-input workflows: name -> (documented final status, text its error must contain).
BAD_INPUT = {
    "chaos_unserialisable": ("FAILED", "NotSerializableError"),
    "chaos_raises": ("FAILED", "ValueError"),
    "chaos_sleeper": ("FAILED", "StepTimeoutError"),
    "chaos_unknown": ("PENDING", ""),
}
#: Also a documented end of a FAILED one: a kill hit the same step max_attempts times (poison pill).
POISON_TEXT = "crashed the worker"
#: Submitted unchecked: no worker registers it.
UNKNOWN_NAME = "chaos_unknown"
FAULT_KINDS = ("kill", "stop", "supervisor", "lock")
#: Relative frequency of each fault kind among those allowed at a given moment.
FAULT_WEIGHTS = {"kill": 6, "stop": 2, "supervisor": 1, "lock": 2}
#: Markers of a lock error in stored errors and in worker logs.
LOCK_MARKERS = ("database is locked", "StoreBusyError", "database table is locked")
#: Seconds after SIGCONT within which a stopped worker's in-flight step may still write.
RESUME_GRACE = 1.0
#: Clock slack between a ledger row and a fault (same host, same clock).
SLACK = 0.05


@dataclass(frozen=True)
class ChaosOptions:
    """Settings of one experiment (see ``durable chaos --help``)."""

    workers: int = 4
    workflows: int = 100
    fault_interval: float = 0.5
    faults: tuple[str, ...] = FAULT_KINDS
    ttl: float = 2.0
    timeout: float = 300.0
    db: str | None = None
    seed: int | None = None
    workflow: str = "chaos_check"
    fan: int = 3
    loop: int = 3
    work_ms: float = 10.0
    lock_seconds: float = 3.0
    stop_seconds: float | None = None  # default ttl + 1.5
    supervisor_gap: float = 5.0  # at least this long between supervisor kills
    bad_inputs: int = 1  # of each bad-input kind
    concurrency: int = 1
    log_level: str = "WARNING"

    def stop_for(self) -> float:
        return self.stop_seconds if self.stop_seconds is not None else self.ttl + 1.5


@dataclass
class Fault:
    """One fault sent: what, to which pid, when (``end`` for stop and lock)."""

    kind: str
    pid: int | None
    start: float
    end: float | None = None
    held: list[str] = field(default_factory=list)  # workflows the target held at that moment
    fleet: list[int] = field(default_factory=list)  # supervisor kill: its workers
    detail: str = ""


# --------------------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    return env


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_using(db: str) -> list[psutil.Process]:
    """Live processes (other than this one) whose command line names ``db``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid() or db not in (proc.info["cmdline"] or []):
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class Fleet:
    """The supervisor process the harness starts, kills and restarts."""

    def __init__(self, options: ChaosOptions, db: str, log_path: Path) -> None:
        self.options = options
        self.db = db
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        command = [
            sys.executable, "-m", "supervisor",
            "--workers", str(self.options.workers),
            "--concurrency", str(self.options.concurrency),
            "--db", self.db,
            "--app", APP,
            "--ttl", str(self.options.ttl),
            "--shutdown-timeout", "20",
            "--log-level", self.options.log_level,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
                cwd=str(Path(self.db).parent),
                start_new_session=True,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> list[psutil.Process]:
        """Worker processes of the current supervisor."""
        if not self.alive():
            return []
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                if "worker" in child.cmdline() and _alive(child):
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


class Injector:
    """Chooses and sends faults; remembers each one."""

    def __init__(self, options: ChaosOptions, fleet: Fleet, store: Store, rng: random.Random) -> None:
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

    # ----------------------------------------------------------------- choice

    def _eligible(self, now: float) -> list[str]:
        kinds = []
        for kind in self.options.faults:
            if kind == "stop" and self.stopped:
                continue
            if kind == "lock" and (self.lock_proc is not None or now - self.last_lock_end < 2.0):
                continue
            if kind == "supervisor" and (
                now - self.last_supervisor_kill < self.options.supervisor_gap or not self.fleet.alive()
            ):
                continue
            kinds.append(kind)
        return kinds

    def inject(self, now: float) -> Fault | None:
        """Send one fault: each allowed kind once first (in random order), then weighted at random."""
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

    def _kill(self, now: float) -> Fault | None:
        targets = self._targets()
        if not targets:
            return None
        target = self.rng.choice(targets)
        held = self._held_by_pid().get(target.pid, [])
        try:
            at = time.time()
            target.send_signal(signal.SIGKILL)
        except psutil.Error:
            return None
        return Fault("kill", target.pid, at, held=held)

    def _stop(self, now: float) -> Fault | None:
        targets = self._targets()
        if not targets:
            return None
        held_by = self._held_by_pid()
        busy = [p for p in targets if held_by.get(p.pid)]
        target = self.rng.choice(busy or targets)
        try:
            at = time.time()
            target.send_signal(signal.SIGSTOP)
        except psutil.Error:
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

    def _lock(self, now: float) -> Fault | None:
        command = [
            sys.executable, "-m", "durable_workers.chaos", "lock",
            "--db", self.fleet.db, "--seconds", str(self.options.lock_seconds),
        ]  # fmt: skip
        self.lock_proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
        )
        self.lock_fault = Fault("lock", self.lock_proc.pid, time.time(), detail="starting")
        return self.lock_fault

    # ----------------------------------------------------------------- housekeeping

    def tick(self, now: float) -> None:
        """Resume stopped workers whose time is up; collect a finished lock holder and old fleets."""
        for pid, (proc, due, fault) in list(self.stopped.items()):
            if now >= due:
                self._resume(pid, proc, fault)
        if self.lock_proc is not None and self.lock_proc.poll() is not None:
            self._collect_lock()
        for fault, procs in self.old_fleets:
            if fault.end is None and not any(_alive(p) for p in procs):
                fault.end = time.time()

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

    def wait_old_fleets(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline and any(f.end is None for f, _ in self.old_fleets):
            self.tick(time.time())
            pause.wait(0.1)


# --------------------------------------------------------------------------- experiment


def _fresh_db(path: str | None) -> str:
    if path is None:
        folder = tempfile.mkdtemp(prefix="durable-chaos-")
        return str(Path(folder) / "chaos.db")
    target = Path(path).resolve()
    if target.exists() and target.stat().st_size > 0:
        raise DurableError(f"{target} exists; the chaos experiment needs a fresh database (pass a new --db path)")
    if not target.parent.is_dir():
        raise DurableError(f"folder {target.parent} does not exist; create it or pass another --db")
    return str(target)


def submit_all(client: Client, options: ChaosOptions, rng: random.Random) -> dict[str, str]:
    """Submit the check workflows with the bad-input ones spread among them; return id -> name."""
    if options.workflow == "chaos_check":
        check_input: dict[str, Any] = {"fan": options.fan, "loop": options.loop, "work_ms": options.work_ms}
    else:
        check_input = {}
    plan: list[tuple[str, str, dict[str, Any]]] = [
        (f"chk-{i:05d}", options.workflow, check_input) for i in range(options.workflows)
    ]
    bad: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(options.bad_inputs):
        for name in BAD_INPUT:
            values = {"sleep_s": 3.0, "timeout_s": 0.5} if name == "chaos_sleeper" else {}
            bad.append((f"bad-{name.removeprefix('chaos_')}-{n + 1}", name, values))
    for item in bad:  # spread through the queue so they run while faults fly
        plan.insert(rng.randint(0, len(plan)), item)
    submitted = {}
    for workflow_id, name, values in plan:
        client.submit(name, workflow_id, values, check=name != UNKNOWN_NAME)
        submitted[workflow_id] = name
    return submitted


class Experiment:
    """One run: fresh database, fleet, faults, verdict."""

    def __init__(self, options: ChaosOptions, *, progress: Any = None) -> None:
        unknown = set(options.faults) - set(FAULT_KINDS)
        if unknown:
            raise DurableError(f"unknown fault kind(s) {', '.join(sorted(unknown))}; choose from {','.join(FAULT_KINDS)}")
        if options.workflow not in CHECK_NAMES:
            raise DurableError(f"--workflow must be one of {', '.join(CHECK_NAMES)}")
        self.options = options
        self.seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.db = _fresh_db(options.db)
        self.log_path = Path(self.db).with_suffix(".log")
        self.progress = progress or (lambda text: None)
        self.interrupted = False

    def _on_signal(self, signum: int, frame: object) -> None:
        """SIGINT/SIGTERM: end the run and clean up; a second one aborts (cleanup still runs)."""
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def run(self) -> dict[str, Any]:
        """Run the experiment; SIGINT/SIGTERM end it early (the fleet is still stopped)."""
        if threading.current_thread() is not threading.main_thread():
            return self._run()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> dict[str, Any]:
        options = self.options
        client = Client(db=self.db, app=APP)
        store = client.store
        store.ledger_create()
        submitted = submit_all(client, options, self.rng)
        self.progress(f"submitted {len(submitted)} workflows to {self.db}")
        fleet = Fleet(options, self.db, self.log_path)
        injector = Injector(options, fleet, store, self.rng)
        pause = threading.Event()
        started = time.time()
        deadline = started + options.timeout
        unexpected_deaths = 0
        finished = False
        fleet.start()
        try:
            next_fault = started + options.fault_interval * self.rng.uniform(0.5, 1.5)
            next_check = started
            while True:
                now = time.time()
                injector.tick(now)
                if not fleet.alive():
                    unexpected_deaths += 1
                    code = fleet.proc.returncode if fleet.proc else "?"
                    if unexpected_deaths > 5:
                        self.progress(f"supervisor keeps exiting by itself (exit {code}); see {self.log_path}")
                        break
                    self.progress(f"supervisor exited by itself (exit {code}); restarting")
                    fleet.start()
                if now >= next_check:
                    next_check = now + 0.25
                    if _all_ended(store.status_counts_by_name()):
                        finished = True
                        break
                if now >= deadline or self.interrupted:
                    break
                if options.faults and now >= next_fault:
                    injector.inject(now)
                    next_fault = now + options.fault_interval * self.rng.uniform(0.5, 1.5)
                pause.wait(0.01)
            ended = time.time()
            unserved = _quietly(client.unserved_names, [])
            self.progress("interrupted: stopping faults and the fleet" if self.interrupted else "stopping faults and the fleet")
        finally:
            injector.finish()
            stopped_in_time = fleet.stop()
            injector.wait_old_fleets(15.0)
            orphans = self._orphans(grace=10.0)
        verdict = analyse(
            options,
            seed=self.seed,
            db=self.db,
            workflows=store.workflows_named(list(set(submitted.values()))),
            steps=store.steps_of_workflows_named(list(CHECK_NAMES)),
            ledger=store.ledger_rows(),
            faults=injector.faults,
            started=started,
            ended=ended,
            finished=finished,
            log_text=self.log_path.read_text(errors="replace") if self.log_path.exists() else "",
            orphans=orphans,
            unserved=unserved,
            supervisor_starts=fleet.starts,
            unexpected_supervisor_deaths=unexpected_deaths,
            supervisor_stopped_in_time=stopped_in_time,
            skipped_faults=injector.skipped,
        )
        client.close()
        if self.interrupted:
            verdict["interrupted"] = True
            verdict["ok"] = False
        return verdict

    def _orphans(self, grace: float) -> list[dict[str, Any]]:
        """Processes naming our database still alive ``grace`` s after the fleet stopped; killed."""
        deadline = time.monotonic() + grace
        pause = threading.Event()
        left = processes_using(self.db)
        while left and time.monotonic() < deadline:
            pause.wait(0.1)
            left = processes_using(self.db)
        found = []
        for proc in left:
            try:
                found.append({"pid": proc.pid, "status": proc.status(), "cmdline": " ".join(proc.cmdline())[:200]})
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except psutil.Error:
                continue
        return found


def _quietly(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except DurableError:
        return default


def _all_ended(counts: dict[str, dict[str, int]]) -> bool:
    for name, by_status in counts.items():
        if name == UNKNOWN_NAME:
            continue
        if any(status not in TERMINAL for status, n in by_status.items() if n):
            return False
    return True


# --------------------------------------------------------------------------- verdict


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median_s": None, "max_s": None}
    return {
        "count": len(values),
        "median_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
    }


def _value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _has_lock_error(text: str | None) -> bool:
    return bool(text) and any(marker in text for marker in LOCK_MARKERS)


def analyse(
    options: ChaosOptions,
    *,
    seed: int,
    db: str,
    workflows: Iterable[WorkflowRecord],
    steps: Iterable[StepRecord],
    ledger: Iterable[LedgerRecord],
    faults: Sequence[Fault],
    started: float,
    ended: float,
    finished: bool,
    log_text: str,
    orphans: list[dict[str, Any]],
    supervisor_starts: int,
    unserved: Sequence[str] = (UNKNOWN_NAME,),
    unexpected_supervisor_deaths: int,
    supervisor_stopped_in_time: bool,
    skipped_faults: int = 0,
) -> dict[str, Any]:
    """The verdict of a run, from the database, the faults sent and the fleet's log."""
    workflows = list(workflows)
    checks = {w.id: w for w in workflows if w.name in CHECK_NAMES}
    bad = [w for w in workflows if w.name in BAD_INPUT]
    step_rows = {(s.workflow_id, s.step_key): s for s in steps if s.workflow_id in checks}
    executions: dict[tuple[str, str], list[LedgerRecord]] = {}
    begins: dict[str, list[LedgerRecord]] = {}
    for row in ledger:
        if row.workflow_id not in checks:
            continue
        if row.step_key.startswith("@"):
            begins.setdefault(row.workflow_id, []).append(row)
        else:
            executions.setdefault((row.workflow_id, row.step_key), []).append(row)

    window = max(5.0, options.lock_seconds + 2 * options.ttl)
    kills: dict[int, list[Fault]] = {}  # pid -> fault (kill or stop) for explanation
    for fault in faults:
        if fault.kind in ("kill", "stop") and fault.pid is not None:
            kills.setdefault(fault.pid, []).append(fault)

    # ---- workflows
    status_of = {s.value: 0 for s in Status}
    for w in checks.values():
        status_of[w.status] = status_of.get(w.status, 0) + 1
    stuck = [w for w in checks.values() if w.status not in TERMINAL]
    failed = [w for w in checks.values() if w.status != Status.COMPLETED.value and w.status in TERMINAL]

    # ---- steps: winners, mismatches, re-executions and their explanations
    output_mismatches: list[dict[str, Any]] = []
    explained = {"kill": 0, "stop": 0}
    unexplained: list[dict[str, Any]] = []
    completed_reexecuted: list[dict[str, Any]] = []
    fenced_accepted: list[dict[str, Any]] = []
    fenced_effects = 0
    hits: set[int] = set()  # ids of faults that hit a running step
    multi = 0
    extra = 0
    for key, row in step_rows.items():
        if row.status == StepStatus.COMPLETED.value and key not in executions:
            output_mismatches.append({"workflow_id": key[0], "step_key": key[1], "why": "no execution in the ledger"})
    for key, rows in executions.items():
        step = step_rows.get(key)
        completed = step is not None and step.status == StepStatus.COMPLETED.value
        winner = None
        if completed:
            output = _value(step.output)
            matching = [r for r in rows if _value(r.value) == output]
            if not matching:
                output_mismatches.append(
                    {"workflow_id": key[0], "step_key": key[1], "why": "output matches no execution", "output": step.output}
                )
            else:
                winner = matching[0]
        done_at = step.finished_at if completed and step.finished_at is not None else float("inf")
        if len(rows) > 1:
            multi += 1
            extra += len(rows) - 1
        losers = [r for r in rows if r is not winner]
        if winner is None and losers:
            losers = losers[:-1]  # never completed: the last execution needs no explanation
        for r in losers:
            if r.token is not None and r.lease_token is not None and r.lease_token != r.token:
                fenced_effects += 1
            cause = _explain(r, kills.get(r.pid, []), done_at, window)
            if cause is not None:
                explained[cause.kind] += 1
                hits.add(id(cause))
            else:
                unexplained.append(
                    {
                        "workflow_id": r.workflow_id,
                        "step_key": r.step_key,
                        "pid": r.pid,
                        "at": r.at,
                        "token": r.token,
                        "lease_token": r.lease_token,
                        "completed_at": None if done_at == float("inf") else done_at,
                    }
                )
            after_completion = r.step_status == StepStatus.COMPLETED.value or r.at > done_at + SLACK
            if after_completion and (cause is None or cause.kind != "stop"):
                completed_reexecuted.append({"workflow_id": r.workflow_id, "step_key": r.step_key, "pid": r.pid})
        # a fenced write accepted: the step's recorded result was written by an older
        # token after a newer lease holder had already begun the workflow
        if winner is not None and winner.token is not None and step.finished_at is not None:
            for b in begins.get(key[0], []):
                if b.token is not None and b.token > winner.token and b.at < step.finished_at - SLACK:
                    fenced_accepted.append(
                        {"workflow_id": key[0], "step_key": key[1], "token": winner.token, "newer_token": b.token}
                    )
                    break

    # ---- workflow results: replay consistency and fenced result writes
    result_mismatches: list[dict[str, Any]] = []
    for w in checks.values():
        if w.status != Status.COMPLETED.value or not isinstance(w.result, dict):
            continue
        for step_key, nonce in (w.result.get("nonces") or {}).items():
            row = step_rows.get((w.id, step_key))
            if row is None or (_value(row.output) or {}).get("nonce") != nonce:
                result_mismatches.append({"workflow_id": w.id, "step_key": step_key})
        token = w.result.get("token")
        for b in begins.get(w.id, []):
            if token is not None and b.token is not None and b.token > token and b.at < w.updated_at - SLACK:
                fenced_accepted.append({"workflow_id": w.id, "step_key": "(result)", "token": token, "newer_token": b.token})
                break

    # ---- lock errors
    lock_errors_wf = [w.id for w in workflows if _has_lock_error(w.error)]
    lock_errors_wf += [f"{s.workflow_id}/{s.step_key}" for s in step_rows.values() if _has_lock_error(s.error)]
    log_lines = log_text.splitlines()
    lock_errors_log = [line for line in log_lines if _has_lock_error(line)]
    tracebacks = sum(1 for line in log_lines if line.startswith("Traceback"))

    # ---- bad-input workflows
    bad_report = []
    for w in bad:
        want_status, want_text = BAD_INPUT[w.name]
        error = w.error or ""
        ok = w.status == want_status and (want_text in error or (want_status == "FAILED" and POISON_TEXT in error))
        if w.name == UNKNOWN_NAME:  # never claimed, and `durable status` says why
            ok = ok and w.attempts == 0 and w.name in unserved
            error = f"waiting: no live worker registers {w.name!r}" if w.name in unserved else error
        bad_report.append(
            {
                "id": w.id,
                "name": w.name,
                "status": w.status,
                "expected": want_status,
                "error": error.splitlines()[0] if error else None,
                "ok": ok,
            }
        )
    expected_failures = [b for b in bad_report if b["expected"] == Status.FAILED.value]
    expected_pending = [b for b in bad_report if b["expected"] == Status.PENDING.value]

    # ---- recovery: from a fault to the next step of each workflow its target held
    by_workflow: dict[str, list[LedgerRecord]] = {}
    for rows in executions.values():
        for r in rows:
            by_workflow.setdefault(r.workflow_id, []).append(r)
    for rows in by_workflow.values():
        rows.sort(key=lambda r: r.at)
    recovery: dict[str, list[float]] = {"kill": [], "stop": [], "supervisor": []}
    unlocked: dict[str, list[float]] = {"kill": [], "stop": [], "supervisor": []}
    locks = [(f.start, f.end or f.start) for f in faults if f.kind == "lock"]
    for fault in faults:
        if fault.kind not in recovery:
            continue
        gone = set(fault.fleet) if fault.kind == "supervisor" else {fault.pid}
        for wf in fault.held:
            if wf not in checks:
                continue
            nxt = next((r.at for r in by_workflow.get(wf, []) if r.at > fault.start and r.pid not in gone), None)
            record = checks[wf]
            if nxt is None and record.status == Status.COMPLETED.value and record.updated_at > fault.start:
                nxt = record.updated_at
            if nxt is not None:
                recovery[fault.kind].append(nxt - fault.start)
                if not any(start < nxt and end > fault.start for start, end in locks):
                    unlocked[fault.kind].append(nxt - fault.start)
    fleet_exit = [f.end - f.start for f in faults if f.kind == "supervisor" and f.end is not None]

    # ---- throughput
    done_times = [w.updated_at for w in checks.values() if w.status == Status.COMPLETED.value]
    last = max(done_times) if done_times else ended
    duration = max(last - started, 1e-9)
    step_count = sum(len(rows) for rows in executions.values())

    fault_counts = {kind: sum(1 for f in faults if f.kind == kind) for kind in FAULT_KINDS}
    lock_held = [f.end - f.start for f in faults if f.kind == "lock" and f.end is not None and not f.detail]
    unexplained_total = len(unexplained)
    reexecutions = extra
    checks_passed = {
        "all_completed": len(stuck) == 0 and len(failed) == 0 and len(checks) == options.workflows,
        "no_completed_step_reexecuted": not completed_reexecuted,
        "reexecutions_explained": unexplained_total == 0,
        "no_fenced_write_accepted": not fenced_accepted,
        "no_lock_error_in_workflows": not lock_errors_wf,
        "outputs_match": not output_mismatches and not result_mismatches,
        "bad_inputs_documented": all(b["ok"] for b in bad_report)
        and len(bad_report) == options.bad_inputs * len(BAD_INPUT),
        "no_orphans": not orphans,
        "supervisor_never_exited_by_itself": unexpected_supervisor_deaths == 0,
    }
    return {
        "ok": all(checks_passed.values()),
        "checks": checks_passed,
        "config": {**asdict(options), "faults": list(options.faults), "seed": seed, "db": db},
        "workflows": {
            "submitted": len(checks),
            "completed": status_of.get(Status.COMPLETED.value, 0),
            "failed": len(failed),
            "stuck": len(stuck),
            "by_status": status_of,
            "finished_before_timeout": finished,
            "failed_detail": [{"id": w.id, "status": w.status, "error": (w.error or "").splitlines()[:1]} for w in failed[:10]],
            "stuck_detail": [{"id": w.id, "status": w.status, "attempts": w.attempts} for w in stuck[:10]],
        },
        "expected": {
            "failures": {
                "count": len(expected_failures),
                "in_documented_state": sum(1 for b in expected_failures if b["ok"]),
            },
            "pending": {
                "count": len(expected_pending),
                "in_documented_state": sum(1 for b in expected_pending if b["ok"]),
            },
            "detail": bad_report,
        },
        "faults": {
            **fault_counts,
            "hit_running_step": len(hits),
            "hit_a_workflow": sum(1 for f in faults if f.kind in ("kill", "stop") and f.held),
            "skipped_no_target": skipped_faults,
            "lock_held_s": _summary(lock_held),
            "lock_failures": [f.detail for f in faults if f.kind == "lock" and f.detail],
            "supervisor_starts": supervisor_starts,
            "supervisor_unexpected_exits": unexpected_supervisor_deaths,
        },
        "steps": {
            "executions": step_count,
            "distinct": len(executions),
            "completed_rows": sum(1 for s in step_rows.values() if s.status == StepStatus.COMPLETED.value),
            "max_starts_of_a_step": max((s.attempts for s in step_rows.values()), default=0),
            "steps_started_3_times_or_more": sum(1 for s in step_rows.values() if s.attempts >= 3),
            "executed_more_than_once": multi,
            "reexecutions": reexecutions,
            "explained_by_kill": explained["kill"],
            "explained_by_stop": explained["stop"],
            "unexplained": unexplained_total,
            "unexplained_detail": unexplained[:10],
            "completed_step_reexecuted": len(completed_reexecuted),
            "completed_step_reexecuted_detail": completed_reexecuted[:10],
            "output_mismatches": len(output_mismatches),
            "output_mismatch_detail": output_mismatches[:10],
            "result_mismatches": len(result_mismatches),
            "fenced_writes_accepted": len(fenced_accepted),
            "fenced_writes_detail": fenced_accepted[:10],
            "side_effects_by_fenced_workers": fenced_effects,
        },
        "locks": {
            "errors_in_workflows": len(lock_errors_wf),
            "errors_in_workflows_detail": lock_errors_wf[:10],
            "errors_in_engine_logs": len(lock_errors_log),
            "engine_log_samples": lock_errors_log[:5],
            "tracebacks_in_logs": tracebacks,
        },
        "recovery": {
            "kill": _summary(recovery["kill"]),
            "stop": _summary(recovery["stop"]),
            "supervisor": _summary(recovery["supervisor"]),
            "kill_no_lock_overlap": _summary(unlocked["kill"]),
            "stop_no_lock_overlap": _summary(unlocked["stop"]),
            "supervisor_no_lock_overlap": _summary(unlocked["supervisor"]),
            "old_fleet_exit_after_supervisor_kill": _summary(fleet_exit),
        },
        "throughput": {
            "duration_s": round(duration, 2),
            "workflows_per_s": round(len(done_times) / duration, 2),
            "steps_per_s": round(step_count / duration, 1),
        },
        "orphans": orphans,
        "supervisor_stopped_in_time": supervisor_stopped_in_time,
        "fault_log": [
            {**asdict(f), "start": round(f.start, 3), "end": None if f.end is None else round(f.end, 3)}
            for f in faults
        ],
    }


def _began(row: LedgerRecord) -> float:
    """When the step function of a ledger row began (its write may have waited for the lock)."""
    value = _value(row.value)
    began = value.get("began") if isinstance(value, dict) else None
    return float(began) if isinstance(began, (int, float)) else row.at


def _explain(row: LedgerRecord, faults: Sequence[Fault], done_at: float, window: float) -> Fault | None:
    """The kill or stop of the row's worker that cut that execution short, if any.

    A kill explains an execution it came after (within ``window`` s); a stop
    one it came after or that ran on right after SIGCONT. Either must come
    before the step completed elsewhere.
    """
    for fault in faults:
        if fault.start > done_at + SLACK or row.at < fault.start - window:
            continue
        if fault.kind == "kill" and fault.start >= row.at - SLACK:
            return fault
        if fault.kind == "stop" and _began(row) <= (fault.end or float("inf")) + RESUME_GRACE:
            return fault
    return None


# --------------------------------------------------------------------------- table


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _rec(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "n=0"
    return f"n={summary['count']}  median {summary['median_s']:.2f} s  max {summary['max_s']:.2f} s"


def render(verdict: dict[str, Any]) -> str:
    """The verdict as a table for people."""
    c, w, s, f, lk = verdict["config"], verdict["workflows"], verdict["steps"], verdict["faults"], verdict["locks"]
    checks, exp, rec, thr = verdict["checks"], verdict["expected"], verdict["recovery"], verdict["throughput"]
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: Any, mark: str = "") -> None:
        rows.append((label, str(value), mark))

    faults = ",".join(c["faults"]) or "none"
    head = (
        f"durable chaos: {c['workers']} workers, {w['submitted']} {c['workflow']} workflows "
        f"(+{exp['failures']['count'] + exp['pending']['count']} bad-input), faults {faults} "
        f"every ~{c['fault_interval']:g} s, ttl {c['ttl']:g} s, seed {c['seed']}\ndatabase: {c['db']}"
    )
    add("WORKFLOWS", "")
    add("  completed", f"{w['completed']} / {w['submitted']}", _mark(checks["all_completed"]))
    add("  failed", w["failed"], _mark(w["failed"] == 0))
    add("  stuck (not ended)", w["stuck"], _mark(w["stuck"] == 0))
    add(
        "  expected failures",
        f"{exp['failures']['in_documented_state']} / {exp['failures']['count']} FAILED with their documented error",
        _mark(exp["failures"]["in_documented_state"] == exp["failures"]["count"]),
    )
    add(
        "  expected pending",
        f"{exp['pending']['in_documented_state']} / {exp['pending']['count']} PENDING (name no worker knows)",
        _mark(exp["pending"]["in_documented_state"] == exp["pending"]["count"]),
    )
    add("FAULTS", "")
    add("  kill -9 worker", f['kill'])
    add("  SIGSTOP past ttl", f["stop"])
    add("  kill -9 supervisor", f"{f['supervisor']} (restarted; {f['supervisor_starts']} starts in all)")
    add("  write lock held", f"{f['lock']} ({_rec(f['lock_held_s'])})" if f["lock"] else 0)
    add("  kills/stops that hit a running step", f["hit_running_step"])
    add("STEPS", "")
    add("  executions (ledger)", f"{s['executions']} for {s['distinct']} step calls")
    add("  executed more than once", f"{s['executed_more_than_once']} steps, {s['reexecutions']} extra executions")
    add("  started 3+ times (steps rows)", f"{s['steps_started_3_times_or_more']} (most starts of one step: {s['max_starts_of_a_step']})")
    add(
        "  re-executions explained by a kill/stop",
        f"{s['explained_by_kill'] + s['explained_by_stop']} / {s['explained_by_kill'] + s['explained_by_stop'] + s['unexplained']}",
        _mark(checks["reexecutions_explained"]),
    )
    add("  COMPLETED step executed again", s["completed_step_reexecuted"], _mark(checks["no_completed_step_reexecuted"]))
    add("  COMPLETED output != step's return", s["output_mismatches"] + s["result_mismatches"], _mark(checks["outputs_match"]))
    add("  writes accepted from fenced workers", s["fenced_writes_accepted"], _mark(checks["no_fenced_write_accepted"]))
    add("  side effects run by fenced workers", s["side_effects_by_fenced_workers"], "(info)")
    add("LOCKS", "")
    add("  'database is locked' in workflows", lk["errors_in_workflows"], _mark(checks["no_lock_error_in_workflows"]))
    add("  ... in engine logs (retried)", lk["errors_in_engine_logs"], "(info)")
    add("RECOVERY (fault -> next step of that workflow)", "")
    add("  after kill -9 worker", _rec(rec["kill"]))
    add("    ... no lock fault overlapping", _rec(rec["kill_no_lock_overlap"]))
    add("  after SIGSTOP", _rec(rec["stop"]))
    add("    ... no lock fault overlapping", _rec(rec["stop_no_lock_overlap"]))
    add("  after supervisor kill", _rec(rec["supervisor"]))
    add("    ... no lock fault overlapping", _rec(rec["supervisor_no_lock_overlap"]))
    add("  old fleet gone after supervisor kill", _rec(rec["old_fleet_exit_after_supervisor_kill"]))
    add("THROUGHPUT", "")
    add("  duration", f"{thr['duration_s']:.1f} s")
    add("  workflows / s", thr["workflows_per_s"])
    add("  steps / s", thr["steps_per_s"])
    add("ORPHAN PROCESSES", len(verdict["orphans"]), _mark(checks["no_orphans"]))
    width = max(len(r[0]) for r in rows) + 2
    vwidth = max(len(r[1]) for r in rows) + 2
    lines = [head, ""]
    for label, value, mark in rows:
        lines.append(f"{label:<{width}}{value:<{vwidth}}{mark}".rstrip())
    failed = [name for name, ok in checks.items() if not ok]
    if verdict.get("interrupted"):
        failed.insert(0, "interrupted")
    lines.append("")
    lines.append("VERDICT: PASS" if verdict["ok"] else f"VERDICT: FAIL ({', '.join(failed)})")
    for key in ("unexplained_detail", "completed_step_reexecuted_detail", "output_mismatch_detail", "fenced_writes_detail"):
        if s[key]:
            lines.append(f"  {key}: {json.dumps(s[key][:3])}")
    if w["failed_detail"] or w["stuck_detail"]:
        lines.append(f"  failed/stuck: {json.dumps((w['failed_detail'] + w['stuck_detail'])[:5])}")
    for b in exp["detail"]:
        if not b["ok"]:
            lines.append(f"  bad-input not in documented state: {json.dumps(b)}")
    if verdict["orphans"]:
        lines.append(f"  orphans: {json.dumps(verdict['orphans'][:3])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def _parse_faults(ctx: click.Context | None, param: click.Parameter | None, text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise click.BadParameter(f"unknown fault {', '.join(sorted(unknown))}; choose from {','.join(FAULT_KINDS)}")
    return kinds


@click.command("chaos", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workers", default=4, show_default=True, help="Worker processes of the supervisor.")
@click.option("--workflows", default=100, show_default=True, help="Check workflows submitted.")
@click.option("--fault-interval", default=0.5, show_default=True, help="Mean seconds between faults (±50 %).")
@click.option(
    "--faults", default=",".join(FAULT_KINDS), show_default=True,
    help="Comma list of kill,stop,supervisor,lock (or none).", callback=_parse_faults,
)  # fmt: skip
@click.option("--ttl", default=2.0, show_default=True, help="Lease TTL of the workers (SIGSTOP lasts ttl + 1.5 s).")
@click.option("--timeout", "--duration", "timeout", default=300.0, show_default=True,
              help="Give up after this many seconds; unfinished workflows count as stuck.")  # fmt: skip
@click.option("--db", help="Database file to create (must not exist) [default: a fresh temp file].")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the verdict as JSON to PATH (or stdout with no PATH).")  # fmt: skip
@click.option("--seed", type=int, help="Random seed of the fault schedule.")
@click.option("--workflow", type=click.Choice(CHECK_NAMES), default="chaos_check", show_default=True,
              help="Check workflow: chaos_check (seq+fan-out+loop+conditional) or chaos_short.")  # fmt: skip
@click.option("--fan", default=3, show_default=True, help="chaos_check: parallel branches.")
@click.option("--loop", default=3, show_default=True, help="chaos_check: loop iterations.")
@click.option("--work-ms", default=10.0, show_default=True, help="chaos_check: work per step in ms (±50 %).")
@click.option("--lock-seconds", default=3.0, show_default=True, help="How long the lock fault holds the write lock.")
@click.option("--bad-inputs", default=1, show_default=True, help="Bad-input workflows of each kind mixed in.")
@click.option("--concurrency", default=1, show_default=True, help="Workflows each worker runs at once.")
@click.option("--log-level", default="WARNING", show_default=True, help="Log level of the fleet (log beside the db).")
def chaos(json_out: str | None, faults: tuple[str, ...], **values: Any) -> None:
    """Run a self-checking fault-injection experiment on a fresh database.

    Starts a supervisor with --workers, submits --workflows check workflows
    (and a few bad-input ones), sends faults while they run, then prints a
    verdict table. Exit 0 only if every invariant held.
    """
    if values["db"] is None:
        values["db"] = (click.get_current_context().find_root().obj or {}).get("db")
    options = ChaosOptions(faults=faults, **values)
    to_stdout = json_out == "-"
    echo = (lambda text: click.echo(text, err=True)) if to_stdout else click.echo
    try:
        experiment = Experiment(options, progress=lambda text: click.echo(text, err=True))
        verdict = experiment.run()
    except DurableError as exc:
        raise click.ClickException(str(exc)) from None
    echo(render(verdict))
    if json_out:
        text = json.dumps(verdict, indent=2, default=str)
        if to_stdout:
            click.echo(text)
        else:
            Path(json_out).write_text(text + "\n", encoding="utf-8")
    sys.exit(0 if verdict["ok"] else 1)


@click.group()
def helpers() -> None:
    """Processes of the chaos experiment (``python -m durable_workers.chaos ...``)."""


helpers.add_command(chaos, "run")


@helpers.command("lock")
@click.option("--db", required=True)
@click.option("--seconds", default=3.0, show_default=True)
def lock_command(db: str, seconds: float) -> None:
    """Hold the write lock of DB for SECONDS (prints ``locked T`` and ``released T``)."""
    store = Store(db, create=False)
    store.hold_write_lock(seconds, on_locked=lambda at: click.echo(f"locked {at!r}"))
    click.echo(f"released {time.time()!r}")
    store.close()


@helpers.command("submit")
@click.option("--db", required=True)
@click.option("--name", default="chaos_short", show_default=True)
@click.option("--prefix", default="sub-", show_default=True)
@click.option("--total", default=1000, show_default=True, help="Ids PREFIX0..PREFIX(total-1) in all.")
@click.option("--stride", default=4, show_default=True, help="Submitters in all.")
@click.option("--offset", default=0, show_default=True, help="This submitter's index.")
@click.option("--overlap", default=0, show_default=True, help="Also resubmit the next submitter's ids below this.")
@click.option("--seed", type=int, default=0)
def submit_command(db: str, name: str, prefix: str, total: int, stride: int, offset: int, overlap: int, seed: int) -> None:
    """Submit this submitter's share of ids; print JSON ``{"created": [...], "existing": [...]}``."""
    client = Client(db=db, app=APP)
    mine = [i for i in range(total) if i % stride == offset]
    theirs = [i for i in range(min(overlap, total)) if i % stride == (offset + 1) % stride]
    order = mine + theirs
    random.Random(seed + offset).shuffle(order)
    created, existing = [], []
    for i in order:
        record, new = client.store.submit(f"{prefix}{i}", name, "{}")
        (created if new else existing).append(record.id)
    click.echo(json.dumps({"created": created, "existing": existing}))
    client.close()


if __name__ == "__main__":  # pragma: no cover
    helpers(prog_name="python -m durable_workers.chaos")
