"""Rendering results: the table (Markdown), the JSON file, the throughput plot."""

from __future__ import annotations

import sys
from typing import Any

from .measure import Figure, dump_json

ORDER = ("floor", "step", "throughput", "latency", "recovery", "scale")


def table(figures: list[Figure], syncs: list[str]) -> str:
    """A Markdown table: one row per metric, one column per synchronous mode."""
    rows: dict[tuple[str, str], dict[str, Figure]] = {}
    for figure in figures:
        rows.setdefault((figure.bench, figure.metric), {})[figure.sync] = figure
    keys = sorted(rows, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else len(ORDER), list(rows).index(k)))
    header = ["benchmark", "metric", *[f"{s} median (min–max)" for s in syncs], "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        cells = rows[key]
        notes = sorted({f.note for f in cells.values() if f.note})
        lines.append(
            "| "
            + " | ".join([key[0], key[1], *[cells[s].render() if s in cells else "–" for s in syncs], "; ".join(notes)])
            + " |"
        )
    return "\n".join(lines)


def write_json(path: str, figures: list[Figure], meta: dict[str, Any]) -> None:
    dump_json(path, {**meta, "results": [f.to_json() for f in figures]})


def plot_throughput(path: str, figures: list[Figure]) -> bool:
    """Throughput (workflows/s) vs workers, per sync mode, no-op and I/O-bound. False if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed (pip install 'durable-workers[bench]'); skipping the plot",
            file=sys.stderr,
        )
        return False
    series: dict[tuple[str, str], list[Figure]] = {}
    for f in figures:
        if f.bench == "throughput" and f.metric.endswith("workflows/s"):
            variant = f.metric.split()[0]
            series.setdefault((variant, f.sync), []).append(f)
    if not series:
        print("no throughput results to plot; skipping the plot", file=sys.stderr)
        return False
    variants = sorted({v for v, _ in series}, key=lambda v: (v != "noop", v))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4.2), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        for (v, sync), items in sorted(series.items()):
            if v != variant:
                continue
            items.sort(key=lambda f: f.params["workers"])
            xs = [f.params["workers"] for f in items]
            ys = [f.median for f in items]
            err = [[f.median - f.min for f in items], [f.max - f.median for f in items]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=f"synchronous={sync}")
        first = next(f for (v, _), fs in series.items() if v == variant for f in fs)
        if variant == "noop":
            title = f"no-op steps, concurrency 1 ({first.params['workflows']} workflows)"
        else:
            title = (
                f"{first.params['sleep_ms']:g} ms sleep per step, concurrency {first.params['concurrency']} "
                f"({first.params['workflows']} workflows)"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("worker processes")
        ax.set_ylabel("workflows/s (median, min–max)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({f.params["workers"] for fs in series.values() for f in fs}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("durable_workers: onboarding workflows (4 steps) through a supervised fleet", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
