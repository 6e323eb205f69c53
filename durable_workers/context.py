"""The workflow context: durable steps, parallel branches, step keys and replay.

Step keys: within a *scope* the k-th call of a step named ``n`` gets the key
``n#k``. The workflow body is the root scope (path ``""``); ``ctx.parallel``
reserves ``parallel#k`` in the calling scope and gives branch ``i`` the child
scope ``parallel#k/i/``, before any branch thread starts. Each step row also
records its scope and its position (order of step calls) in that scope; on
replay the i-th call of a scope must carry the name recorded at position i,
otherwise :class:`~durable_workers.errors.NonDeterminismError` is raised.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, TypeVar, overload

from .errors import (
    DurableError,
    DurableInterrupt,
    NonDeterminismError,
    NotSerializableError,
    StepFailedError,
    StepTimeoutError,
    WorkerStopping,
)
from .models import StepStatus
from .store import StepRecord, Store, summarize_error

error_summary = summarize_error

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Starts a step may have in all (crashed attempts count) unless its policy allows more.
DEFAULT_MAX_ATTEMPTS = 3

_current = threading.local()


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class StepPolicy:
    """How a step is retried and bounded.

    ``retries``: further attempts after the step raises (default 0).
    ``backoff``: seconds before the first retry, doubling each time, capped at
    ``max_backoff``. ``timeout``: seconds an attempt may run before it fails
    with :class:`StepTimeoutError`. ``max_attempts``: starts allowed in all,
    crashed attempts included (default ``max(retries + 1, 3)``).
    """

    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None
    max_attempts: int | None = None

    def attempts_allowed(self) -> int:
        """Total starts allowed for the step."""
        if self.max_attempts is not None:
            return max(self.max_attempts, 1)
        return max(self.retries + 1, DEFAULT_MAX_ATTEMPTS)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)


_DEFAULT_POLICY = StepPolicy()


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StepEvent:
    """What happened to a step, for progress output and logs.

    ``kind`` is one of ``replayed``, ``started``, ``completed``, ``retrying``,
    ``failed`` (retries exhausted) or ``replayed-failure``.
    """

    kind: str
    workflow_id: str
    step_key: str
    attempt: int = 0
    duration: float = 0.0
    error: str | None = None


Listener = Callable[[StepEvent], None]


# --------------------------------------------------------------------------- errors as data


def encode_error(exc: BaseException) -> str:
    """Serialise an exception so that replay can raise the same one."""
    cls = type(exc)
    try:
        args = json.loads(json.dumps(list(exc.args)))
    except (TypeError, ValueError):
        args = None
    return json.dumps(
        {
            "type": f"{cls.__module__}.{cls.__qualname__}",
            "message": str(exc),
            "args": args,
            "traceback": "".join(traceback.format_exception(exc)).rstrip(),
        }
    )


def rebuild_error(step_key: str, error: str) -> Exception:
    """The exception a recorded step failure raises on replay.

    The original class when it can be imported and rebuilt from its JSON
    arguments; otherwise :class:`StepFailedError` carrying its name and text.
    """
    try:
        data = json.loads(error)
    except ValueError:
        return StepFailedError(step_key, "Error", error)
    type_name, message, args = data.get("type", "Error"), data.get("message", ""), data.get("args")
    module_name, _, qualname = type_name.rpartition(".")
    if args is not None and module_name:
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            if isinstance(target, type) and issubclass(target, Exception):
                rebuilt = target(*args)
                if str(rebuilt) == message:
                    return rebuilt
        except Exception:  # any failure to rebuild falls back to StepFailedError
            pass
    return StepFailedError(step_key, type_name, message)


def _same_on_replay(step_key: str, exc: Exception, error: str) -> Exception:
    rebuilt = rebuild_error(step_key, error)
    return exc if type(rebuilt) is type(exc) else rebuilt


# --------------------------------------------------------------------------- scopes


class _Scope:
    """Counters of one scope; used by exactly one thread at a time."""

    __slots__ = ("path", "counts", "position")

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.position = 0

    def next_call(self, name: str) -> int:
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return count


def _auto_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    if "<lambda>" in name:
        code = getattr(fn, "__code__", None)
        if code is not None:
            return f"lambda@{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return name.replace("<locals>.", "")


def _check_name(name: str) -> None:
    if not name or "#" in name or "/" in name:
        raise DurableError(f"invalid step id {name!r}: use a non-empty name without '#' or '/'")


def parse_crash_at(spec: str | None) -> tuple[str, str] | None:
    """Parse ``STEP:before|after``; raises :class:`DurableError` when malformed."""
    if not spec:
        return None
    target, _, point = spec.rpartition(":")
    if not target or point not in ("before", "after"):
        raise DurableError(f"--crash-at must look like STEP:before or STEP:after, got {spec!r}")
    return target, point


# --------------------------------------------------------------------------- context


class Context:
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
        stopping: threading.Event | None = None,
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
        #: The first divergence from the recorded history; it fails the workflow even if caught.
        self.diverged: NonDeterminismError | None = None
        self._listener = listener
        self._crash_at = parse_crash_at(crash_at)
        self._stopping = stopping or threading.Event()
        self._local = threading.local()
        self._root = _Scope("")

    # ----------------------------------------------------------------- public

    @property
    def database_path(self) -> str:
        """Path of the SQLite file this workflow is recorded in."""
        return self._store.path

    @property
    def step_key(self) -> str:
        """Key of the step being executed (``name#k`` with its scope path)."""
        key = getattr(self._local, "step_key", None)
        if key is None:
            raise DurableError("ctx.step_key is only available inside a step function")
        return key

    @property
    def idempotency_key(self) -> str:
        """``workflow_id/step_key``: stable across retries and crashes of this step call."""
        return f"{self.workflow_id}/{self.step_key}"

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
        result (a tuple comes back as a list). A recorded failure is raised
        again. Raises :class:`NotSerializableError` for a result JSON cannot
        encode and :class:`NonDeterminismError` when replay diverges.
        """
        if fn is None:
            if not callable(step_id):
                raise TypeError("ctx.step needs a function: ctx.step('id', fn) or ctx.step(fn)")
            fn, name = step_id, _auto_name(step_id)
        elif isinstance(step_id, str):
            name = step_id
        else:
            raise TypeError("ctx.step(step_id, fn): step_id must be a string")
        if not callable(fn):
            raise TypeError(f"ctx.step({name!r}, fn): fn must be callable")
        _check_name(name)
        if getattr(self._local, "step_key", None) is not None:
            raise DurableError(f"ctx.step({name!r}) was called inside step {self._local.step_key}; steps cannot nest")
        policy = getattr(fn, "__durable_policy__", None) or _DEFAULT_POLICY
        overrides = {"retries": retries, "backoff": backoff, "timeout": timeout, "max_attempts": max_attempts}
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            policy = replace(policy, **given)
        return self._run_step(name, fn, policy)

    def parallel(self, *branches: Callable[[], Any]) -> list[Any]:
        """Run zero-argument callables concurrently; return results in argument order.

        Each branch gets its own scope (``parallel#k/i/``) reserved before any
        thread starts. If branches raise, the first in argument order is
        re-raised after all have finished.
        """
        for branch in branches:
            if not callable(branch):
                raise TypeError("ctx.parallel takes zero-argument callables, e.g. lambda: ctx.step(...)")
        if not branches:
            return []
        scope = self._scope()
        k = scope.next_call("parallel")
        paths = [f"{scope.path}parallel#{k}/{i}/" for i in range(len(branches))]
        results: list[Any] = [None] * len(branches)
        errors: list[BaseException | None] = [None] * len(branches)

        def run(index: int) -> None:
            self._local.scope = _Scope(paths[index])
            _current.context = self
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

    def _scope(self) -> _Scope:
        scope = getattr(self._local, "scope", None)
        if scope is None:
            scope = self._local.scope = self._root
        return scope

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

    def _run_step(self, name: str, fn: Callable[[], T], policy: StepPolicy) -> T:
        if self.diverged is not None:  # the code swallowed a divergence: run nothing more
            raise NonDeterminismError(str(self.diverged))
        scope = self._scope()
        count = scope.next_call(name)
        key = f"{scope.path}{name}#{count}"
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
            self._emit("replayed", key, attempt=recorded.attempts)
            return json.loads(recorded.output) if recorded.output is not None else None
        if recorded is not None and recorded.status == StepStatus.FAILED.value:
            self._emit("replayed-failure", key, attempt=recorded.attempts, error=error_summary(recorded.error))
            raise rebuild_error(key, recorded.error or "")
        return self._execute(name, key, scope.path, position, fn, policy)

    def _execute(
        self, name: str, key: str, scope: str, position: int, fn: Callable[[], T], policy: StepPolicy
    ) -> T:
        new = key not in self._recorded  # no row yet: the store can insert without looking
        while True:
            if self._stopping.is_set():
                raise WorkerStopping(f"worker stopping before step {key}")
            start = self._store.start_step(
                self.workflow_id,
                key,
                name=name,
                scope=scope,
                position=position,
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
                value = self._call(key, fn, policy.timeout)
            except DurableInterrupt:
                raise
            except Exception as exc:
                error = encode_error(exc)
                final = start.attempts >= policy.retries + 1
                self._store.fail_step(
                    self.workflow_id, key, error, final=final, worker_id=self._worker_id, token=self._token
                )
                duration = time.monotonic() - began
                if final:
                    self._emit("failed", key, attempt=start.attempts, duration=duration, error=error_summary(error))
                    raise _same_on_replay(key, exc, error) from exc
                self._emit("retrying", key, attempt=start.attempts, duration=duration, error=error_summary(error))
                if self._stopping.wait(policy.delay(start.attempts)):
                    raise WorkerStopping(f"worker stopping while step {key} waits to retry") from exc
                continue
            output = self._encode(key, value)
            self._store.complete_step(
                self.workflow_id, key, output, worker_id=self._worker_id, token=self._token
            )
            self._maybe_crash("after", name, key)
            self._emit("completed", key, attempt=start.attempts, duration=time.monotonic() - began)
            return json.loads(output)

    def _encode(self, key: str, value: Any) -> str:
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = NotSerializableError(
                f"step {key} returned {type(value).__name__}, which is not JSON-serialisable ({exc}); "
                "return dicts, lists, strings, numbers, booleans or None"
            )
            self._store.fail_step(
                self.workflow_id, key, encode_error(error), final=True, worker_id=self._worker_id, token=self._token
            )
            self._emit("failed", key, error=str(error))
            raise error from None

    def _call(self, key: str, fn: Callable[[], T], timeout: float | None) -> T:
        if not timeout:
            self._local.step_key = key
            try:
                return fn()
            finally:
                self._local.step_key = None
        box: dict[str, Any] = {}

        def target() -> None:
            self._local.step_key = key
            _current.context = self
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the waiting thread
                box["error"] = exc

        runner = threading.Thread(target=target, name=f"step {key}", daemon=True)
        runner.start()
        runner.join(timeout)
        if runner.is_alive():
            raise StepTimeoutError(f"step {key} did not finish within {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]


# --------------------------------------------------------------------------- @step


def current_context() -> Context | None:
    """The context of the workflow running on this thread, if any."""
    return getattr(_current, "context", None)


def bind_context(context: Context | None) -> None:
    """Make ``context`` current on this thread (the engine does this)."""
    _current.context = context


def step(
    fn: F | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    timeout: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Make a function a durable step with a retry policy.

    Called inside a workflow, ``charge(10)`` runs as
    ``ctx.step("charge", lambda: charge(10))`` with this policy; called
    anywhere else it is a plain call.
    """
    policy = StepPolicy(retries=retries, backoff=backoff, timeout=timeout, max_attempts=max_attempts)

    def decorate(target: F) -> F:
        step_name = name or _auto_name(target)

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = current_context()
            if context is None or getattr(context._local, "step_key", None) is not None:
                return target(*args, **kwargs)
            call = functools.partial(target, *args, **kwargs)
            call.__durable_policy__ = policy  # type: ignore[attr-defined]
            return context.step(step_name, call)

        wrapper.__durable_policy__ = policy  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate
