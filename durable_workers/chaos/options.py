"""What an experiment is made of: its settings, its workflows, the faults it may send."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

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
#: ``lock`` stays within the fleet's lock patience (waited out); ``outage`` outlasts it
#: (the store is unavailable); ``diskfull`` fills the small filesystem the database lives
#: on; ``foreign`` makes some check steps raise a foreign BaseException once; ``host``
#: (with ``--hosts`` 2 or more) SIGKILLs a whole host, supervisor and workers at once.
FAULT_KINDS = ("kill", "stop", "supervisor", "lock", "outage", "diskfull", "foreign", "host")
#: Fault kinds sent by the injector while the fleet runs (``foreign`` is planted in the workflows).
INJECTED_KINDS = ("kill", "stop", "supervisor", "lock", "outage", "diskfull", "host")
#: Fault kinds sent when ``--faults`` is not given (``diskfull`` mounts a filesystem: opt in).
DEFAULT_FAULTS = ("kill", "stop", "supervisor", "lock", "outage", "foreign")
#: The foreign BaseExceptions a hazard step raises on its first execution, by turns.
FOREIGN_EXCEPTIONS = ("KeyboardInterrupt", "SystemExit")
#: Markers of infrastructure trouble in a stored error: a workflow FAILED with one of
#: these was failed by infrastructure, never by its own logic.
INFRA_MARKERS = (
    "StoreUnavailable", "StoreBusyError", "database is locked", "database table is locked",
    "stayed locked", "disk is full", "disk full", "No space left", "I/O error",
    "unable to open database", "cannot open database",
)  # fmt: skip


def unknown_faults(kinds: Iterable[str]) -> str | None:
    """Why ``kinds`` are not all fault kinds (one line), or None when they are."""
    unknown = set(kinds) - set(FAULT_KINDS)
    if not unknown:
        return None
    return f"unknown fault {', '.join(sorted(unknown))}; choose from {','.join(FAULT_KINDS)}"


@dataclass(frozen=True)
class ChaosOptions:
    """Settings of one experiment (see ``durable chaos --help``)."""

    workers: int = 4
    workflows: int = 100
    fault_interval: float = 0.5
    faults: tuple[str, ...] = DEFAULT_FAULTS
    ttl: float = 2.0
    timeout: float = 300.0
    db: str | None = None
    seed: int | None = None
    workflow: str = "chaos_check"
    fan: int = 3
    loop: int = 3
    work_ms: float = 10.0
    lock_seconds: float = 3.0
    lock_patience: float = 4.5  # the fleet's lock patience when outage or diskfull is sent
    outage_seconds: float = 6.0  # how long the outage fault holds the write lock
    diskfull_seconds: float = 3.0  # how long the disk stays full
    diskfull_mb: int = 64  # size of the tmpfs the database lives on under the diskfull fault
    foreign_share: float = 0.3  # share of check workflows whose hazard step raises once
    stop_seconds: float | None = None  # default ttl + 1.5
    supervisor_gap: float = 5.0  # at least this long between supervisor kills
    bad_inputs: int = 1  # of each bad-input kind
    concurrency: int = 1
    log_level: str = "WARNING"
    hosts: int = 1  # supervisors, each with its own host identity, on the one database
    host_down_seconds: float | None = None  # how long a killed host stays down; default 3 x ttl

    def host_down_for(self) -> float:
        """Seconds a host killed by the ``host`` fault stays down before it is restarted."""
        return self.host_down_seconds if self.host_down_seconds is not None else 3 * self.ttl

    def fleet_patience(self) -> float | None:
        """The fleet's lock patience (s): ``lock_patience`` when the outage fault is sent, else None (the default)."""
        return self.lock_patience if "outage" in self.faults else None

    def longest_hold(self) -> float:
        """Seconds of the longest fault that holds the write lock (lock or outage)."""
        return max(self.lock_seconds, self.outage_seconds if "outage" in self.faults else 0.0)

    def problem(self) -> str | None:
        """Why these settings make no experiment (one line), or None."""
        unknown = unknown_faults(self.faults)
        if unknown:
            return unknown
        if "host" in self.faults and self.hosts < 2:
            return "the host fault needs a second host to take over: give --hosts 2 (or more)"
        if self.fleet_patience() is not None and "lock" in self.faults and self.lock_seconds >= self.lock_patience:
            return f"--lock-seconds ({self.lock_seconds:g}) must be below --lock-patience ({self.lock_patience:g})"
        if "outage" in self.faults and self.outage_seconds <= self.lock_patience:
            return f"--outage-seconds ({self.outage_seconds:g}) must exceed --lock-patience ({self.lock_patience:g})"
        return None

    def stop_for(self) -> float:
        """Seconds a SIGSTOP lasts before its SIGCONT."""
        return self.stop_seconds if self.stop_seconds is not None else self.ttl + 1.5


@dataclass
class Fault:
    """One fault sent: what, to which pid, when (``end`` for stop and lock)."""

    kind: str
    pid: int | None
    start: float
    end: float | None = None
    held: list[str] = field(default_factory=list)  # workflows the target held at that moment (kill, stop)
    fleet: list[int] = field(default_factory=list)  # supervisor or host kill: its workers
    detail: str = ""
