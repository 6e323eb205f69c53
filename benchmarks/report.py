"""Rendering results: the table (Markdown), the JSON file, the throughput plot.

Also a command to re-render saved results, merge runs, and compare before/after:

    python -m benchmarks.report results.json [more.json ...] [--plot out.png]
    python -m benchmarks.report after.json --before docs/benchmarks-before.json

Later files override earlier ones figure by figure (same benchmark, metric and
synchronous mode), so a partial re-run (``--only throughput``) can be merged
into a full one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .measure import Figure, dump_json, fmt

ORDER = ("floor", "step", "throughput", "latency", "recovery", "scale", "peer")


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
        if f.bench == "throughput" and f.metric.endswith("workflows/s") and "supervisors" not in f.params:
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


def load_json(path: str) -> tuple[list[Figure], dict[str, Any]]:
    """Figures and metadata of a results file written by ``python -m benchmarks``."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    figures = []
    for r in data.get("results", []):
        figures.append(
            Figure(
                bench=r["bench"],
                metric=r["metric"],
                unit=r["unit"],
                sync=r["sync"],
                samples=[x for x in r["samples"] if x is not None],
                params=r.get("params", {}),
                higher_is_better=r.get("higher_is_better", False),
                note=r.get("note", ""),
            )
        )
    meta = {k: v for k, v in data.items() if k != "results"}
    return figures, meta


def merge(runs: list[list[Figure]]) -> list[Figure]:
    """Union of figure lists; a later run's figure replaces an earlier one with the same key and mode."""
    merged: dict[tuple[str, str, str], Figure] = {}
    for figures in runs:
        for f in figures:
            merged[(f.bench, f.metric, f.sync)] = f
    return list(merged.values())


def compare(before: list[Figure], after: list[Figure], syncs: list[str]) -> str:
    """Markdown table: before and after medians per mode, and after/before."""
    old = {(f.bench, f.metric, f.sync): f for f in before}
    new = {(f.bench, f.metric, f.sync): f for f in after}
    keys = []
    for f in before + after:
        if (f.bench, f.metric) not in keys:
            keys.append((f.bench, f.metric))
    keys.sort(key=lambda k: ORDER.index(k[0]) if k[0] in ORDER else len(ORDER))
    header = ["benchmark", "metric"]
    for s in syncs:
        header += [f"{s} before", f"{s} after", f"{s} after/before"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for bench, metric in keys:
        cells = [bench, metric]
        for s in syncs:
            b, a = old.get((bench, metric, s)), new.get((bench, metric, s))
            cells.append(b.render() if b else "–")
            cells.append(a.render() if a else "–")
            cells.append(f"{fmt(a.median / b.median)}×" if a and b and b.median else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description="re-render saved results")
    parser.add_argument("results", nargs="+", help="JSON files from python -m benchmarks (later ones win)")
    parser.add_argument("--before", help="a JSON file to compare against (before/after table)")
    parser.add_argument("--plot", help="write the throughput plot here")
    parser.add_argument("--out", help="write the merged results here")
    args = parser.parse_args(argv)
    loaded = [load_json(path) for path in args.results]
    figures = merge([f for f, _ in loaded])
    syncs = sorted({f.sync for f in figures}, key=lambda s: ("NORMAL", "FULL").index(s) if s in ("NORMAL", "FULL") else 9)
    if args.before:
        before, _ = load_json(args.before)
        print(compare(before, figures, syncs))
    else:
        print(table(figures, syncs))
    if args.out:
        meta = dict(loaded[0][1])  # the base run; later files only replace figures
        meta["merged_from"] = args.results
        write_json(args.out, figures, meta)
    if args.plot:
        plot_throughput(args.plot, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
