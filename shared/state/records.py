"""The named, typed records that cross the Lua boundary: each script's input (``A`` in the
script, JSON in ARGV[1]) and its answers (JSON, decoded here into Structs).

A script's answer is decoded with ``strict=False``: fields a script copies from a Redis hash
arrive as strings ("3") and are read as the numbers they are.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sasfleet.shared.messages.codec import any_decoder, error_decoder
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.events import JobFinished


class _Input(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A script's input. Fields at their default are left out (a JSON null would reach
    Lua as a truthy ``cjson.null``): the script reads them as nil."""


class _JobInput(_Input, frozen=True, kw_only=True, omit_defaults=True):
    job_id: str
    now: int
    by: str
    step_prefix: str
    ttl_s: int = 0


# Inputs, one per script -------------------------------------------------------------------


class CreateJob(_JobInput, frozen=True, kw_only=True, omit_defaults=True):
    steps: list[dict[str, Any]]  # each step's record: the option fields by their names
    # Strings the job hash keeps, "" for none (required: a default would be left out).
    idempotency_key: str
    reply_to: str
    correlation_id: str
    traceparent: str
    notify: str
    start_at: int


class StepInput(_JobInput, frozen=True, kw_only=True, omit_defaults=True):
    """The input of a script acting on one step of a job (advance, recover, fire_timer,
    release, cancel; claim and record add theirs)."""

    step: int
    lease: int = 0
    announce_at: int = 0  # when a recorded outcome left unannounced is due for a supervisor
    rand: float = 0.5  # spreads a retry's backoff by the policy's jitter


class Claim(StepInput, frozen=True, kw_only=True, omit_defaults=True):
    lease_ms: int
    policy: str  # JSON of the resolved RetryPolicy
    digest: str | None = None  # SHA-1 (hex) of the delivered dispatch message


class Record(StepInput, frozen=True, kw_only=True, omit_defaults=True):
    result: str | None = None  # JSON
    error: str | None = None  # JSON of an ErrorInfo
    retry_after_ms: int | None = None
    advance: bool = False


class Settle(_Input, frozen=True, kw_only=True, omit_defaults=True):
    job_id: str
    step: int


class Renew(_Input, frozen=True, kw_only=True, omit_defaults=True):
    member: str
    lease: int
    now: int
    lease_ms: int
    progress: str | None = None  # JSON


class ExpireAgent(_Input, frozen=True, kw_only=True, omit_defaults=True):
    agent: str
    now: int
    before: str
    after: str


class ClaimDue(_Input, frozen=True, kw_only=True, omit_defaults=True):
    member: str
    now: int
    until_ms: int


class FailSubmission(_Input, frozen=True, kw_only=True, omit_defaults=True):
    job_id: str
    now: int
    by: str
    error: str  # JSON of an ErrorInfo
    reply_to: str
    correlation_id: str
    ttl_s: int


# Answers ------------------------------------------------------------------------------------


class Finished(msgspec.Struct, frozen=True, kw_only=True, tag="finished", tag_field="kind"):
    """A job reached a terminal state: now (``ended``), or before this duplicate."""

    status: str
    reply_to: str = ""
    correlation_id: str = ""
    result: str = ""  # JSON or ""
    error: str = ""  # JSON or ""
    ended: bool = False

    def message(self, job_id: str) -> JobFinished:
        """The reply a submitter gets for this job."""
        return JobFinished(
            job_id=job_id,
            status=self.status,
            result=any_decoder.decode(self.result) if self.result else None,
            error=error_decoder.decode(self.error) if self.error else None,
        )


class RetryLater(msgspec.Struct, frozen=True, kw_only=True, tag="retry_later", tag_field="kind"):
    """The failed step waits for its backoff: a timer is due at ``due`` (ms)."""

    due: int


class Stale(msgspec.Struct, frozen=True, kw_only=True, tag="stale", tag_field="kind"):
    """Nothing to do: a duplicate, late or superseded call (``why``), or a result whose
    lease was taken over (the step's ``status`` and current ``lease``)."""

    why: str = ""
    status: str = ""
    lease: int = 0


# What follows an outcome (_lib.lua's follow); DispatchOrder's tag is "dispatch".
FollowUp = DispatchOrder | Finished | RetryLater | Stale


class Recorded(msgspec.Struct, frozen=True, kw_only=True, tag="recorded", tag_field="kind"):
    """The outcome is recorded: announce it to a scheduler."""


class Claimed(msgspec.Struct, frozen=True, kw_only=True, tag="claimed", tag_field="kind"):
    pass


class Rejected(msgspec.Struct, frozen=True, kw_only=True, tag="rejected", tag_field="kind"):
    status: str
    lease: int
    mismatch: bool = False  # the delivered dispatch is not the recorded one


class Created(msgspec.Struct, frozen=True, kw_only=True, tag="created", tag_field="kind"):
    order: DispatchOrder


class Scheduled(msgspec.Struct, frozen=True, kw_only=True, tag="scheduled", tag_field="kind"):
    start_at: int


class Exists(msgspec.Struct, frozen=True, kw_only=True, tag="exists", tag_field="kind"):
    job_status: str
    step_status: str
    order: DispatchOrder | None = None  # its current attempt's dispatch, once it has one


class NotDue(msgspec.Struct, frozen=True, kw_only=True, tag="not_due", tag_field="kind"):
    pass


class Gone(msgspec.Struct, frozen=True, kw_only=True, tag="gone", tag_field="kind"):
    pass


class Recovered(msgspec.Struct, frozen=True, kw_only=True, tag="recovered", tag_field="kind"):
    """A supervisor's recovery: the step failed (``failure`` says why the deadline
    passed), or a recorded outcome was followed up (``repair``); ``next`` follows."""

    next: FollowUp
    failure: str | None = None
    repair: bool = False


class Fired(msgspec.Struct, frozen=True, kw_only=True, tag="fired", tag_field="kind"):
    """A timer fired: a retry, a delayed start, or (``failure``) a retry out of time."""

    next: FollowUp
    failure: str | None = None


class Announce(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded outcome that a scheduler must take up."""

    step: int
    attempt: int
    lease: int


class CancelAnswer(msgspec.Struct, frozen=True, kw_only=True, tag="cancel", tag_field="kind"):
    phase: str  # what the job is doing ("unknown": not recorded yet; a final status...)
    announce: Announce | None = None  # the step stopped before it ran


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    settled: bool


class Renewal(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Literal["renewed", "lost", "cancel_requested"]


class MadeDue(msgspec.Struct, frozen=True, kw_only=True):
    made_due: int


class ClaimedDue(msgspec.Struct, frozen=True, kw_only=True):
    claimed: bool


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    recorded: bool


CreateAnswer = Created | Scheduled | Exists | Finished  # Finished: cancelled on arrival
ClaimAnswer = Claimed | Rejected
RecordAnswer = Recorded | Stale | DispatchOrder | Finished
RecoverAnswer = NotDue | Gone | Recovered
FireAnswer = Gone | Fired
ReleaseAnswer = DispatchOrder | Stale

# The answer of each script, by name.
ANSWERS: dict[str, Any] = {
    "create_job": CreateAnswer,
    "claim": ClaimAnswer,
    "record": RecordAnswer,
    "advance": FollowUp,
    "settle": Settled,
    "recover": RecoverAnswer,
    "fire_timer": FireAnswer,
    "release": ReleaseAnswer,
    "cancel": CancelAnswer,
    "renew": Renewal,
    "expire_agent": MadeDue,
    "claim_due": ClaimedDue,
    "fail_submission": Refused,
}
