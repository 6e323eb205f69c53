"""One run of the experiment: fresh database, submissions, fleet and faults, then the verdict."""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..backends import POSTGRES_SCHEMES, is_url
from ..client import Client
from ..errors import DurableError
from ..records import TERMINAL
from .faults import Injector
from .disk import SmallDisk, mount_small_disk
from .fleet import Fleet, Hosts, kill_orphans, live_worker_ids
from .options import APP, BAD_INPUT, CHECK_NAMES, FOREIGN_EXCEPTIONS, INJECTED_KINDS, UNKNOWN_NAME, ChaosOptions
from .verdict import analyse


def _fresh_db(path: str | None) -> str:
    """The experiment's database: a new temp file, ``path`` if it is a new file, or a URL
    (whose database must be empty: checked once opened, see ``Experiment._check_fresh``)."""
    if path is not None and is_url(path):  # opened (and checked) by open_store
        return path
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
        (f"chk-{i:05d}", options.workflow, {**check_input, **_hazard(options, rng, i)})
        for i in range(options.workflows)
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


def _hazard(options: ChaosOptions, rng: random.Random, i: int) -> dict[str, Any]:
    """The ``hazard`` input of check workflow ``i``: none without the foreign fault, else a share raise once."""
    if "foreign" not in options.faults or options.workflow != "chaos_check":
        return {}
    if rng.random() >= options.foreign_share:
        return {"hazard": ""}
    return {"hazard": FOREIGN_EXCEPTIONS[i % len(FOREIGN_EXCEPTIONS)]}


def _quietly(fn: Callable[[], Any], default: Any) -> Any:
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


class Experiment:
    """One run: fresh database, fleet, faults, verdict.

    Raises :class:`DurableError` when the options are invalid or ``options.db``
    already exists; :meth:`run` returns the verdict (see :func:`analyse`).
    """

    def __init__(self, options: ChaosOptions, *, progress: Callable[[str], None] | None = None) -> None:
        problem = options.problem()
        if problem:
            raise DurableError(problem)
        if options.workflow not in CHECK_NAMES:
            raise DurableError(f"--workflow must be one of {', '.join(CHECK_NAMES)}")
        self.options = options
        self.seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.db = _fresh_db(options.db)
        self.on_server = self.db.startswith(POSTGRES_SCHEMES)
        if self.on_server:  # no folder beside the database: the log goes to a temp folder of its own
            self.log_path = Path(tempfile.mkdtemp(prefix="durable-chaos-")) / "chaos.log"
        else:
            self.log_path = Path(self.db).with_suffix(".log")
        self.kept_db = self.db  # where the database is left at the end
        self.disk: SmallDisk | None = None
        self.not_sent: dict[str, str] = {}  # fault kind -> why it is skipped
        self.progress = progress or (lambda text: None)
        self.interrupted = False
        self.unexpected_deaths = 0

    def _mount_disk(self) -> None:
        """Put the database on a small tmpfs for the diskfull fault, or note why the fault is skipped."""
        if self.on_server:
            self.not_sent["diskfull"] = "the database is on a PostgreSQL server, not on a local disk"
            return
        kept = Path(self.db)
        disk = mount_small_disk(kept.parent / f"{kept.stem}-disk", self.options.diskfull_mb)
        if isinstance(disk, str):
            self.not_sent["diskfull"] = disk
            return
        self.disk = disk
        self.db = str(disk.folder / kept.name)

    def _unmount_disk(self) -> None:
        """Copy the database off the tmpfs (to where it was asked for), then unmount it."""
        if self.disk is None:
            return
        for suffix in ("", "-wal", "-shm"):
            source = Path(self.db + suffix)
            if source.exists():
                shutil.copyfile(source, self.kept_db + suffix)
        self.disk.unmount()
        self.disk = None

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
        if "diskfull" in self.options.faults:
            self._mount_disk()
        try:
            verdict = self._run_on_disk()
        finally:
            self._unmount_disk()
        verdict["config"]["db"] = self.kept_db
        return verdict

    def _run_on_disk(self) -> dict[str, Any]:
        options = self.options
        client = Client(db=self.db, app=APP)
        store = client.store
        self._check_fresh(client)
        store.ledger_create()
        submitted = submit_all(client, options, self.rng)
        self.progress(f"submitted {len(submitted)} workflows to {self.db}")
        fleet = Hosts(options, self.db, self.log_path) if options.hosts > 1 else Fleet(options, self.db, self.log_path)
        injector = Injector(options, fleet, store, self.rng, disk=self.disk)
        started = time.time()
        fleet.start()
        try:
            finished = self._drive(fleet, injector, client, started)
            ended = time.time()
            unserved = _quietly(client.unserved_names, [])
            self.progress("interrupted: stopping faults and the fleet" if self.interrupted else "stopping faults and the fleet")
        finally:
            injector.finish()
            stopped_in_time = fleet.stop()
            injector.wait_old_fleets(15.0)
            orphans = kill_orphans(self.db, grace=10.0)
            if self.disk is not None:
                self.disk.empty()
        held = _quietly(store.leases_by_worker, {})
        holders = {lease.workflow_id: worker for worker, leases in held.items() for lease in leases}
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
            unexpected_supervisor_deaths=self.unexpected_deaths,
            supervisor_stopped_in_time=stopped_in_time,
            skipped_faults=injector.skipped,
            not_sent=self.not_sent,
            lease_holders=holders,
            live_workers=live_worker_ids(store),
        )
        client.close()
        if self.interrupted:
            verdict["interrupted"] = True
            verdict["ok"] = False
        return verdict

    def _check_fresh(self, client: Client) -> None:
        """Raise :class:`DurableError` (closing ``client``) when a server database already holds workflows."""
        if self.on_server and client.store.status_counts_by_name():
            client.close()
            raise DurableError(f"{self.db} already holds workflows; the chaos experiment needs an empty database")

    def _drive(self, fleet: Fleet | Hosts, injector: Injector, client: Client, started: float) -> bool:
        """Send faults until every workflow ended (True), the timeout, an interruption or a failing fleet."""
        options = self.options
        pause = threading.Event()
        deadline = started + options.timeout
        next_fault = started + options.fault_interval * self.rng.uniform(0.5, 1.5)
        next_check = started
        sends = bool(set(options.faults) & set(INJECTED_KINDS))  # foreign alone is planted, not sent
        while True:
            now = time.time()
            injector.tick(now)
            if not fleet.alive() and not self._restart(fleet):
                return False
            if now >= next_check:
                next_check = now + 0.25
                if _all_ended(client.store.status_counts_by_name()):
                    return True
            if now >= deadline or self.interrupted:
                return False
            if sends and now >= next_fault:
                injector.inject(now)
                next_fault = now + options.fault_interval * self.rng.uniform(0.5, 1.5)
            pause.wait(0.01)

    def _restart(self, fleet: Fleet | Hosts) -> bool:
        """Restart a supervisor that exited by itself; False once it has done so more than 5 times."""
        self.unexpected_deaths += 1
        code = fleet.proc.returncode if fleet.proc else "?"
        if self.unexpected_deaths > 5:
            self.progress(f"supervisor keeps exiting by itself (exit {code}); see {self.log_path}")
            return False
        self.progress(f"supervisor exited by itself (exit {code}); restarting")
        fleet.start()
        return True
