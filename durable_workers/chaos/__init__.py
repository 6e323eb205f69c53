"""``durable chaos``: a self-checking fault-injection experiment.

The experiment creates a fresh database, submits ``--workflows`` check workflows
(:mod:`durable_workers.checkflows`) plus a few bad-input workflows, starts a real
supervisor with ``--workers`` worker processes, and while they run sends faults
every ``--fault-interval`` seconds (±50 %), chosen among ``--faults``:

``kill``        ``kill -9`` of a random worker of the current fleet.
``stop``        ``SIGSTOP`` of a worker that holds a lease, ``SIGCONT`` after
                ``ttl + 1.5`` s (past its lease: it must come back fenced).
``supervisor``  ``kill -9`` of the supervisor, restarted at once by the
                harness; its workers must drain and exit by themselves.
``lock``        a separate process holds the SQLite write lock
                (``BEGIN IMMEDIATE``) for ``--lock-seconds`` (waited out).
``outage``      the same for ``--outage-seconds``, past the fleet's lock
                patience (``--lock-patience``, passed to the fleet as
                ``DURABLE_LOCK_PATIENCE``): the store is unavailable.
``diskfull``    (opt-in) the database lives on a small tmpfs the run mounts;
                the fault fills it for ``--diskfull-seconds``. Skipped, with
                a note in the table, where the run cannot mount.
``foreign``     a share of check workflows get a step that raises
                ``KeyboardInterrupt`` or ``SystemExit`` on its first execution;
                the workflow catches the ``StepFailedError`` and falls back.
``host``        (with ``--hosts`` 2 or more: that many supervisors, each with
                its own ``--host-id``, on the one database) ``kill -9`` of a
                whole host, its supervisor and all its workers at once; the
                other host takes its work over by TTL, and the killed host is
                restarted after ``--host-down-seconds`` (default 3 x ttl).

When every workflow has ended (or ``--timeout`` passed) the fleet is stopped and
the verdict is computed from the database alone: the workflows table, the steps
table, and the side-effect ledger every check step appends to in its own
transaction, matched against the faults sent (each with its time and target
pid). See docs/reliability.md for what each line means.

Exit status 0 only when: every check workflow COMPLETED; no COMPLETED step was
executed again; every re-execution of a step is explained by a kill or stop of
the worker that ran it, during that step; no write from a fenced worker was
accepted; no ``database is locked`` reached workflow code; every COMPLETED step
holds the value its step returned; no workflow was left RUNNING, FAILED by
infrastructure, or ended with its lease held; every foreign exception was
recorded as its step's failure and the workflow took the branch that record
decides; each bad-input workflow ended in its documented state; and no worker
process outlived the experiment.

Helpers run as separate processes: ``python -m durable_workers.chaos lock``
(the lock holder) and ``python -m durable_workers.chaos submit`` (a
concurrent submitter for the stress tests).

Modules, one role each:

``options``     :class:`ChaosOptions`, :class:`Fault`, the workflows and fault kinds.
``disk``        the small filesystem of the ``diskfull`` fault.
``fleet``       the supervisor process (:class:`Fleet`) and leftover processes.
``faults``      the fault injector (:class:`Injector`).
``experiment``  one run (:class:`Experiment`, :func:`submit_all`).
``executions``  judging each execution of a check step (kept, explained, or a violation).
``outcomes``    how workflows ended: stuck RUNNING, FAILED by infrastructure, foreign exceptions.
``verdict``     :func:`analyse`: the verdict from the database, faults and log.
``table``       :func:`render`: the verdict as a table.
``cli``         the ``durable chaos`` command and the helper processes.
"""

from .cli import chaos, helpers
from .experiment import Experiment, submit_all
from .faults import Injector
from .fleet import Fleet, processes_using
from .options import APP, BAD_INPUT, CHECK_NAMES, DEFAULT_FAULTS, FAULT_KINDS, INJECTED_KINDS, ChaosOptions, Fault
from .table import render
from .verdict import analyse

__all__ = [
    "APP",
    "BAD_INPUT",
    "CHECK_NAMES",
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "INJECTED_KINDS",
    "ChaosOptions",
    "Experiment",
    "Fault",
    "Fleet",
    "Injector",
    "analyse",
    "chaos",
    "helpers",
    "processes_using",
    "render",
    "submit_all",
]
