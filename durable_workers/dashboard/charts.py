"""Inline SVG charts: finishes per minute (stacked bars) and a step timeline (a Gantt chart).

Each function returns markup safe to insert into a page (every text is escaped).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from markupsafe import Markup, escape

from ..records import StepAttempt, StepRecord, step_attempts

#: CSS classes of the bars by status (dashboard.css colours them).
BAR_CLASS = {"COMPLETED": "ok", "FAILED": "bad", "RUNNING": "run", "LOST": "lost"}


def _clock(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%H:%M:%S")


def finishes_chart(counts: dict[str, list[int]], now: float, *, width: int = 720, height: int = 160) -> Markup:
    """Stacked bars of COMPLETED (below) and FAILED (above) per minute, the oldest minute on the left."""
    completed, failed = counts.get("COMPLETED", []), counts.get("FAILED", [])
    minutes = max(len(completed), len(failed), 1)
    top = max([c + f for c, f in zip(completed, failed, strict=False)] + [1])
    plot, base = height - 20, height - 16
    step = width / minutes
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="finishes per minute">']
    parts.append(f'<text x="2" y="10" class="axis">{top}/min</text>')
    for i in range(minutes):
        c, f = (completed[i] if i < len(completed) else 0), (failed[i] if i < len(failed) else 0)
        x = i * step + 1
        hc, hf = plot * c / top * 0.9, plot * f / top * 0.9
        label = escape(f"{minutes - i} min ago: {c} completed, {f} failed")
        parts.append(f'<g><title>{label}</title>')
        parts.append(f'<rect class="ok" x="{x:.1f}" y="{base - hc:.1f}" width="{step - 2:.1f}" height="{hc:.1f}"/>')
        parts.append(f'<rect class="bad" x="{x:.1f}" y="{base - hc - hf:.1f}" width="{step - 2:.1f}" '
                     f'height="{hf:.1f}"/>')
        parts.append("</g>")
    parts.append(f'<text x="2" y="{height - 2}" class="axis">-{minutes} min</text>')
    parts.append(f'<text x="{width - 2}" y="{height - 2}" class="axis end">now {_clock(now)} UTC</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _bar(key: str, number: int, a: StepAttempt, until: float, origin: float, x0: float, scale: float, y: int,
         h: int) -> str:  # fmt: skip
    """One attempt's bar, from its start to its finish (to ``until`` when it has none)."""
    finish = a.finished_at if a.finished_at is not None else until
    x, w = x0 + (a.started_at - origin) * scale, max((finish - a.started_at) * scale, 2.0)
    how = "did not finish (its worker died or was stopped)" if a.status == "LOST" else a.status
    tip = escape(f"{key} attempt {number}: {how}, {(finish - a.started_at) * 1000:.0f} ms from {_clock(a.started_at)}"
                 + (f" on {a.worker_id}" if a.worker_id else ""))  # fmt: skip
    return (f'<rect class="{BAR_CLASS.get(a.status, "run")}" data-attempt="{number}" x="{x:.1f}" y="{y}" '
            f'width="{w:.1f}" height="{h}"><title>{tip}</title></rect>')  # fmt: skip


def step_timeline(steps: Sequence[StepRecord], now: float, *, width: int = 720, row: int = 22) -> Markup:
    """One row per started step with a bar per attempt (retries, resumes after a crash), to ``now`` while it runs.

    An earlier attempt that never finished (its worker died, or was stopped)
    is drawn as lost up to where the next one began; the steps of parallel
    branches overlap in time, side by side on their own rows.
    """
    timed = [(s, step_attempts(s)) for s in steps if s.started_at is not None]
    if not timed:
        return Markup('<p class="muted">No step has started yet.</p>')
    start = min(attempts[0].started_at for _, attempts in timed)
    end = max([(s.finished_at or now) for s, _ in timed] + [start + 0.001])
    label_w, span = 220, end - start
    scale = (width - label_w - 10) / span
    height = row * len(timed) + 24
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" aria-label="step timeline">']
    for i, (s, attempts) in enumerate(timed):
        y = i * row + 4
        label = f" ×{s.attempts}" if s.attempts > 1 else ""
        parts.append(f'<g class="step" data-step="{escape(s.step_key)}" data-attempts="{s.attempts}">')
        parts.append(f'<text x="2" y="{y + 14}" class="label">{escape(s.step_key)}{label}</text>')
        for index, attempt in enumerate(attempts):
            following = attempts[index + 1] if index + 1 < len(attempts) else None
            shown = replace(attempt, status="LOST") if attempt.finished_at is None and following else attempt
            number = s.attempts - len(attempts) + index + 1
            until = following.started_at if following is not None else now
            parts.append(_bar(s.step_key, number, shown, until, start, label_w, scale, y, row - 6))
        parts.append("</g>")
    parts.append(f'<text x="{label_w}" y="{height - 4}" class="axis">{_clock(start)}</text>')
    parts.append(f'<text x="{width - 2}" y="{height - 4}" class="axis end">+{span:.2f} s</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
