"""Pure step and job state logic: statuses, the table of legal moves, retry decisions.

No I/O here: the Redis scripts receive the allowed "from" statuses from this table, and a
test walks every pair against real Redis to prove the scripts accept exactly these moves.
"""

from sasfleet.shared.statemachine.retry import RetryPolicy, backoff_ms
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
    "JobStatus",
    "Move",
    "RetryPolicy",
    "StepStatus",
    "backoff_ms",
    "job_sources",
    "step_sources",
]
