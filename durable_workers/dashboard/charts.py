"""Inline SVG charts: finishes per minute (stacked bars) and a step timeline (a Gantt chart).

Each function returns markup safe to insert into a page (every text is escaped).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from markupsafe import Markup, escape

from ..records import StepRecord

#: CSS classes of the bars by status (dashboard.css colours them).
BAR_CLASS = {"COMPLETED": "ok", "FAILED": "bad", "RUNNING": "run"}


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


def step_timeline(steps: Sequence[StepRecord], now: float, *, width: int = 720, row: int = 22) -> Markup:
    """One bar per started step from its (last) start to its finish, or to ``now`` while it runs.

    A step started more than once (a retry, or a resume after its worker died)
    is labelled with its attempt count; its bar is its last attempt.
    """
    timed = [s for s in steps if s.started_at is not None]
    if not timed:
        return Markup('<p class="muted">No step has started yet.</p>')
    start = min(s.started_at for s in timed if s.started_at is not None)
    end = max([(s.finished_at or now) for s in timed] + [start + 0.001])
    label_w, span = 220, end - start
    scale = (width - label_w - 10) / span
    height = row * len(timed) + 24
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" aria-label="step timeline">']
    for i, s in enumerate(timed):
        assert s.started_at is not None
        y = i * row + 4
        finish = s.finished_at if s.finished_at is not None else now
        x, w = label_w + (s.started_at - start) * scale, max((finish - s.started_at) * scale, 2.0)
        attempts = f" ×{s.attempts}" if s.attempts > 1 else ""
        tip = escape(f"{s.step_key}: {s.status}, attempt {s.attempts}, {(finish - s.started_at) * 1000:.0f} ms"
                     f" from {_clock(s.started_at)}" + (f", {s.interruptions} interrupted" if s.interruptions else ""))
        cls = BAR_CLASS.get(s.status, "run")
        parts.append(f'<g class="step" data-step="{escape(s.step_key)}" data-attempts="{s.attempts}">')
        parts.append(f"<title>{tip}</title>")
        parts.append(f'<text x="2" y="{y + 14}" class="label">{escape(s.step_key)}{attempts}</text>')
        parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}"/>')
        parts.append("</g>")
    parts.append(f'<text x="{label_w}" y="{height - 4}" class="axis">{_clock(start)}</text>')
    parts.append(f'<text x="{width - 2}" y="{height - 4}" class="axis end">+{span:.2f} s</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
