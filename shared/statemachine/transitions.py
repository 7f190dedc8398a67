"""The tables of legal moves. The state scripts get them (with the statuses) in their
prelude, generated from here, and check every change against them."""

from __future__ import annotations

from enum import StrEnum

from sasfleet.shared.statemachine.status import JobStatus, StepStatus


class Move(StrEnum):
    """A named state change of a step; the history records it as the event name."""

    DISPATCH = "dispatch"  # a pending step gets attempt 1 (a job's next step, a compensation)
    CLAIM = "claim"  # agent: takes the attempt it was sent
    SUCCEED = "succeed"  # agent: handler returned
    FAIL = "fail"  # agent: handler raised (or the step cannot run)
    RETRY_LATER = "retry_later"  # a failed attempt waits for its backoff
    RETRY = "retry"  # scheduler: the backoff timer fired
    TIMEOUT_FAIL = "timeout_fail"  # a deadline passed: the attempt failed (then as FAIL)
    RELEASE = "release"  # agent shutting down: the attempt goes back to the pool
    CANCEL = "cancel"  # the job is cancelled before the step ran


_S = StepStatus
STEP_MOVES: dict[Move, tuple[frozenset[StepStatus], StepStatus]] = {
    Move.DISPATCH: (frozenset({_S.PENDING}), _S.DISPATCHED),
    Move.CLAIM: (frozenset({_S.DISPATCHED}), _S.RUNNING),
    Move.SUCCEED: (frozenset({_S.RUNNING}), _S.SUCCEEDED),
    Move.FAIL: (frozenset({_S.RUNNING}), _S.FAILED),
    Move.RETRY_LATER: (frozenset({_S.FAILED}), _S.WAITING_RETRY),
    Move.RETRY: (frozenset({_S.WAITING_RETRY}), _S.DISPATCHED),
    Move.TIMEOUT_FAIL: (frozenset({_S.DISPATCHED, _S.RUNNING, _S.WAITING_RETRY}), _S.FAILED),
    Move.RELEASE: (frozenset({_S.RUNNING}), _S.DISPATCHED),
    Move.CANCEL: (frozenset({_S.PENDING, _S.DISPATCHED, _S.WAITING_RETRY}), _S.FAILED),
}


class JobMove(StrEnum):
    """A named state change of a job (the history records it as the event name)."""

    START = "start"
    SUCCEED = "succeed"
    FAIL = "failed"  # a step failed for good and there is nothing to compensate
    COMPENSATE = "compensating"  # a step failed for good (or the job was cancelled)
    COMPENSATED = "compensated"
    ESCALATE = "escalated"  # a compensation could not finish
    CANCEL = "cancelled"


_J = JobStatus
JOB_MOVES: dict[JobMove, tuple[frozenset[JobStatus], JobStatus]] = {
    JobMove.START: (frozenset({_J.PENDING}), _J.RUNNING),
    JobMove.SUCCEED: (frozenset({_J.RUNNING}), _J.SUCCEEDED),
    JobMove.FAIL: (frozenset({_J.RUNNING}), _J.FAILED),
    JobMove.COMPENSATE: (frozenset({_J.RUNNING}), _J.COMPENSATING),
    JobMove.COMPENSATED: (frozenset({_J.COMPENSATING}), _J.COMPENSATED),
    JobMove.ESCALATE: (frozenset({_J.COMPENSATING}), _J.ESCALATED),
    JobMove.CANCEL: (frozenset({_J.PENDING, _J.RUNNING, _J.COMPENSATING}), _J.CANCELLED),
}


def step_sources(move: Move) -> frozenset[StepStatus]:
    """The statuses a step may be in for ``move`` to apply."""
    return STEP_MOVES[move][0]


def job_sources(move: JobMove) -> frozenset[JobStatus]:
    """The statuses a job may be in for ``move`` to apply."""
    return JOB_MOVES[move][0]
