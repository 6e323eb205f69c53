"""The ``fork`` store operation on both backends: a PENDING copy keeping the history before a step."""

from __future__ import annotations

import json

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)
from durable_workers import ConflictError, WorkflowNotFound
from durable_workers.backends import Store
from durable_workers.errors import StepNotFound
from durable_workers.records import Status, StepStatus
from tests.contract.conftest import Backend

NAME = "backend_other_side"
TTL = 30.0

pytestmark = [pytest.mark.timeout(120)]


def _record_history(store: Store) -> None:
    """Workflow ``src``: a#1 completed, b#1 failed (caught), c#1 completed, c#2 still running."""
    store.submit("src", NAME, json.dumps({"side": "x"}))
    store.register_worker("w", names=[NAME], ttl=TTL)
    claim = store.claim_next("w", [NAME], ttl=TTL)
    assert claim is not None
    for seq, key in enumerate(["a#1", "b#1", "c#1", "c#2"], start=1):
        store.start_step(
            "src", key, name=key.split("#")[0], scope="", position=seq - 1, seq=seq,
            worker_id="w", token=claim.token, max_attempts=3, new=True,
        )  # fmt: skip
        if key == "b#1":
            store.fail_step("src", key, json.dumps({"type": "ValueError", "message": "no"}), final=True,
                            worker_id="w", token=claim.token)  # fmt: skip
        elif key != "c#2":
            store.complete_step("src", key, json.dumps(key), worker_id="w", token=claim.token)


def _steps(store: Store, workflow_id: str) -> dict[str, tuple[str, str | None, int]]:
    return {r.step_key: (r.status, r.output, r.seq) for r in store.load_steps(workflow_id)}


def test_fork_copies_the_finished_steps_recorded_before_the_step(backend: Backend) -> None:
    store = backend.open("db")
    _record_history(store)
    source_before = (store.get_workflow("src"), _steps(store, "src"))

    first = store.fork("src", "c#1")
    assert first == "src~fork-1"
    fork = store.get_workflow(first)
    assert (fork.name, fork.input, fork.status, fork.attempts) == (NAME, {"side": "x"}, Status.PENDING.value, 0)
    assert _steps(store, first) == {
        "a#1": (StepStatus.COMPLETED.value, '"a#1"', 1),
        "b#1": (StepStatus.FAILED.value, None, 2),
    }
    # The unfinished c#2 is not copied; everything finished before it is.
    assert set(_steps(store, store.fork("src", "c#2"))) == {"a#1", "b#1", "c#1"}
    assert store.fork("src", "a#1", "chosen") == "chosen" and _steps(store, "chosen") == {}
    assert (store.get_workflow("src"), _steps(store, "src")) == source_before

    # The copy is claimed like any PENDING workflow, with its history.
    claim = store.claim_workflow(first, "w", ttl=TTL)
    assert claim is not None and {s.step_key for s in claim.steps} == {"a#1", "b#1"}


def test_fork_refuses_bad_input_and_writes_nothing(backend: Backend) -> None:
    store = backend.open("db")
    _record_history(store)
    ids = {r.id for r in store.list_workflows(limit=None)}
    with pytest.raises(StepNotFound, match=r"durable steps src"):
        store.fork("src", "zzz#1")
    with pytest.raises(WorkflowNotFound):
        store.fork("nope", "a#1")
    store.fork("src", "b#1", "taken")
    with pytest.raises(ConflictError, match="choose another --id"):
        store.fork("src", "b#1", "taken")
    assert {r.id for r in store.list_workflows(limit=None)} == ids | {"taken"}
    assert store.fork("src", "b#1") == "src~fork-1"  # the default id skips nothing it need not


def test_fork_keeps_the_queue_priority_and_key_but_not_the_dedupe_key(backend: Backend) -> None:
    store = backend.open("db")
    store.submit("paid", NAME, "{}", queue="payments", priority=5, concurrency_key="acme", dedupe_key="inv-1")
    store.register_worker("w", names=[NAME], ttl=TTL)
    claim = store.claim_next("w", [NAME], ttl=TTL)
    assert claim is not None
    store.start_step("paid", "a#1", name="a", scope="", position=0, seq=1, worker_id="w", token=claim.token,
                     max_attempts=3, new=True)  # fmt: skip
    fork = store.get_workflow(store.fork("paid", "a#1"))
    # The source still holds its dedupe key (it is RUNNING): the fork must not take it, but obeys the same limits.
    assert (fork.queue, fork.priority, fork.concurrency_key, fork.dedupe_key) == ("payments", 5, "acme", None)
