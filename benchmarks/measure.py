"""Shared measurement helpers: figures (median, min, max), percentiles, the machine.

Every benchmark returns :class:`Figure` objects. A figure holds the samples of
one metric in one synchronous mode; it is reported as its median with the
min–max range of the samples (one sample per repetition, unless the metric is
itself a distribution such as a latency percentile).
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    """One reported number: the median of ``samples`` with their min and max.

    ``bench`` is the benchmark family, ``metric`` what is measured, ``sync``
    the SQLite synchronous mode, ``params`` the sizes that produced it, and
    ``higher_is_better`` tells readers (and the before/after table) which way
    is good.
    """

    bench: str
    metric: str
    unit: str
    sync: str
    samples: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = False
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    @property
    def key(self) -> str:
        return f"{self.bench}/{self.metric}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median=self.median, min=self.min, max=self.max, n=len(self.samples))
        return data

    def render(self) -> str:
        """``median (min–max) unit``; a single sample prints alone."""
        if not self.samples:
            return "n/a"
        if len(self.samples) == 1 or self.min == self.max:
            return f"{fmt(self.median)} {self.unit}"
        return f"{fmt(self.median)} ({fmt(self.min)}–{fmt(self.max)}) {self.unit}"


def fmt(value: float) -> str:
    """Three significant figures, without scientific notation for usual sizes."""
    if value != value:  # NaN
        return "nan"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` holds the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def time_claims(store: Any, worker: str, names: list[str], count: int, *, expect_hit: bool, what: str) -> float:
    """Median ms of ``count`` calls of ``store.claim_next`` that each take one workflow (or, if not ``expect_hit``, none)."""
    timings = []
    for _ in range(count):
        with stopwatch() as t:
            claim = store.claim_next(worker, names, ttl=3600.0)
        if (claim is not None) != expect_hit:
            raise RuntimeError(f"{what}: a claim {'found nothing' if expect_hit else 'took a workflow'} unexpectedly")
        timings.append(t[0] * 1000.0)
    return statistics.median(timings)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers ran on."""
    import peewee

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem_kb = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "peewee": peewee.__version__,
        "loadavg_at_start": load,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def dump_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    with open(path, "w", encoding="utf-8") as handle:
        json.dump(clean(payload), handle, indent=2)
        handle.write("\n")
