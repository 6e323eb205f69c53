"""The crash-test kit: prove a workflow survives a SIGKILL at every step boundary.

``assert_crash_safe(name, input)`` (or ``durable verify NAME``) runs the
workflow once cleanly, then once per crash point in a real subprocess killed
there and resumed, and fails when a crashed run ends differently, re-executes
a completed step, or repeats a side effect declared with :func:`effect`
without the idempotency key that would make it harmless. See
:mod:`durable_workers.testing.crashtest`.
"""

from .crashtest import CrashPoint, CrashReport, PointResult, assert_crash_safe, crash_points, verify
from .effects import EFFECTS_ENV, Effect, effect, read_effects
from .runs import VerifyError

__all__ = [
    "EFFECTS_ENV",
    "CrashPoint",
    "CrashReport",
    "Effect",
    "PointResult",
    "VerifyError",
    "assert_crash_safe",
    "crash_points",
    "effect",
    "read_effects",
    "verify",
]
