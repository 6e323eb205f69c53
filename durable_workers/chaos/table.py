"""The verdict as a table for people (``durable chaos`` prints it)."""

from __future__ import annotations

import json
from typing import Any

Row = tuple[str, str, str]  # label, value, mark


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _rec(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "n=0"
    return f"n={summary['count']}  median {summary['median_s']:.2f} s  max {summary['max_s']:.2f} s"


def _row(label: str, value: Any, mark: str = "") -> Row:
    return (label, str(value), mark)


def _on_hosts(config: dict[str, Any]) -> str:
    hosts = config.get("hosts", 1)
    return f" on each of {hosts} hosts" if hosts > 1 else ""


def _head(verdict: dict[str, Any]) -> str:
    c, w, exp = verdict["config"], verdict["workflows"], verdict["expected"]
    faults = ",".join(c["faults"]) or "none"
    return (
        f"durable chaos: {c['workers']} workers{_on_hosts(c)}, {w['submitted']} {c['workflow']} workflows "
        f"(+{exp['failures']['count'] + exp['pending']['count']} bad-input), faults {faults} "
        f"every ~{c['fault_interval']:g} s, ttl {c['ttl']:g} s, seed {c['seed']}\ndatabase: {c['db']}"
    )


def _workflow_rows(verdict: dict[str, Any]) -> list[Row]:
    w, exp, checks = verdict["workflows"], verdict["expected"], verdict["checks"]
    failures, pending = exp["failures"], exp["pending"]
    return [
        _row("WORKFLOWS", ""),
        _row("  completed", f"{w['completed']} / {w['submitted']}", _mark(checks["all_completed"])),
        _row("  failed", w["failed"], _mark(w["failed"] == 0)),
        _row("  stuck (not ended)", w["stuck"], _mark(w["stuck"] == 0)),
        _row(
            "  expected failures",
            f"{failures['in_documented_state']} / {failures['count']} FAILED with their documented error",
            _mark(failures["in_documented_state"] == failures["count"]),
        ),
        _row(
            "  expected pending",
            f"{pending['in_documented_state']} / {pending['count']} PENDING (name no worker knows)",
            _mark(pending["in_documented_state"] == pending["count"]),
        ),
    ]


def _fault_rows(verdict: dict[str, Any]) -> list[Row]:
    f, checks = verdict["faults"], verdict["checks"]
    return [
        _row("FAULTS", ""),
        _row("  kill -9 worker", f["kill"]),
        _row("  SIGSTOP past ttl", f["stop"]),
        _row("  kill -9 supervisor", f"{f['supervisor']} (restarted; {f['supervisor_starts']} starts in all)"),
        _row("  kill -9 whole host", f"{f['host']} (restarted after it)" if f["host"] else 0),
        _row("  write lock held", f"{f['lock']} ({_rec(f['lock_held_s'])})" if f["lock"] else 0),
        _row("  store outage (lock past patience)", f"{f['outage']} ({_rec(f['outage_held_s'])})" if f["outage"] else 0),
        _row("  disk full", _disk_value(f)),
        _row("  faults that hit a running step", f["hit_running_step"]),
        _row("  healthy workers killed as frozen", len(f["healthy_killed_as_frozen"]),
             _mark(checks["no_healthy_worker_killed_as_frozen"])),
    ]


def _disk_value(f: dict[str, Any]) -> str:
    """The disk-full row: how often and how long, or why the fault was skipped."""
    why = f["not_sent"].get("diskfull")
    if why:
        return f"skipped: {why}"
    return f"{f['diskfull']} ({_rec(f['diskfull_held_s'])})" if f["diskfull"] else "0"


def _end_state_rows(verdict: dict[str, Any]) -> list[Row]:
    """The two end-state lines, each written ``label: N`` so it reads as one phrase."""
    e, checks = verdict["end_state"], verdict["checks"]
    return [
        _row("END STATE (after the fleet drained)", ""),
        _row(f"  workflows stuck RUNNING at the end: {e['stuck_running']}", "", _mark(checks["no_workflow_stuck_running"])),
        _row(
            f"  workflows FAILED by infrastructure: {e['failed_by_infrastructure']}",
            "",
            _mark(checks["no_workflow_failed_by_infrastructure"]),
        ),
        _row(
            f"  ended workflows still holding a lease: {e['ended_with_lease_held']}",
            "",
            _mark(checks["ended_workflows_released_their_lease"]),
        ),
        _row(
            f"  steps FAILED by infrastructure: {e['steps_failed_by_infrastructure']}",
            "",
            _mark(checks["no_step_failed_by_infrastructure"]),
        ),
    ]


def _foreign_rows(verdict: dict[str, Any]) -> list[Row]:
    fo = verdict["foreign"]
    if "foreign" not in verdict["config"]["faults"]:
        return []
    return [
        _row("FOREIGN BaseException IN A STEP", ""),
        _row("  raised (first execution only)", fo["raised"]),
        _row("  recorded as the step's failure", fo["recorded_as_step_failure"], _mark(fo["not_recorded"] == 0)),
        _row("  run again after a fault instead", fo["run_again_after_a_fault"], "(info)"),
        _row("  workflows that took the fallback", fo["fallback_taken"], "(info)"),
        _row("  branch != recorded outcome", fo["branch_mismatches"], _mark(fo["branch_mismatches"] == 0)),
    ]


def _step_rows(verdict: dict[str, Any]) -> list[Row]:
    s, checks = verdict["steps"], verdict["checks"]
    explained = s["explained_by_kill"] + s["explained_by_stop"] + s["explained_by_host"] + s["explained_by_outage"]
    return [
        _row("STEPS", ""),
        _row("  executions (ledger)", f"{s['executions']} for {s['distinct']} step calls"),
        _row("  executed more than once", f"{s['executed_more_than_once']} steps, {s['reexecutions']} extra executions"),
        _row(
            "  started 3+ times (steps rows)",
            f"{s['steps_started_3_times_or_more']} (most starts of one step: {s['max_starts_of_a_step']})",
        ),
        _row(
            "  re-executions explained by a kill/stop/outage",
            f"{explained} / {explained + s['unexplained']}",
            _mark(checks["reexecutions_explained"]),
        ),
        _row("  COMPLETED step executed again", s["completed_step_reexecuted"], _mark(checks["no_completed_step_reexecuted"])),
        _row("  COMPLETED output != step's return", s["output_mismatches"] + s["result_mismatches"], _mark(checks["outputs_match"])),
        _row("  writes accepted from fenced workers", s["fenced_writes_accepted"], _mark(checks["no_fenced_write_accepted"])),
        _row("  side effects run by fenced workers", s["side_effects_by_fenced_workers"], "(info)"),
    ]


def _lock_rows(verdict: dict[str, Any]) -> list[Row]:
    lk, checks = verdict["locks"], verdict["checks"]
    return [
        _row("LOCKS", ""),
        _row("  'database is locked' in workflows", lk["errors_in_workflows"], _mark(checks["no_lock_error_in_workflows"])),
        _row("  ... in engine logs (retried)", lk["errors_in_engine_logs"], "(info)"),
    ]


def _recovery_rows(verdict: dict[str, Any]) -> list[Row]:
    rec = verdict["recovery"]
    rows = [_row("RECOVERY (fault -> next step of that workflow)", "")]
    kinds = [("kill", "after kill -9 worker"), ("stop", "after SIGSTOP"), ("supervisor", "after supervisor kill")]
    if verdict["faults"]["host"]:
        kinds.append(("host", "after whole-host kill"))
    for kind, label in kinds:
        rows.append(_row(f"  {label}", _rec(rec[kind])))
        rows.append(_row("    ... no lock fault overlapping", _rec(rec[f"{kind}_no_lock_overlap"])))
    rows.append(_row("  old fleet gone after supervisor kill", _rec(rec["old_fleet_exit_after_supervisor_kill"])))
    return rows


def _end_rows(verdict: dict[str, Any]) -> list[Row]:
    thr = verdict["throughput"]
    return [
        _row("THROUGHPUT", ""),
        _row("  duration", f"{thr['duration_s']:.1f} s"),
        _row("  workflows / s", thr["workflows_per_s"]),
        _row("  steps / s", thr["steps_per_s"]),
        _row("ORPHAN PROCESSES", len(verdict["orphans"]), _mark(verdict["checks"]["no_orphans"])),
    ]


def _conclusion(verdict: dict[str, Any]) -> list[str]:
    """The VERDICT line, then a sample of what failed."""
    s, w = verdict["steps"], verdict["workflows"]
    failed = [name for name, ok in verdict["checks"].items() if not ok]
    if verdict.get("interrupted"):
        failed.insert(0, "interrupted")
    lines = ["VERDICT: PASS" if verdict["ok"] else f"VERDICT: FAIL ({', '.join(failed)})"]
    for key in ("unexplained_detail", "completed_step_reexecuted_detail", "output_mismatch_detail", "fenced_writes_detail"):
        if s[key]:
            lines.append(f"  {key}: {json.dumps(s[key][:3])}")
    if w["failed_detail"] or w["stuck_detail"]:
        lines.append(f"  failed/stuck: {json.dumps((w['failed_detail'] + w['stuck_detail'])[:5])}")
    e, fo = verdict["end_state"], verdict["foreign"]
    for key, items in (
        ("stuck RUNNING", e["stuck_running_detail"]),
        ("ended with a lease held", e["ended_with_lease_held_detail"]),
        ("FAILED by infrastructure", e["failed_by_infrastructure_detail"]),
        ("steps FAILED by infrastructure", e["steps_failed_by_infrastructure_detail"]),
        ("foreign exception not recorded", fo["not_recorded_detail"]),
        ("branch != recorded outcome", fo["branch_mismatch_detail"]),
    ):
        if items:
            lines.append(f"  {key}: {json.dumps(items[:3])}")
    for b in verdict["expected"]["detail"]:
        if not b["ok"]:
            lines.append(f"  bad-input not in documented state: {json.dumps(b)}")
    if verdict["orphans"]:
        lines.append(f"  orphans: {json.dumps(verdict['orphans'][:3])}")
    return lines


def render(verdict: dict[str, Any]) -> str:
    """The verdict (from :func:`~durable_workers.chaos.analyse`) as a table for people, ending in its VERDICT line."""
    rows: list[Row] = []
    sections = (_workflow_rows, _fault_rows, _step_rows, _lock_rows, _end_state_rows, _foreign_rows, _recovery_rows, _end_rows)
    for section in sections:
        rows += section(verdict)
    width = max(len(r[0]) for r in rows) + 2
    vwidth = max(len(r[1]) for r in rows) + 2
    lines = [_head(verdict), ""]
    for label, value, mark in rows:
        lines.append(f"{label:<{width}}{value:<{vwidth}}{mark}".rstrip())
    return "\n".join(lines + [""] + _conclusion(verdict))
