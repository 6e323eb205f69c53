"""PostgreSQL-only contract tests: races between connections, first starts, opening errors.

Writers on PostgreSQL run concurrently (SQLite serialises them), so the
protocols of ``backends/postgres.py`` are tested with two connections: one
holds a transaction open at a chosen point, the other runs the competing
operation in a thread, and the test waits, by bounded polling of
``pg_blocking_pids``, until the second is blocked by the first before it lets
the first commit. A lock wait never ends by itself, so no timing is involved.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import pytest

import tests.apps.backend_flows  # noqa: F401  (registers backend_other_side)
from durable_workers import ConfigError, DatabaseError, InvalidStateError, LeaseLost, StoreUnavailable
from durable_workers.backends import SCHEMA_VERSION, Store, open_store
from durable_workers.errors import DatabaseReplacedError
from durable_workers.records import Claim, Status, StepStatus
from tests.conftest import run_cli
from tests.contract.pg_support import WAIT_S, CommitReplyDropper, Held, Racer, backend_pid, blocked_by, sql
from tests.integration.fleet_support import wait_for
from tests.pg_cluster import free_port, with_database

NAME = "backend_other_side"
TTL = 30.0
T0 = 1000.0
LATER = T0 + TTL + 1  # the first lease has expired by then


@pytest.fixture
def stores(pg_url: str) -> Iterator[Callable[[], Store]]:
    """Stores on one database (each its own pool), closed after the test."""
    opened: list[Store] = []

    def new() -> Store:
        opened.append(open_store(pg_url))
        return opened[-1]

    yield new
    for store in opened:
        store.close_idle()


def _claimed(store: Store, worker_id: str, now: float) -> Claim:
    claim = store.claim_next(worker_id, [NAME], ttl=TTL, now=now)
    assert claim is not None
    return claim


def _start(store: Store, worker_id: str, token: int) -> None:
    store.start_step("wf", "s#1", name="s", scope="", position=0, worker_id=worker_id, token=token,
                     max_attempts=3, new=True)  # fmt: skip


def test_a_claim_waits_for_the_stale_holders_fenced_write_and_then_sees_it(pg_url: str, stores) -> None:
    old, new = stores(), stores()
    old.submit("wf", NAME, "{}", now=T0)
    first = _claimed(old, "w1", T0)
    _start(old, "w1", first.token)
    # The old holder's step write is in flight (its transaction is open) when its lease has expired.
    holder = Held(old, lambda: old.complete_step("wf", "s#1", '"stale"', worker_id="w1", token=first.token))
    try:
        # A claim never waits for a locked lease: it skips it.
        assert new.claim_next("w2", [NAME], ttl=TTL, now=LATER) is None
        # An explicit claim waits for the lock, then takes the lease with a new token.
        racer = Racer(new, lambda: new.claim_workflow("wf", "w2", ttl=TTL, now=LATER))
        wait_for(lambda: holder.pid in blocked_by(pg_url, racer.pid), WAIT_S, "the claim to wait for the fenced write")
    finally:
        holder.release()
    racer.join()
    assert racer.error is None
    claim: Claim = racer.result
    assert claim.token == first.token + 1
    assert [(s.step_key, s.status, s.output) for s in claim.steps] == [("s#1", StepStatus.COMPLETED.value, '"stale"')]


def test_a_stale_holders_fenced_write_waits_for_a_claim_and_is_then_rejected(pg_url: str, stores) -> None:
    old, new = stores(), stores()
    old.submit("wf", NAME, "{}", now=T0)
    first = _claimed(old, "w1", T0)
    _start(old, "w1", first.token)
    holder = Held(new, lambda: _claimed(new, "w2", LATER))  # the new claim, not committed yet
    try:
        assert holder.result.token == first.token + 1
        racer = Racer(old, lambda: old.complete_step("wf", "s#1", '"stale"', worker_id="w1", token=first.token))
        wait_for(lambda: holder.pid in blocked_by(pg_url, racer.pid), WAIT_S, "the fenced write to wait for the claim")
    finally:
        holder.release()
    racer.join()
    assert isinstance(racer.error, LeaseLost)
    step = new.load_steps("wf")[0]
    assert (step.status, step.output) == (StepStatus.RUNNING.value, None)
    with pytest.raises(LeaseLost):
        old.finish_workflow("wf", Status.COMPLETED, result_json="1", worker_id="w1", token=first.token)


def test_a_stale_holders_new_step_insert_waits_for_a_claim_and_is_then_rejected(pg_url: str, stores) -> None:
    old, new = stores(), stores()
    old.submit("wf", NAME, "{}", now=T0)
    first = _claimed(old, "w1", T0)
    holder = Held(new, lambda: _claimed(new, "w2", LATER))  # the new claim, not committed yet
    try:
        racer = Racer(old, lambda: _start(old, "w1", first.token))
        wait_for(lambda: holder.pid in blocked_by(pg_url, racer.pid), WAIT_S, "the fenced insert to wait for the claim")
    finally:
        holder.release()
    racer.join()
    assert isinstance(racer.error, LeaseLost)
    assert new.load_steps("wf") == []


def test_two_stores_claiming_at_once_never_take_the_same_workflow(stores) -> None:
    a, b = stores(), stores()
    for i in range(2):
        a.submit(f"wf{i}", NAME, "{}", now=T0 + i)
    held = Held(a, lambda: _claimed(a, "wa", T0 + 10))  # wf0, its row still locked by the open claim
    try:
        other = _claimed(b, "wb", T0 + 10)  # does not wait: skips the locked row
        assert other.workflow.id != held.result.workflow.id
        assert b.claim_next("wb", [NAME], ttl=TTL, now=T0 + 10) is None
    finally:
        held.release()
    assert {held.result.workflow.id, other.workflow.id} == {"wf0", "wf1"}


def test_claims_from_several_threads_and_stores_take_each_workflow_once(stores) -> None:
    count, threads = 40, 4
    first = stores()
    for i in range(count):
        first.submit(f"wf{i:02d}", NAME, "{}", now=T0)
    taken: list[list[str]] = [[] for _ in range(threads)]

    def claim_all(store: Store, into: list[str]) -> None:
        try:
            while (claim := store.claim_next(f"w{id(into)}", [NAME], ttl=TTL, now=T0 + 1)) is not None:
                into.append(claim.workflow.id)
        finally:
            store.close()

    workers = [threading.Thread(target=claim_all, args=(stores(), taken[i])) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_S * 2)
    every = [workflow_id for ids in taken for workflow_id in ids]
    assert sorted(every) == [f"wf{i:02d}" for i in range(count)]  # each exactly once
    assert {lease.token for leases in first.leases_by_worker().values() for lease in leases} == {1}


@pytest.mark.timeout(180)
def test_concurrent_first_starts_on_an_empty_database_do_not_race(pg_databases) -> None:
    starters = 6
    urls = [pg_databases() for _ in range(3)]
    for url in urls:
        barrier = threading.Barrier(starters)
        opened: list[Store] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                barrier.wait(WAIT_S)
                opened.append(open_store(url))
            except BaseException as exc:
                errors.append(exc)

        racers = [threading.Thread(target=start) for _ in range(starters)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(WAIT_S * 2)
        assert errors == []
        assert len({store._db_id for store in opened}) == 1  # one creator; the rest found its schema
        assert sql(url, "SELECT key, value FROM meta WHERE key = 'schema_version'") == [("schema_version", str(SCHEMA_VERSION))]
        for store in opened:
            store.close_idle()


def test_times_are_stored_as_double_precision(stores) -> None:
    store = stores()
    run_at = 1764612345.123456
    store.submit("wf", NAME, "{}", run_at=run_at, now=run_at)
    assert store.get_workflow("wf").run_at == run_at
    assert store.now() > run_at  # the database clock, in epoch seconds (today is after 2025-12-01)


def test_a_replaced_database_is_detected(pg_url: str, stores) -> None:
    store = stores()
    store.check_identity()
    sql(pg_url, "UPDATE meta SET value = 'another' WHERE key = 'db_id'")
    with pytest.raises(DatabaseReplacedError):
        store.check_identity()


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, f"not one line: {text!r}"
    return text


def test_opening_errors_are_one_line(pg_server) -> None:
    admin = pg_server.admin_url
    with pytest.raises(ConfigError, match="bad port"):
        open_store(admin.replace(admin.split("@")[1].split("/")[0], "127.0.0.1:notaport"))
    with pytest.raises(DatabaseError, match="refused") as refused:
        open_store(f"postgresql://durable@127.0.0.1:{free_port()}/durable")
    _one_line(refused.value)
    with pytest.raises(DatabaseError, match='database "no_such_db" does not exist') as missing:
        open_store(with_database(admin, "no_such_db"))
    _one_line(missing.value)
    with pytest.raises(DatabaseError, match='role "no_such_role" does not exist') as role:
        open_store(admin.replace("durable@", "no_such_role@"))
    _one_line(role.value)


@pytest.mark.integration
def test_the_cli_reports_a_missing_database_in_one_line_without_a_traceback(pg_server, tmp_path) -> None:
    url = with_database(pg_server.admin_url, "no_such_db")
    done = run_cli("status", db=url, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'database "no_such_db" does not exist' in lines[0], done.stderr


def test_a_terminated_connection_is_replaced_and_the_operation_runs(pg_url: str, pg_server, stores) -> None:
    store = stores()
    store.submit("wf", NAME, "{}", now=T0)
    pid = backend_pid(store)
    assert sql(pg_server.admin_url, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    wait_for(lambda: not sql(pg_server.admin_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
             WAIT_S, "the backend to end")  # fmt: skip
    assert store.get_workflow("wf").status == Status.PENDING.value  # a read on a new connection
    pid = backend_pid(store)
    sql(pg_server.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: not sql(pg_server.admin_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
             WAIT_S, "the backend to end")  # fmt: skip
    claim = store.claim_next("w", [NAME], ttl=TTL, now=T0)  # a write, run again on a new connection
    assert claim is not None and claim.token == 1


def test_a_database_that_goes_away_mid_run_is_store_unavailable(pg_url: str, pg_server, stores) -> None:
    store = stores()
    store.submit("wf", NAME, "{}", now=T0)
    pg_server.drop_database(pg_url)  # terminates the store's connections too
    with pytest.raises(StoreUnavailable, match='database "[^"]+" does not exist') as gone:
        store.submit("wf2", NAME, "{}")
    _one_line(gone.value)
    with pytest.raises(StoreUnavailable):
        store.get_workflow("wf")


def test_a_cancel_waits_for_the_owners_in_flight_finish_and_then_refuses(pg_url: str, stores) -> None:
    owner, admin = stores(), stores()
    owner.submit("wf", NAME, "{}", now=T0)
    claim = _claimed(owner, "w1", T0)
    holder = Held(owner, lambda: owner.finish_workflow("wf", Status.COMPLETED, result_json="1", worker_id="w1",
                                                       token=claim.token))  # fmt: skip
    try:
        racer = Racer(admin, lambda: admin.cancel("wf"))
        wait_for(lambda: holder.pid in blocked_by(pg_url, racer.pid), WAIT_S, "the cancel to wait for the finish")
    finally:
        holder.release()
    racer.join()
    assert isinstance(racer.error, InvalidStateError)  # it read the committed end, not the RUNNING row
    assert admin.get_workflow("wf").status == Status.COMPLETED.value


def test_concurrent_duplicate_submits_create_one_row(pg_url: str, stores) -> None:
    first, second = stores(), stores()
    holder = Held(first, lambda: first.submit("wf", NAME, '{"by": "first"}'))
    try:
        racer = Racer(second, lambda: second.submit("wf", NAME, '{"by": "second"}'))
        wait_for(lambda: holder.pid in blocked_by(pg_url, racer.pid), WAIT_S, "the second submit to wait")
    finally:
        holder.release()
    racer.join()
    assert racer.error is None
    record, created = racer.result
    assert (created, record.input) == (False, {"by": "first"})
    assert holder.result[1] is True and [r.id for r in second.list_workflows()] == ["wf"]


def test_submit_release_retry_and_expiry_wake_a_listening_worker_at_commit(stores) -> None:
    store, listener = stores(), stores()
    watch = listener.change_watch([NAME])
    try:
        assert watch.changed() is False
        holder = Held(store, lambda: store.submit("wf", NAME, "{}", now=T0))
        try:
            assert watch.changed() is False  # NOTIFY is delivered at commit, not before
        finally:
            holder.release()
        wait_for(watch.changed, WAIT_S, "the submit's notification")
        claim = _claimed(store, "w", T0)
        assert store.release("wf", "w", claim.token, reason="drain") is True
        wait_for(watch.changed, WAIT_S, "the release's notification")
        store.cancel("wf")
        store.retry("wf")
        wait_for(watch.changed, WAIT_S, "the retry's notification")
        again = store.claim_next("w", [NAME], ttl=TTL)  # retry made it due now, on the database clock
        assert again is not None and again.workflow.id == "wf"
        assert store.expire_worker("w") == ["wf"]
        wait_for(watch.changed, WAIT_S, "the expired lease's notification")
    finally:
        watch.close()


def test_the_written_out_schema_has_the_models_columns_in_order(pg_url: str, stores) -> None:
    store = stores()
    store.ledger_create()
    m = store.m
    for model in (*m.engine_tables, m.Ledger):
        table = model._meta.table_name
        columns = sql(pg_url, "SELECT column_name, data_type FROM information_schema.columns"
                               " WHERE table_name = %s ORDER BY ordinal_position", (table,))  # fmt: skip
        assert [name for name, _ in columns] == [f.column_name for f in model._meta.sorted_fields], table
        floats = {f.column_name for f in model._meta.sorted_fields if f.field_type == "FLOAT"}
        assert {name for name, kind in columns if name in floats} == floats
        assert all(kind == "double precision" for name, kind in columns if name in floats), table


def test_an_ambiguous_commit_of_a_claim_is_confirmed_not_claimed_twice(pg_url: str, stores) -> None:
    direct = stores()
    direct.submit("wf", NAME, "{}", now=T0)
    proxy = CommitReplyDropper(pg_url)
    via = open_store(proxy.url)
    try:
        proxy.arm()
        claim = via.claim_next("w", [NAME], ttl=TTL, now=T0)
        assert proxy.dropped == 1
        assert claim is not None and (claim.workflow.id, claim.token) == ("wf", 1)
        assert direct.get_workflow("wf").attempts == 1  # the committed claim was found, not taken again
        _start(via, "w", claim.token)
        proxy.arm(b'UPDATE "steps"')  # sent in autocommit: the statement is its own commit
        via.complete_step("wf", "s#1", '"out"', worker_id="w", token=claim.token)  # safe: simply run again
        assert proxy.dropped == 2
        assert direct.load_steps("wf")[0].status == StepStatus.COMPLETED.value
    finally:
        via.close_idle()
        proxy.close()


def test_the_chaos_lock_fault_makes_writers_wait_and_readers_not(pg_url: str, stores) -> None:
    locker, writer = stores(), stores()
    writer.submit("before", NAME, "{}")
    locked, pids = threading.Event(), []

    def on_locked(_: float) -> None:
        pids.append(backend_pid(locker))
        locked.set()

    holder = threading.Thread(target=lambda: (locker.hold_write_lock(3.0, on_locked), locker.close()))
    holder.start()
    try:
        assert locked.wait(WAIT_S)
        assert [r.id for r in writer.list_workflows()] == ["before"]  # a reader does not wait
        racer = Racer(writer, lambda: writer.submit("during", NAME, "{}"))
        wait_for(lambda: pids[0] in blocked_by(pg_url, racer.pid), WAIT_S, "the writer to wait for the lock")
    finally:
        holder.join(WAIT_S)
    racer.join()
    assert racer.error is None and racer.result[1] is True  # it landed once the lock was gone


def test_listen_off_gives_idle_workers_no_watch_and_a_bad_value_is_one_line(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    quiet = open_store(f"{pg_url}{sep}listen=off")
    try:
        assert quiet.change_watch([NAME]) is None
    finally:
        quiet.close_idle()
    loud = open_store(pg_url, listen=True)
    watch = loud.change_watch([NAME])
    try:
        assert watch is not None
    finally:
        watch.close()
        loud.close_idle()
    with pytest.raises(ConfigError, match="listen must be on or off") as bad:
        open_store(f"{pg_url}{sep}listen=maybe")
    _one_line(bad.value)
