"""PostgreSQL: every fenced end-of-attempt write survives a COMMIT whose reply is lost.

A real TCP proxy (``CommitReplyDropper``) forwards the COMMIT, so the server
commits, then drops the connection before the reply. Each operation must then
return what it would have returned and have written its row exactly once: by
confirming its own commit (``confirm=``) or because running it again changes
nothing (``safe=True``). The claim's case is in test_postgres.py.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)
from durable_workers.backends import Store, open_store
from durable_workers.records import Claim, Status, StepStatus
from tests.contract.pg_support import CommitReplyDropper

pytestmark = pytest.mark.timeout(120)

NAME = "backend_other_side"
TTL = 30.0
T0 = 1000.0


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[Store, Store, CommitReplyDropper]]:
    """``(direct, via, proxy)``: a store on the server and one through the proxy."""
    direct = open_store(pg_url)
    proxy = CommitReplyDropper(pg_url)
    via = open_store(proxy.url)
    try:
        yield direct, via, proxy
    finally:
        via.close_idle()
        proxy.close()
        direct.close_idle()


def _claimed(store: Store, now: float = T0) -> Claim:
    store.submit("wf", NAME, "{}", now=now)
    claim = store.claim_next("w", [NAME], ttl=TTL, now=now)
    assert claim is not None
    return claim


def _lost_reply(proxy: CommitReplyDropper, call: Callable[[], object], marker: bytes = b"COMMIT") -> object:
    """Run ``call`` with the reply to its next COMMIT (or message holding ``marker``) lost; check one was lost."""
    before = proxy.dropped
    proxy.arm(marker)
    result = call()
    assert proxy.dropped == before + 1
    return result


def _start(store: Store, token: int, *, new: bool = True, now: float = T0):  # type: ignore[no-untyped-def]
    return store.start_step("wf", "s#1", name="s", scope="", position=0, worker_id="w", token=token,
                            max_attempts=3, new=new, now=now)  # fmt: skip


def test_start_step_of_a_new_step(pair) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    # The fenced INSERT of a new step is sent in autocommit: the statement is its own commit.
    started = _lost_reply(proxy, lambda: _start(via, claim.token), b'INSERT INTO "steps"')
    assert (started.attempts, started.previous_error) == (1, None)
    assert [row.attempts for row in direct.load_steps("wf")] == [1]


def test_start_step_restarting_a_step(pair) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    _start(via, claim.token)
    via.fail_step("wf", "s#1", '{"type": "E", "message": "boom"}', final=False, worker_id="w", token=claim.token)
    started = _lost_reply(proxy, lambda: _start(via, claim.token, new=False, now=T0 + 1))
    assert started.attempts == 2 and started.previous_error is not None
    assert [(row.attempts, row.status) for row in direct.load_steps("wf")] == [(2, StepStatus.RUNNING.value)]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_finish_workflow(pair, status: Status) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    fields = {"result_json": '"done"'} if status is Status.COMPLETED else {"error": "bad", "failed_step": "s#1"}
    _lost_reply(proxy, lambda: via.finish_workflow("wf", status, worker_id="w", token=claim.token, now=T0 + 1, **fields))
    record = direct.get_workflow("wf")
    assert record.status == status.value and record.updated_at == T0 + 1
    lease = direct.get_lease("wf")
    assert lease is not None and lease.worker_id is None and lease.token == claim.token


def test_release(pair) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    released = _lost_reply(proxy, lambda: via.release("wf", "w", claim.token, reason="drain", now=T0 + 1))
    assert released is True
    record = direct.get_workflow("wf")
    assert (record.status, record.attempts, record.interruption) == (Status.PENDING.value, 0, "drain")


def test_cancel(pair) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    record = _lost_reply(proxy, lambda: via.cancel("wf", now=T0 + 1))
    assert record.status == Status.CANCELLED.value
    lease = direct.get_lease("wf")
    assert lease is not None and lease.worker_id is None and lease.token == claim.token + 1  # bumped once


def test_retry(pair) -> None:
    direct, via, proxy = pair
    claim = _claimed(via)
    via.finish_workflow("wf", Status.FAILED, worker_id="w", token=claim.token, error="bad", now=T0 + 1)
    record = _lost_reply(proxy, lambda: via.retry("wf", now=T0 + 2))
    assert (record.status, record.attempts) == (Status.PENDING.value, 0)
    assert direct.get_workflow("wf").status == Status.PENDING.value


def test_retry_claimed_before_its_confirmation(pair) -> None:
    """A worker claims the retried workflow between the lost reply and the confirmation: still confirmed."""
    direct, via, proxy = pair
    claim = _claimed(via)
    via.finish_workflow("wf", Status.FAILED, worker_id="w", token=claim.token, error="bad", now=T0 + 1)
    drop = via._drop_connection
    taken: list[Claim | None] = []

    def drop_then_claim() -> None:
        drop()
        taken.append(direct.claim_next("w2", [NAME], ttl=TTL, now=T0 + 3))

    via._drop_connection = drop_then_claim  # type: ignore[method-assign]
    record = _lost_reply(proxy, lambda: via.retry("wf", now=T0 + 2))
    assert taken and taken[0] is not None  # the claim did happen first
    assert record.run_at == T0 + 2
    assert direct.get_workflow("wf").status == Status.RUNNING.value
