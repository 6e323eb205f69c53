"""The store contract as a table: every public operation of ``Store``.

:data:`CONTRACT` states, for every public operation, what it reads and
writes, its fencing, whether its body is safe to run again after an
ambiguous commit (a dropped connection during ``COMMIT``), and what it raises
besides :class:`~durable_workers.errors.StoreUnavailable` (every operation may
raise that one: the database cannot be reached, is damaged, or stayed locked
past the store's patience). A test checks that the table and the class agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    """One operation of the contract: its effects, fencing, retry safety and errors."""

    name: str
    writes: str
    fencing: str = "none"
    #: The body may run again after an ambiguous commit without a second effect.
    retry_safe: bool = True
    raises: str = ""
    #: For a body that is not retry-safe: what shows, after an ambiguous commit, that it committed
    #: (``write(body, confirm=...)``); empty: the ambiguity is a StoreUnavailable.
    confirmed_by: str = ""


_F = "the lease (workflow_id, worker_id, token)"
CONTRACT: tuple[Operation, ...] = (
    Operation("submit", "inserts a PENDING workflows row (and a queues row for a new queue) unless the id exists, "
              "or its queue's dedupe key is held by an unfinished workflow (that one is returned)", raises="-"),
    Operation("submit_many", "inserts PENDING workflows rows, one transaction, for the ids that do not exist",
              raises="what its check raises (ConflictError: nothing inserted), ValueError (an id twice), "
                     "DuplicateWorkflowError (a dedupe key held: nothing inserted)"),
    Operation("register_queues", "upserts queues rows (the app's declared limits)"),
    Operation("list_queues", "reads queues"),
    Operation("queue_depths", "reads unfinished workflows counts per queue and status"),
    Operation("queue_load", "reads the RUNNING count of a queue and of one concurrency key"),
    Operation("rate_window_opens", "reads a queue's first starts in its rate window"),
    Operation("add_schedule", "inserts a schedules row unless its name exists (replace: rewrites its definition)"),
    Operation("get_schedule", "reads one schedules row"),
    Operation("list_schedules", "reads schedules"),
    Operation("due_schedules", "reads unpaused schedules whose next slot is due"),
    Operation("advance_schedule", "moves a schedule's next_at on", fencing="compare-and-set on its next_at"),
    Operation("pause_schedule", "sets a schedule's paused flag (and next_at on resume)"),
    Operation("remove_schedule", "deletes a schedules row"),
    Operation("hold_role", "inserts or renews a roles row for its holder (a new holder bumps the token)",
              fencing="the role's holder, or its expiry"),
    Operation("release_role", "expires a roles row its holder holds", fencing="the role's holder"),
    Operation("get_role", "reads one roles row"),
    Operation("get_workflow", "reads one workflows row", raises="WorkflowNotFound"),
    Operation("trace_context", "reads one workflows row's trace_context (None: none stored, or no such row)"),
    Operation("list_workflows", "reads workflows, newest first"),
    Operation("count_by_status", "reads workflows counts"),
    Operation("pending_names", "reads PENDING counts by name"),
    Operation("workflow_page", "reads a keyset page of workflows (filtered, newest first, one index scan per status)",
              raises="ValueError (limit < 1)"),
    Operation("finished_per_minute", "reads COMPLETED and FAILED counts per minute of updated_at",
              raises="ValueError (minutes < 1)"),
    Operation("workflow_messages", "reads a workflow's messages rows"),
    Operation("cancel", "workflow CANCELLED, lease released with token+1, step deadlines cleared; unfinished "
              "descendants likewise; a parent waiting on it due now",
              retry_safe=False, raises="WorkflowNotFound, InvalidStateError",
              confirmed_by="workflow CANCELLED with updated_at = this call's now"),
    Operation("retry", "workflow PENDING again (deadline renewed); the step failure that ended it (failed_step) and "
              "later steps deleted; likewise the children its end cancelled or the failed child that failed it",
              retry_safe=False, raises="WorkflowNotFound, InvalidStateError",
              confirmed_by="workflow run_at = this call's now (claims keep run_at)"),
    Operation("fork", "inserts a PENDING copy of a workflow and copies its finished steps recorded before a step",
              retry_safe=False, raises="WorkflowNotFound, StepNotFound, ConflictError (new_id taken)"),
    Operation("claim_next", "workflow RUNNING with attempts+1 (started_at set on the first), lease upserted with "
              "token+1, or FAILED past max_claims; within its queue's limits (PostgreSQL: counted under the "
              "queues row lock)",
              retry_safe=False, raises="-", confirmed_by="the lease held with the claim's (workflow_id, worker_id, token)"),
    Operation("claim_workflow", "as claim_next, for one given workflow", retry_safe=False,
              raises="WorkflowNotFound, InvalidStateError (another live lease holds it)",
              confirmed_by="the lease held with the claim's (workflow_id, worker_id, token)"),
    Operation("release", "workflow PENDING (attempts-1), lease released, unfinished steps interrupted", _F,
              retry_safe=False, raises="- (False when the lease is not held)",
              confirmed_by="lease free with the token kept, workflow PENDING with updated_at = this call's now"),
    Operation("get_lease", "reads one leases row"),
    Operation("load_steps", "reads a workflow's steps rows"),
    Operation("load_step_table", "reads a workflow's steps rows in start order"),
    Operation("start_step", "inserts or restarts a RUNNING steps row; FAILED marks past max_attempts", _F,
              retry_safe=False, raises="LeaseLost, WorkflowAborted",
              confirmed_by="step RUNNING with (worker_id, token, started_at = now); or, past max_attempts, "
                           "the workflow FAILED by that step at now"),
    Operation("complete_step", "steps row COMPLETED with its output", _F, raises="LeaseLost"),
    Operation("fail_step", "steps row error (FAILED when final; deadline kept for an overrun)", _F, raises="LeaseLost"),
    Operation("note_interruption", "workflows.interruption", _F, raises="LeaseLost"),
    Operation("note_step_timeout", "steps row error and no deadline (supervisor, checked against the lease holder)"),
    Operation("finish_workflow", "workflow COMPLETED, FAILED (with failed_step) or CANCELLED (descendants too), "
              "lease released; a parent waiting on it due now", _F,
              retry_safe=False, raises="LeaseLost",
              confirmed_by="workflow in the given status with updated_at = now and the lease no longer held"),
    Operation("suspend_workflow", "workflow WAITING with wake_at and waiting_for (now if a message on its topic is "
              "there or its child ended; attempts-1), deadline_at, lease released", _F,
              retry_safe=False, raises="LeaseLost (a retried commit finds the lease released)"),
    Operation("send_message", "inserts a messages row unless its key was sent; a workflow WAITING on its topic due now",
              raises="WorkflowNotFound, InvalidStateError (finished workflow)"),
    Operation("consume_message", "the oldest unconsumed messages row of a topic consumed_by_step", _F, raises="LeaseLost"),
    Operation("set_event", "events row upserted (last write wins)", _F, raises="LeaseLost"),
    Operation("get_events", "reads a workflow's events rows"),
    Operation("start_child", "inserts a PENDING workflows row with parent_id unless this parent's child is there",
              "the parent's lease", raises="LeaseLost, ConflictError (the id is another workflow's)"),
    Operation("list_children", "reads workflows rows of a parent"),
    Operation("expire_deadlines", "workflows past deadline_at CANCELLED (as cancel, descendants too); nothing when none"),
    Operation("gc_candidates", "reads collectable workflows (terminal, old, parent ended, no unfinished child)",
              raises="ValueError (a status that is not terminal)"),
    Operation("gc_delete", "deletes the given workflows still collectable, with their steps, leases, messages and "
              "events", raises="ValueError (a status that is not terminal)"),
    Operation("next_wake", "reads the earliest wake_at of WAITING workflows among names"),
    Operation("register_worker", "workers row upserted (host identity, pid, create time, ttl)"),
    Operation("heartbeat", "workers row beat; exactly the given leases renewed", "each lease by (worker_id, token)",
              raises="- (returns the workflow ids not renewed)"),
    Operation("set_worker_state", "workers.state"),
    Operation("expire_worker", "workers.state; its leases (but those kept) expire now, their step deadlines cleared"),
    Operation("list_workers", "reads workers"),
    Operation("get_worker", "reads one workers row"),
    Operation("leases_by_worker", "reads held leases"),
    Operation("timed_steps", "reads RUNNING steps with a deadline whose attempt holds the lease"),
    Operation("overdue_steps", "reads timed steps past their deadline"),
    Operation("interrupt_workers", "their RUNNING steps interrupted, workflows attempts-1, leases expire now",
              retry_safe=False),
    Operation("prune_workers", "deletes old dead/stopped workers rows"),
    Operation("stall_grace", "nothing (this store's memory of lock stalls and outages)"),
    Operation("schema_version", "reads the schema version (PRAGMA user_version, meta.schema_version)"),
    Operation("migrate", "creates or migrates the schema under the schema lock (idempotent: a repeat finds it current)",
              raises="SchemaVersionError (the database is newer), DatabaseError (another application's tables)"),
    Operation("check_identity", "reads meta.db_id (and the file's identity, SQLite)", raises="DatabaseReplacedError"),
    Operation("identity_env", "nothing (environment a child needs to open this very database)"),
    Operation("abandon_replaced_file", "checkpoints an abandoned file's log, closes (never raises)"),
    Operation("close", "nothing (hands this thread's connection back)"),
    Operation("close_idle", "nothing (closes this thread's and the idle pooled connections)"),
    Operation("writable", "nothing (begins and ends an empty write: can the database be written now?)"),
    Operation("lock_patience", "nothing (the seconds a transaction waits for a lock before StoreUnavailable)"),
    Operation("ledger_create", "creates chaos_ledger (chaos experiment only)"),
    Operation("ledger_append", "inserts a chaos_ledger row (deliberately unfenced)", retry_safe=False),
    Operation("ledger_rows", "reads chaos_ledger"),
    Operation("ledger_executions", "reads chaos_ledger counts"),
    Operation("ledger_counts", "reads chaos_ledger counts"),
    Operation("workflows_named", "reads workflows of some names"),
    Operation("steps_of_workflows_named", "reads steps of workflows of some names"),
    Operation("status_counts_by_name", "reads workflows counts"),
    Operation("workflow_ids", "reads workflows ids"),
    Operation("change_watch", "nothing (a LISTEN connection: a hint that work may be runnable; None without one)"),
    Operation("hold_write_lock", "nothing; holds the write lock (chaos lock fault)", retry_safe=False),
)


#: Public names of ``Store`` that are the skeleton or dialect facts, not operations of the contract.
SKELETON = ("compiled", "dialect", "errors", "now", "read", "wal_path", "write")
