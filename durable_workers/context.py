"""The workflow context: durable steps, parallel branches and replay.

Step keys and scopes are described in :mod:`durable_workers.keys`. Each step
row also records its scope, its position (order of step calls) in that scope
and its sequence number in the workflow; on replay the i-th call of a scope
must carry the name recorded at position i, otherwise
:class:`~durable_workers.errors.NonDeterminismError` is raised.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, TypeVar, overload

from . import keys
from .backends import Store
from .attempt import AttemptControl, Listener, StepEvent, parse_crash_at
from .codec import decode_error, decode_json, encode_error, encode_json, rebuild_error, safe_str, summarize_error
from .errors import (
    AttemptAbandoned,
    DurableError,
    DurableInterrupt,
    NonDeterminismError,
    StepFailedError,
)
from .policy import DEFAULT_POLICY, StepPolicy, current_context, step
from .children import Children
from .messaging import Messaging
from .primitives import Primitives
from .records import StepRecord, StepStatus
from .step_call import Overrun, call_step
from .typed import step_result


T = TypeVar("T")

class Context(Children, Messaging, Primitives):
    """Handed to every workflow function as its first argument.

    ``ctx.step(...)`` runs and checkpoints a side effect, ``ctx.parallel(...)``
    fans out, ``ctx.workflow_id`` names the workflow, and inside a step
    function ``ctx.step_key`` / ``ctx.idempotency_key`` identify the call for
    downstream deduplication.
    """


    def __init__(
        self,
        *,
        workflow_id: str,
        store: Store,
        worker_id: str,
        token: int,
        recorded: Iterable[StepRecord] = (),
        listener: Listener | None = None,
        crash_at: str | None = None,
        control: AttemptControl | None = None,
        attempt: int = 1,
    ) -> None:
        self.workflow_id = workflow_id
        self.attempt = attempt
        self._store = store
        self._worker_id = worker_id
        self._token = token
        recorded = list(recorded)
        self._recorded = {r.step_key: r for r in recorded}
        self._by_position = {(r.scope, r.position): r for r in recorded}
        self._visited: set[str] = set()
        self._seq = max((r.seq for r in recorded), default=0)
        self._seq_lock = threading.Lock()
        #: The first divergence from the recorded history; it fails the workflow even if caught.
        self.diverged: NonDeterminismError | None = None
        #: A step of this attempt overran its timeout; its thread may still be running here.
        self.overran = False
        #: Exceptions raised into the workflow by failed steps, with the step's key.
        self._step_failures: list[tuple[BaseException, str]] = []
        self._listener = listener
        self._crash_at = parse_crash_at(crash_at)
        self._control = control or AttemptControl()

    # ----------------------------------------------------------------- public

    @property
    def database_path(self) -> str:
        """Path of the SQLite file this workflow is recorded in."""
        return self._store.path

    @property
    def step_key(self) -> str:
        """Key of the step being executed (``name#k`` with its scope path)."""
        key = keys.running_step()
        if key is None:
            raise DurableError("ctx.step_key is only available inside a step function")
        return key

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and crashes of this step call; see :func:`keys.idempotency_key`."""
        return keys.idempotency_key(self.workflow_id, self.step_key)

    @overload
    def step(self, step_id: str, fn: Callable[[], T], **policy: Any) -> T: ...
    @overload
    def step(self, step_id: Callable[[], T], **policy: Any) -> T: ...

    def step(
        self,
        step_id: str | Callable[[], T],
        fn: Callable[[], T] | None = None,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> T:
        """Run ``fn`` once for this workflow and checkpoint its JSON result.

        ``ctx.step("id", fn)`` or ``ctx.step(fn)`` (id from the function's
        name; a lambda's from its call site). A completed step returns its
        recorded value without running; the value is always the JSON-decoded
        result, rebuilt as ``fn``'s annotated return type when that is a dataclass, a
        pydantic model or a registered type (:mod:`durable_workers.typed`). A recorded failure is raised
        again. Raises :class:`NotSerializableError` for a result JSON cannot
        encode, :class:`NonDeterminismError` when replay diverges, and
        :class:`DurableError` when called inside another step or from a thread
        that ``ctx.parallel`` did not start.
        """
        if fn is None:
            if not callable(step_id):
                raise TypeError("ctx.step needs a function: ctx.step('id', fn) or ctx.step(fn)")
            fn, name = step_id, keys.auto_name(step_id)
        elif isinstance(step_id, str):
            name = step_id
        else:
            raise TypeError("ctx.step(step_id, fn): step_id must be a string")
        if not callable(fn):
            raise TypeError(f"ctx.step({name!r}, fn): fn must be callable")
        keys.check_name(name)
        scope = keys.current_scope(self, f"ctx.step({name!r})")
        policy = getattr(fn, "__durable_policy__", None) or DEFAULT_POLICY
        overrides = {"retries": retries, "backoff": backoff, "timeout": timeout, "max_attempts": max_attempts}
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            policy = replace(policy, **given)
        return self._run_step(scope, name, fn, policy)

    def parallel(self, *branches: Callable[[], Any]) -> list[Any]:
        """Run zero-argument callables concurrently; return results in argument order.

        Each branch gets its own scope (``parallel#k/i/``) reserved before any
        thread starts. If branches raise, the first in argument order is
        re-raised after all have finished (an interrupt such as a lost lease
        before any ordinary exception).
        """
        for branch in branches:
            if not callable(branch):
                raise TypeError("ctx.parallel takes zero-argument callables, e.g. lambda: ctx.step(...)")
        scope = keys.current_scope(self, "ctx.parallel")
        if not branches:
            return []
        k = scope.next_call("parallel")
        paths = [f"{scope.path}parallel#{k}/{i}/" for i in range(len(branches))]
        results: list[Any] = [None] * len(branches)
        errors: list[BaseException | None] = [None] * len(branches)

        def run(index: int) -> None:
            keys.activate(self, keys.Scope(paths[index]))
            try:
                results[index] = branches[index]()
            except BaseException as exc:  # handed to the calling thread below
                errors[index] = exc
            finally:
                self._store.close()

        threads = [
            threading.Thread(target=run, args=(i,), name=f"{self.workflow_id}:{paths[i]}", daemon=True)
            for i in range(len(branches))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        interrupts = [e for e in errors if isinstance(e, DurableInterrupt)]
        if interrupts:
            raise interrupts[0]
        for error in errors:
            if error is not None:
                raise error
        return results

    # ----------------------------------------------------------------- engine side

    def unreplayed_steps(self) -> list[str]:
        """Recorded step keys the run did not reach (the code lost a step)."""
        return sorted(set(self._recorded) - self._visited)

    def _emit(self, kind: str, key: str, **fields: Any) -> None:
        if self._listener is not None:
            self._listener(StepEvent(kind, self.workflow_id, key, **fields))

    def _maybe_crash(self, point: str, name: str, key: str) -> None:
        if self._crash_at is None:
            return
        target, wanted = self._crash_at
        if wanted == point and target in (name, key):
            os.kill(os.getpid(), signal.SIGKILL)

    def _diverge(self, message: str) -> NonDeterminismError:
        error = NonDeterminismError(message)
        if self.diverged is None:
            self.diverged = error
        return error

    def _raised_by(self, key: str, error: Exception) -> Exception:
        """Remember that ``error`` is step ``key``'s failure raised into the workflow; return it."""
        self._step_failures.append((error, key))
        return error

    def failed_step_of(self, exc: BaseException) -> str | None:
        """Key of the step whose failure ``exc`` is (or was caused by), if any."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            for error, key in reversed(self._step_failures):
                if error is current:
                    return key
            current = current.__cause__ or current.__context__
        return None

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _run_step(self, scope: keys.Scope, name: str, fn: Callable[[], T], policy: StepPolicy) -> T:
        if self.diverged is not None:  # the code swallowed a divergence: run nothing more
            raise NonDeterminismError(str(self.diverged))
        key = f"{scope.path}{name}#{scope.next_call(name)}"
        position = scope.position
        scope.position += 1
        at_position = self._by_position.get((scope.path, position))
        if at_position is not None and at_position.step_key != key:
            raise self._diverge(
                f"workflow {self.workflow_id} changed under replay: call {position + 1} of scope "
                f"'{scope.path or 'root'}' was recorded as step {at_position.step_key!r} but the code now "
                f"calls {key!r}; finish or cancel running workflows before changing their code"
            )
        recorded = self._recorded.get(key)
        if recorded is not None and (recorded.scope, recorded.position) != (scope.path, position):
            raise self._diverge(
                f"workflow {self.workflow_id} changed under replay: step {key!r} was recorded at "
                f"position {recorded.position + 1} but is now call {position + 1}"
            )
        self._visited.add(key)
        if recorded is not None and recorded.status == StepStatus.COMPLETED.value:
            value = decode_json(recorded.output, workflow_id=self.workflow_id, column="output", step_key=key)
            self._emit("replayed", key, attempt=recorded.attempts)
            return step_result(fn, value)  # type: ignore[no-any-return]
        if recorded is not None and recorded.status == StepStatus.FAILED.value:
            data = decode_error(recorded.error, workflow_id=self.workflow_id, step_key=key)
            self._emit("replayed-failure", key, attempt=recorded.attempts, error=summarize_error(recorded.error))
            raise self._raised_by(key, rebuild_error(key, data))
        seq = self._next_seq() if recorded is None else recorded.seq
        return self._execute(name, key, scope.path, position, seq, fn, policy)

    def _execute(
        self, name: str, key: str, scope: str, position: int, seq: int, fn: Callable[[], T], policy: StepPolicy
    ) -> T:
        new = key not in self._recorded  # no row yet: the store can insert without looking
        while True:
            self._control.check(self.workflow_id, f"step {key}")
            self.check_deadline()
            start = self._store.start_step(
                self.workflow_id,
                key,
                name=name,
                scope=scope,
                position=position,
                seq=seq,
                worker_id=self._worker_id,
                token=self._token,
                max_attempts=policy.attempts_allowed(),
                timeout=policy.timeout,
                new=new,
            )
            new = False
            self._maybe_crash("before", name, key)
            self._emit("started", key, attempt=start.attempts)
            began = time.monotonic()
            try:
                value = call_step(self, key, fn, policy.timeout)
            except DurableInterrupt:
                raise
            except Overrun as overrun:
                self.overran = True
                self._failed(key, overrun.error, overrun.error, start.attempts, policy, began, timed_out=True)
            except Exception as exc:
                self._failed(key, exc, exc, start.attempts, policy, began)
            except BaseException as exc:  # foreign: SystemExit, KeyboardInterrupt, CancelledError...
                error = StepFailedError(key, f"{type(exc).__module__}.{type(exc).__qualname__}", safe_str(exc))
                self._failed(key, exc, error, start.attempts, replace(policy, retries=0), began)
            else:
                output = self._encode(key, value)
                self._maybe_crash("returned", name, key)  # its function ran; its result is not recorded yet
                self._store.complete_step(self.workflow_id, key, output, worker_id=self._worker_id, token=self._token)
                self._maybe_crash("after", name, key)
                self._emit("completed", key, attempt=start.attempts, duration=time.monotonic() - began)
                value = decode_json(output, workflow_id=self.workflow_id, column="output", step_key=key)
                return step_result(fn, value)  # type: ignore[no-any-return]
            if not self._control.wakeup.wait(policy.delay(start.attempts)):
                continue
            self._control.check(self.workflow_id, f"the retry of step {key}")

    def _failed(
        self,
        key: str,
        exc: BaseException,
        raised: Exception,
        attempts: int,
        policy: StepPolicy,
        began: float,
        *,
        timed_out: bool = False,
    ) -> None:
        """Record the failed execution ``exc``; raise ``raised`` when retries are exhausted.

        Returns (so the caller retries) when retries remain. A timed-out
        execution with retries left abandons the attempt instead: its thread
        may still run, so the retry must run in another process.
        """
        error = encode_error(exc)
        final = attempts >= policy.retries + 1
        self._store.fail_step(
            self.workflow_id, key, error, final=final, worker_id=self._worker_id, token=self._token, overran=timed_out
        )
        self._emit(
            "failed" if final else "retrying",
            key,
            attempt=attempts,
            duration=time.monotonic() - began,
            error=summarize_error(error),
            timed_out=timed_out,
        )
        if final and raised is exc:
            raise self._raised_by(key, raised)
        if final:
            raise self._raised_by(key, raised) from exc
        if timed_out:
            raise AttemptAbandoned(
                f"step {key} timed out (attempt {attempts}); its retry runs in a fresh worker process"
            ) from exc

    def _encode(self, key: str, value: Any) -> str:
        try:
            return encode_json(value, f"step {key}")
        except Exception as error:
            self._store.fail_step(
                self.workflow_id, key, encode_error(error), final=True, worker_id=self._worker_id, token=self._token
            )
            self._emit("failed", key, error=str(error))
            raise self._raised_by(key, error)


__all__ = ["AttemptControl", "Context", "Listener", "StepEvent", "StepPolicy", "current_context", "parse_crash_at", "step"]
