"""The pre-deploy replay check: would the current code replay every unfinished workflow?

:func:`check_replay` runs each non-terminal workflow's function against its
recorded history in a :class:`ReplayContext`, which never executes a step
body and never writes: a recorded step returns its recorded value (or raises
its recorded error), and the first call the history has no finished record
for ends that workflow's check ("ok, would continue at KEY"). A call that
does not match the record at its position, recorded steps the code no longer
reaches, or a workflow name the app no longer registers is a divergence.

Hook for primitives that record themselves as steps (sleep, messages, child
workflows, patches): a primitive built on ``Context._run_step`` needs nothing
more, since its recorded value replays and an unrecorded call stops the
check. A primitive that would write or wait outside ``_run_step`` checks
``ctx.read_only`` first and, when True, raises ``ctx.stop_replay(key, what)``
(e.g. ``"would wait for a message on 'approval'"``) instead. Any other
:class:`~durable_workers.errors.DurableInterrupt` raised during the check (a
suspend, say) also ends it as "ok", with the interrupt's text.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from . import keys
from .backends import Store
from .context import Context, StepPolicy
from .errors import DurableInterrupt, NonDeterminismError
from .records import TERMINAL, Status, StepRecord, WorkflowRecord
from .registry import Registry
from .typed import workflow_inputs


class ReplayStop(DurableInterrupt):
    """Ends a read-only replay where the recorded history ends (not an error)."""

    def __init__(self, step_key: str, detail: str) -> None:
        super().__init__(detail)
        self.step_key = step_key
        self.detail = detail


@dataclass(frozen=True)
class ReplayVerdict:
    """What replaying one workflow against the current code found.

    ``outcome`` is ``continues`` (the history ends at ``step``), ``completes``
    (every call was recorded and the function returned), ``fails`` (a recorded
    failure ends the function, as it would in a real run), ``breaks`` (the new
    code raises something other than a recorded failure while replaying: its
    inputs or a recorded value no longer fit, or a bug), ``stops`` (another
    primitive ended the replay, see ``detail``), ``diverges`` (``step`` is the
    first call that does not match) or ``unregistered``.
    """

    workflow_id: str
    name: str
    status: str
    outcome: str
    step: str | None
    detail: str

    @property
    def ok(self) -> bool:
        """False when the current code would hit a NonDeterminismError (or cannot run the workflow)."""
        return self.outcome not in ("diverges", "breaks", "unregistered")

    def as_json(self) -> dict[str, Any]:
        """The verdict as a JSON object (``--json``)."""
        return {**asdict(self), "ok": self.ok}


class ReplayContext(Context):
    """A :class:`Context` that replays recorded steps and never executes a step or writes.

    See the module docstring for how other primitives plug in
    (``read_only``, :meth:`stop_replay`).
    """

    read_only = True

    def __init__(self, record: WorkflowRecord, steps: list[StepRecord], store: Store) -> None:
        super().__init__(workflow_id=record.id, store=store, worker_id="check-replay", token=0, recorded=steps)
        #: Key of the first call that diverged from the history (the code's key).
        self.diverged_at: str | None = None
        self._calling = threading.local()  # the key each thread is calling (ctx.parallel branches)

    def stop_replay(self, step_key: str, detail: str) -> ReplayStop:
        """The interrupt a primitive raises where a real run would write or wait."""
        return ReplayStop(step_key, detail)

    def _run_step(self, scope: keys.Scope, name: str, fn: Callable[[], Any], policy: StepPolicy) -> Any:
        self._calling.key = f"{scope.path}{name}#{scope.counts.get(name, 0) + 1}"
        return super()._run_step(scope, name, fn, policy)

    def _diverge(self, message: str) -> NonDeterminismError:
        if self.diverged is None:
            self.diverged_at = getattr(self._calling, "key", None)
        return super()._diverge(message)

    def _execute(self, name: str, key: str, scope: str, position: int, seq: int, fn: Any, policy: StepPolicy) -> Any:
        raise self.stop_replay(key, f"would continue at {key}")


def _verdict(record: WorkflowRecord, outcome: str, step: str | None, detail: str) -> ReplayVerdict:
    return ReplayVerdict(record.id, record.name, record.status, outcome, step, detail)


def check_workflow(store: Store, registry: Registry, record: WorkflowRecord) -> ReplayVerdict:
    """Replay one workflow's recorded history against ``registry``'s code (read-only)."""
    if record.name not in registry:
        known = ", ".join(registry.names()) or "none"
        return _verdict(record, "unregistered", None, f"workflow {record.name!r} is not registered (registered: {known})")
    if record.corrupt:
        return _verdict(record, "fails", None, f"its {record.corrupt[0]} does not decode; it would fail as corrupt")
    spec = registry.get(record.name)
    ctx = ReplayContext(record, store.load_steps(record.id), store)
    keys.activate(ctx)
    try:
        spec.fn(ctx, **workflow_inputs(spec.fn, record.input))
    except ReplayStop as stop:
        if ctx.diverged is None:
            return _verdict(record, "continues", stop.step_key, stop.detail)
    except DurableInterrupt as exc:
        if ctx.diverged is None:
            return _verdict(record, "stops", None, str(exc) or type(exc).__name__)
    except Exception as exc:
        if ctx.diverged is None and ctx.failed_step_of(exc) is not None:  # a recorded failure, replayed as recorded
            return _verdict(record, "fails", None, f"would fail: {type(exc).__name__}: {exc}")
        if ctx.diverged is None:  # the new code raises where the recorded run went on: deploying it fails this workflow
            return _verdict(record, "breaks", None, f"the new code raises {type(exc).__name__}: {exc}")
    finally:
        keys.activate(None)
    if ctx.diverged is not None:
        return _verdict(record, "diverges", ctx.diverged_at, str(ctx.diverged))
    missing = ctx.unreplayed_steps()
    if missing:
        return _verdict(record, "diverges", missing[0], f"recorded steps {', '.join(missing)} are not called any more")
    return _verdict(record, "completes", None, "every call was recorded; it would complete")


def check_replay(store: Store, registry: Registry) -> list[ReplayVerdict]:
    """A verdict for every non-terminal workflow, oldest first; nothing is executed or written."""
    unfinished = [s.value for s in Status if s.value not in TERMINAL]
    records = [r for status in unfinished for r in store.list_workflows(status, limit=None)]
    records.sort(key=lambda r: (r.created_at, r.id))
    return [check_workflow(store, registry, record) for record in records]


__all__ = ["ReplayContext", "ReplayStop", "ReplayVerdict", "check_replay", "check_workflow"]
