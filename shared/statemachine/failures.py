"""The failures the fleet itself names: one vocabulary for scripts, metrics, spans, history,
``job show`` and the docs. A handler's own exception is recorded under its class name and
is not one of these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """What sort of failure it is."""

    TIMEOUT = "timeout"  # a time limit of the step passed
    LOSS = "loss"  # the agent running it was lost (died, hung or partitioned)
    BAD_INPUT = "bad_input"  # the step cannot run as sent: retrying cannot help
    CANCELLED = "cancelled"  # someone asked the job to stop
    REQUESTED = "requested"  # the handler asked to be tried again later


@dataclass(frozen=True, slots=True)
class _Traits:
    label: str  # the metric label (snake case, low cardinality)
    kind: FailureKind
    retryable: bool  # whether the step may be tried again (while its policy allows)


class Failure(StrEnum):
    """A failure type: the value is the ``type`` recorded in the step's error."""

    SCHEDULE_TO_START_TIMEOUT = "ScheduleToStartTimeout"
    START_TO_CLOSE_TIMEOUT = "StartToCloseTimeout"
    SCHEDULE_TO_CLOSE_TIMEOUT = "ScheduleToCloseTimeout"
    HEARTBEAT_TIMEOUT = "HeartbeatTimeout"
    LEASE_EXPIRED = "LeaseExpired"
    CANCELLED = "Cancelled"
    UNKNOWN_TASK = "UnknownTask"
    INVALID_PAYLOAD = "InvalidPayload"
    UNENCODABLE_RESULT = "UnencodableResult"
    RESULT_TOO_LARGE = "ResultTooLarge"
    INVALID_SUBMISSION = "InvalidSubmission"
    RETRY_AFTER = "RetryAfter"

    @property
    def label(self) -> str:
        return _TRAITS[self].label

    @property
    def kind(self) -> FailureKind:
        return _TRAITS[self].kind

    @property
    def retryable(self) -> bool:
        return _TRAITS[self].retryable

    @property
    def is_timeout(self) -> bool:
        return self.kind is FailureKind.TIMEOUT

    @classmethod
    def of(cls, error_type: str) -> Failure | None:
        """The member for a recorded error type; None for a handler's own exception."""
        return _BY_VALUE.get(error_type)


_F, _K = Failure, FailureKind
_TRAITS: dict[Failure, _Traits] = {
    _F.SCHEDULE_TO_START_TIMEOUT: _Traits("schedule_to_start", _K.TIMEOUT, True),
    _F.START_TO_CLOSE_TIMEOUT: _Traits("start_to_close", _K.TIMEOUT, True),
    _F.SCHEDULE_TO_CLOSE_TIMEOUT: _Traits("schedule_to_close", _K.TIMEOUT, False),
    _F.HEARTBEAT_TIMEOUT: _Traits("heartbeat", _K.TIMEOUT, True),
    _F.LEASE_EXPIRED: _Traits("lease_expired", _K.LOSS, True),
    _F.CANCELLED: _Traits("cancelled", _K.CANCELLED, False),
    _F.UNKNOWN_TASK: _Traits("unknown_task", _K.BAD_INPUT, False),
    _F.INVALID_PAYLOAD: _Traits("invalid_payload", _K.BAD_INPUT, False),
    _F.UNENCODABLE_RESULT: _Traits("unencodable_result", _K.BAD_INPUT, False),
    _F.RESULT_TOO_LARGE: _Traits("result_too_large", _K.BAD_INPUT, False),
    _F.INVALID_SUBMISSION: _Traits("invalid_submission", _K.BAD_INPUT, False),
    _F.RETRY_AFTER: _Traits("retry_after", _K.REQUESTED, True),
}
_BY_VALUE = {f.value: f for f in Failure}
