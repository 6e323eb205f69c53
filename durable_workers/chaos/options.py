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
FAULT_KINDS = ("kill", "stop", "supervisor", "lock")


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
        """Seconds a SIGSTOP lasts before its SIGCONT."""
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
