"""Eight threads, each with its own connection, hammer one SQLite file through the Store.

Every thread submits its own workflows, then claims from the shared pool until nothing is left,
starting and completing steps and finishing each workflow it claimed: the full write path of a
worker. No ``database is locked`` may escape and the final counts must be exact.
"""

from __future__ import annotations

import json
import threading

import pytest

from durable_workers.backends import Store
from durable_workers.records import Status

THREADS = 8
WORKFLOWS_PER_THREAD = 50
STEPS_PER_WORKFLOW = 4
NAME = "core_hammer"


def hammer(store: Store, index: int, start: threading.Barrier) -> int:
    """Submit, then claim and run workflows until none is runnable; return how many it ran."""
    worker_id = f"hammer-{index}"
    start.wait()
    store.register_worker(worker_id, names=[NAME])
    for n in range(WORKFLOWS_PER_THREAD):
        store.submit(f"t{index}-{n}", NAME, "{}")
    ran = 0
    while (claim := store.claim_next(worker_id, [NAME], ttl=300)) is not None:
        workflow_id, token = claim.workflow.id, claim.token
        for position in range(STEPS_PER_WORKFLOW):
            key = f"s#{position + 1}"
            store.start_step(
                workflow_id, key, name="s", scope="", position=position,
                worker_id=worker_id, token=token, max_attempts=3,
            )
            store.complete_step(workflow_id, key, json.dumps([worker_id, position]), worker_id=worker_id, token=token)
        store.heartbeat(worker_id, ttl=300)
        store.finish_workflow(workflow_id, Status.COMPLETED, result_json=json.dumps(worker_id), worker_id=worker_id, token=token)
        ran += 1
    return ran


@pytest.mark.timeout(90)
def test_eight_threads_hammering_the_store_see_no_lock_errors_and_exact_counts(store: Store) -> None:
    start = threading.Barrier(THREADS)
    ran: dict[int, int] = {}
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            ran[index] = hammer(store, index, start)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=body, args=(i,), name=f"hammer-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors]
    total = THREADS * WORKFLOWS_PER_THREAD
    assert sum(ran.values()) == total
    assert store.count_by_status()[Status.COMPLETED.value] == total
    workflows = store.list_workflows(limit=total + 1)
    assert len(workflows) == total
    for record in workflows:
        assert (record.status, record.attempts) == ("COMPLETED", 1), record.id  # claimed exactly once
        steps = store.load_steps(record.id)
        assert [(s.step_key, s.status, s.attempts) for s in steps] == [
            (f"s#{p + 1}", "COMPLETED", 1) for p in range(STEPS_PER_WORKFLOW)
        ]
        # Every step was written by the worker that finished the workflow.
        assert {json.loads(s.output)[0] for s in steps} == {record.result}
        lease = store.get_lease(record.id)
        assert (lease.worker_id, lease.token) == (None, 1)
