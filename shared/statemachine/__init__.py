"""Pure step and job state logic: statuses, the tables of legal moves, the failure
vocabulary and the retry policy.

No I/O here: the Redis scripts get the statuses, moves and failure names from these
tables in a generated prelude, and a test walks every pair against real Redis to prove the
scripts make exactly these moves.
"""

from sasfleet.shared.statemachine.failures import Failure, FailureKind
from sasfleet.shared.statemachine.retry import RetryPolicy, resolve_policy
from sasfleet.shared.statemachine.status import (
    JOB_TERMINAL,
    STEP_ACTIVE,
    STEP_TERMINAL,
    JobStatus,
    StepStatus,
)
from sasfleet.shared.statemachine.transitions import (
    JOB_MOVES,
    STEP_MOVES,
    JobMove,
    Move,
    job_sources,
    step_sources,
)

__all__ = [
    "JOB_MOVES",
    "JOB_TERMINAL",
    "STEP_ACTIVE",
    "STEP_MOVES",
    "STEP_TERMINAL",
    "Failure",
    "FailureKind",
    "JobMove",
    "JobStatus",
    "Move",
    "RetryPolicy",
    "StepStatus",
    "job_sources",
    "resolve_policy",
    "step_sources",
]
