"""The public submit contract: what any client publishes to ``<prefix>.submit``.

Versioned and documented (docs/submit-message.md's JSON Schema is generated from these types). New
fields get defaults, field types never change, and unknown fields are refused so that a
typo is an error instead of a silently ignored option.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1

# msgspec checks `pattern` with re.search, where `$` also matches before a final newline;
# these full matches close that gap (JSON Schema's ECMA regexes have no `\Z`).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_POOL = re.compile(r"[A-Za-z0-9_.-]+")
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]+")


def _full(pattern: re.Pattern[str], value: str | None, what: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")


TaskName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$",
        description="Name of a task registered by the agents of the pool.",
    ),
]
PoolName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Agent pool that runs the step (default: the fleet's default pool).",
    ),
]
JobId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description=(
            "Job id chosen by the client (else derived from the idempotency_key, else the AMQP "
            "message_id, else generated)."
        ),
    ),
]
IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description=(
            "Without a job_id, the job's id is derived from this key, so a key seen before "
            "returns the existing job instead of creating a new one."
        ),
    ),
]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=100, description="Attempts for the step.")]
_WEEK = 7 * 24 * 3600
TimeoutSeconds = Annotated[
    float, msgspec.Meta(gt=0, le=_WEEK, description="Start-to-close timeout of one attempt.")
]
ScheduleToStart = Annotated[
    float,
    msgspec.Meta(gt=0, le=_WEEK, description="How long a dispatch may wait for an agent."),
]
ScheduleToClose = Annotated[
    float,
    msgspec.Meta(gt=0, le=_WEEK, description="Time limit of the step across all attempts."),
]
HeartbeatTimeout = Annotated[
    float,
    msgspec.Meta(
        gt=0, le=_WEEK, description="Longest silence between a handler's ctx.heartbeat() calls."
    ),
]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=_WEEK)]


class RetrySpec(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Backoff between attempts: ``initial_interval_s * backoff_coefficient**(n-1)``, capped
    at ``max_interval_s``, spread by ``jitter`` (0..1, a fraction of the delay). Errors whose
    type name is listed in ``non_retryable_errors`` end the step at once."""

    initial_interval_s: Seconds | None = None
    backoff_coefficient: Annotated[float, msgspec.Meta(ge=1, le=100)] | None = None
    max_interval_s: Seconds | None = None
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    non_retryable_errors: Annotated[list[str], msgspec.Meta(max_length=50)] | None = None


# omit_defaults: an encoded job carries only the fields it sets (a batch stays small).
class StepOptions(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """How a step is run: pool, attempts, retry policy, timeouts and priority (all
    optional). A ``high`` priority step goes to its pool's high-priority queue, whose
    deliveries agents serve before normal ones."""

    pool: PoolName | None = None
    max_attempts: Attempts | None = None
    retry: RetrySpec | None = None
    timeout_s: TimeoutSeconds | None = None
    schedule_to_start_s: ScheduleToStart | None = None
    schedule_to_close_s: ScheduleToClose | None = None
    heartbeat_timeout_s: HeartbeatTimeout | None = None
    priority: Literal["normal", "high"] | None = None


class StepSpec(
    StepOptions, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One step of a job: a call of a named task with a payload, and optionally the task
    that undoes it (``compensation``) when a later step fails or the job is cancelled."""

    task: TaskName
    payload: Any = None
    compensation: TaskName | None = None

    def __post_init__(self) -> None:
        _full(_NAME, self.task, "task name")
        _full(_NAME, self.compensation, "compensation task name")
        _full(_POOL, self.pool, "pool name")


class SubmitJob(
    StepOptions,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag="submit",
    tag_field="kind",
):
    """A job submission. Give either ``task`` (a one-step job, with the step options at the
    top level) or ``steps``. ``delay_s`` or ``start_at`` hold the start back.

    The ``kind`` tag is optional on the wire; ``v`` is the schema version.
    """

    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    job_id: JobId | None = None
    idempotency_key: IdempotencyKey | None = None
    task: TaskName | None = None
    payload: Any = None
    steps: Annotated[list[StepSpec], msgspec.Meta(min_length=1, max_length=100)] | None = None
    delay_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 24 * 3600)] | None = None
    start_at: (
        Annotated[
            datetime, msgspec.Meta(tz=True, description="Start no earlier than this (RFC 3339).")
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        _full(_NAME, self.task, "task name")
        _full(_POOL, self.pool, "pool name")
        _full(_JOB_ID, self.job_id, "job id")

    def step_specs(self) -> list[StepSpec]:
        """The steps, with the one-step shorthand expanded. Raises ValueError when invalid."""
        options = {f: getattr(self, f) for f in StepOptions.__struct_fields__}
        if self.delay_s is not None and self.start_at is not None:
            raise ValueError("give `delay_s` or `start_at`, not both")
        if self.steps is not None:
            given = [f for f, v in options.items() if v is not None]
            if self.task is not None or self.payload is not None or given:
                raise ValueError(
                    "with `steps`, give `task`, `payload` and step options "
                    f"({', '.join(given or ['pool', 'max_attempts', '...'])}) on each step, "
                    "not at the top level"
                )
            return list(self.steps)
        if self.task is None:
            raise ValueError("a job needs `task` or `steps`")
        return [StepSpec(task=self.task, payload=self.payload, **options)]

    def start_delay_ms(self, now_ms: int) -> int:
        """How long after ``now_ms`` the job may start (0: at once)."""
        if self.delay_s is not None:
            return int(self.delay_s * 1000)
        if self.start_at is not None:
            return max(0, int(self.start_at.timestamp() * 1000) - now_ms)
        return 0


MAX_BATCH_JOBS = 1000


class SubmitBatch(msgspec.Struct, frozen=True, kw_only=True, tag="submit_batch", tag_field="kind"):
    """Many jobs in one message (``"kind": "submit_batch"`` is required): one publish, one
    confirm and one delivery for all of them. Each job is accepted or refused on its own;
    give each a ``job_id`` (or an ``idempotency_key``) so that a redelivered batch creates
    no job twice — without one, a job's id is the message's ``message_id`` plus ``.<index>``.
    Replies, when ``reply_to`` is set, come per job, with the job id as correlation id."""

    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    jobs: Annotated[list[SubmitJob], msgspec.Meta(min_length=1, max_length=MAX_BATCH_JOBS)]


class BatchFrame(msgspec.Struct, frozen=True, kw_only=True, tag="submit_batch", tag_field="kind"):
    """A :class:`SubmitBatch` as the scheduler reads it: the frame first, then each job on
    its own, so that one invalid job is refused alone instead of dropping the batch."""

    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    jobs: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH_JOBS)]


class MessageKind(msgspec.Struct):
    """Only the ``kind`` of a submit-queue message (every other field is skipped)."""

    kind: str = "submit"
