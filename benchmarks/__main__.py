"""``python -m benchmarks``: run the benchmark suite, print a table, write JSON (and a plot).

    python -m benchmarks                          # full sizes, NORMAL and FULL
    python -m benchmarks --quick                  # tiny sizes, 1 repetition (smoke test)
    python -m benchmarks --only floor,step --sync NORMAL --out step.json
    python -m benchmarks --only throughput --plot docs/benchmarks-throughput.png

Exit status 0 when every selected benchmark ran, 1 when one of them failed
(the others still run and are reported).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .measure import Figure, machine
from .report import plot_throughput, table, write_json

BENCHMARKS = ("floor", "step", "throughput", "latency", "recovery", "scale")


@dataclass(frozen=True)
class Sizes:
    """Every size the suite uses; ``FULL`` is what the issue asks for, ``QUICK`` a smoke run."""

    repeat: int = 3
    steps: int = 500
    step_repeat: int = 5
    workers: tuple[int, ...] = (1, 2, 4, 8)
    workflows: int = 1000
    io_workflows: int = 1000
    io_concurrency: int = 8
    sleep_ms: float = 10.0
    latency_workers: int = 4
    latency_samples: int = 30
    idle_s: float = 10.0
    settle_s: float = 3.0
    gap: tuple[float, float] = (0.2, 1.0)
    recovery_workers: int = 2
    recovery_samples: int = 10
    restart_samples: int = 5
    scale_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    backlog: int = 100_000  # unrunnable PENDING rows in the scale benchmark's backlog part
    claims: int = 100
    empty_claims: int = 50
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Sizes()
QUICK = Sizes(
    repeat=1,
    steps=50,
    step_repeat=1,
    workers=(1, 2),
    workflows=20,
    io_workflows=20,
    io_concurrency=2,
    latency_workers=2,
    latency_samples=3,
    idle_s=1.0,
    settle_s=0.5,
    gap=(0.05, 0.1),
    recovery_samples=1,
    restart_samples=1,
    scale_sizes=(1_000,),
    backlog=2_000,
    claims=10,
    empty_claims=5,
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition (smoke run)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--sync", default="NORMAL,FULL", help="synchronous modes, e.g. NORMAL,FULL")
    parser.add_argument("--out", default="bench-results.json", help="JSON results file [bench-results.json]")
    parser.add_argument("--plot", help="PNG of throughput vs workers (needs matplotlib: the [bench] extra)")
    parser.add_argument("--repeat", type=int, help="repetitions per figure (overrides the mode's default)")
    parser.add_argument("--workers", type=_ints, help="worker counts for throughput, e.g. 1,2,4,8")
    parser.add_argument("--workflows", type=int, help="workflows per throughput run (no-op and I/O)")
    parser.add_argument("--steps", type=int, help="steps of the step-overhead workflow")
    parser.add_argument("--io-concurrency", type=int, help="--concurrency of each worker in the I/O-bound run")
    parser.add_argument("--scale-sizes", type=_ints, help="rows in workflows for the scale benchmark")
    parser.add_argument("--workdir", help="where databases go (default: a new temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and fleet logs")
    parser.add_argument("--log-level", default="WARNING", help="log level of the benchmark fleets [WARNING]")
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.sync = [s.strip().upper() for s in args.sync.split(",") if s.strip()]
    bad = [s for s in args.sync if s not in ("OFF", "NORMAL", "FULL", "EXTRA")]
    if bad:
        parser.error(f"unknown synchronous mode(s) {', '.join(bad)}")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.repeat:
        overrides.update(repeat=args.repeat, step_repeat=args.repeat)
    if args.workers:
        overrides["workers"] = args.workers
    if args.workflows:
        overrides.update(workflows=args.workflows, io_workflows=args.workflows)
    if args.steps:
        overrides["steps"] = args.steps
    if args.io_concurrency:
        overrides["io_concurrency"] = args.io_concurrency
    if args.scale_sizes:
        overrides["scale_sizes"] = args.scale_sizes
    return replace(sizes, **overrides)


def plan(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> list[tuple[str, Callable[[], list[Figure]]]]:
    """(label, thunk) for each selected benchmark and sync mode, in run order."""
    from .floor import bench_floor
    from .latency import bench_latency
    from .recovery import bench_recovery
    from .scale import bench_backlog, bench_scale
    from .step import bench_step
    from .throughput import bench_throughput

    jobs: list[tuple[str, Callable[[], list[Figure]]]] = []
    for sync in args.sync:
        if "step" in args.only:  # measures the floor too, back to back, for the ratio
            jobs.append((f"step {sync}", lambda s=sync: bench_step(workdir, s, steps=sizes.steps, repeat=sizes.step_repeat)))
        elif "floor" in args.only:
            jobs.append((f"floor {sync}", lambda s=sync: bench_floor(workdir, s, steps=sizes.steps, repeat=sizes.step_repeat)))
    for sync in args.sync:
        if "throughput" in args.only:
            jobs.append(
                (
                    f"throughput {sync}",
                    lambda s=sync: bench_throughput(
                        workdir,
                        s,
                        workers=list(sizes.workers),
                        count=sizes.workflows,
                        io_count=sizes.io_workflows,
                        io_concurrency=sizes.io_concurrency,
                        sleep_ms=sizes.sleep_ms,
                        repeat=sizes.repeat,
                        log_level=args.log_level,
                    ),
                )
            )
    for sync in args.sync:
        if "latency" in args.only:
            jobs.append(
                (
                    f"latency {sync}",
                    lambda s=sync: bench_latency(
                        workdir,
                        s,
                        workers=sizes.latency_workers,
                        samples=sizes.latency_samples,
                        idle_s=sizes.idle_s,
                        settle_s=sizes.settle_s,
                        gap=sizes.gap,
                        repeat=sizes.repeat,
                        log_level=args.log_level,
                    ),
                )
            )
    for sync in args.sync:
        if "recovery" in args.only:
            jobs.append(
                (
                    f"recovery {sync}",
                    lambda s=sync: bench_recovery(
                        workdir,
                        s,
                        workers=sizes.recovery_workers,
                        samples=sizes.recovery_samples,
                        restart_samples=sizes.restart_samples,
                        log_level=args.log_level,
                    ),
                )
            )
    if "scale" in args.only:
        jobs.append(
            (
                f"scale {','.join(args.sync)}",
                lambda: bench_scale(
                    workdir,
                    args.sync,
                    sizes=list(sizes.scale_sizes),
                    claims=sizes.claims,
                    empty_claims=sizes.empty_claims,
                    repeat=sizes.repeat,
                )
                + bench_backlog(
                    workdir,
                    args.sync,
                    backlog=sizes.backlog,
                    claims=sizes.claims,
                    empty_claims=sizes.empty_claims,
                    repeat=sizes.repeat,
                ),
            )
        )
    return jobs


def git_state() -> dict[str, Any]:
    """Commit and locally modified files of the checkout being measured (empty outside git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": git("status", "--short").splitlines()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_for(args)
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="durable-bench-"))
    meta: dict[str, Any] = {
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "sizes": {k: v for k, v in sizes.__dict__.items() if k != "extra"},
        "selected": args.only,
        "synchronous": args.sync,
        "workdir": str(workdir),
        "errors": {},
        "git": git_state(),
    }
    print(
        f"durable_workers benchmarks ({meta['mode']}): {', '.join(args.only)}; synchronous {', '.join(args.sync)}\n"
        f"machine: {meta['machine']['nproc']} × {meta['machine']['cpu_model']}, Python {meta['machine']['python']}, "
        f"SQLite {meta['machine']['sqlite']}; databases in {workdir}",
        file=sys.stderr,
    )
    figures: list[Figure] = []
    started = time.monotonic()
    try:
        for label, job in plan(args, sizes, workdir):
            print(f"[{time.monotonic() - started:7.1f}s] {label} ...", file=sys.stderr, flush=True)
            try:
                produced = job()
            except Exception as exc:  # report it, run the rest
                traceback.print_exc()
                meta["errors"][label] = f"{type(exc).__name__}: {exc}"
                continue
            figures += produced
            for f in produced:
                print(f"           {f.sync:6} {f.bench}: {f.metric} = {f.render()}", file=sys.stderr, flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    print(table(figures, args.sync))
    if args.out:
        write_json(args.out, figures, meta)
        print(f"\nresults written to {args.out}", file=sys.stderr)
    if args.plot:
        if plot_throughput(args.plot, figures):
            print(f"plot written to {args.plot}", file=sys.stderr)
    if meta["errors"]:
        print(f"failed: {', '.join(meta['errors'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
