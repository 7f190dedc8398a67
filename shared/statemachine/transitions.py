"""The table of legal moves. Each named move is one Redis script (see ``shared/state/lua``)."""

from __future__ import annotations

from enum import StrEnum

from sasfleet.shared.statemachine.status import JobStatus, StepStatus


class Move(StrEnum):
    """A named state change; the history records it as the event name."""

    DISPATCH = "dispatch"  # scheduler: a pending step gets attempt 1
    CLAIM = "claim"  # agent: takes the attempt it was sent
    SUCCEED = "succeed"  # agent: handler returned
    FAIL = "fail"  # agent: handler raised (or the step cannot run)
    RETRY_LATER = "retry_later"  # scheduler: a failed attempt waits for its backoff
    RETRY = "retry"  # scheduler: the backoff timer fired (or schedule-to-close ran out)
    REDISPATCH = "redispatch"  # supervisor: lease expired or never claimed, attempts left
    TIMEOUT_FAIL = "timeout_fail"  # supervisor: deadline passed, no attempts (or time) left
    CANCEL = "cancel"  # client: the job is cancelled before the step ran


_S = StepStatus
STEP_MOVES: dict[Move, tuple[frozenset[StepStatus], StepStatus]] = {
    Move.DISPATCH: (frozenset({_S.PENDING}), _S.DISPATCHED),
    Move.CLAIM: (frozenset({_S.DISPATCHED}), _S.RUNNING),
    Move.SUCCEED: (frozenset({_S.RUNNING}), _S.SUCCEEDED),
    Move.FAIL: (frozenset({_S.RUNNING, _S.DISPATCHED}), _S.FAILED),
    Move.RETRY_LATER: (frozenset({_S.FAILED}), _S.WAITING_RETRY),
    Move.RETRY: (frozenset({_S.WAITING_RETRY}), _S.DISPATCHED),
    Move.REDISPATCH: (frozenset({_S.DISPATCHED, _S.RUNNING}), _S.DISPATCHED),
    Move.TIMEOUT_FAIL: (frozenset({_S.DISPATCHED, _S.RUNNING}), _S.FAILED),
    Move.CANCEL: (frozenset({_S.PENDING, _S.DISPATCHED, _S.WAITING_RETRY}), _S.FAILED),
}

_J = JobStatus
# Job moves by the event that causes them (decided inside advance.lua / fire_timer.lua).
JOB_MOVES: dict[str, tuple[frozenset[JobStatus], JobStatus]] = {
    "start": (frozenset({_J.PENDING}), _J.RUNNING),
    "succeed": (frozenset({_J.RUNNING}), _J.SUCCEEDED),
    "fail": (frozenset({_J.PENDING, _J.RUNNING}), _J.FAILED),  # nothing to compensate
    "compensate": (frozenset({_J.RUNNING}), _J.COMPENSATING),
    "compensated": (frozenset({_J.COMPENSATING}), _J.COMPENSATED),
    "escalate": (frozenset({_J.COMPENSATING}), _J.ESCALATED),  # a compensation failed
    "cancel": (frozenset({_J.PENDING, _J.RUNNING, _J.COMPENSATING}), _J.CANCELLED),
}


def step_sources(move: Move) -> frozenset[StepStatus]:
    """The statuses a step may be in for ``move`` to apply."""
    return STEP_MOVES[move][0]


def job_sources(event: str) -> frozenset[JobStatus]:
    """The statuses a job may be in for ``event`` to apply."""
    return JOB_MOVES[event][0]
