"""The public submit contract: what any client publishes to ``<prefix>.submit``.

Versioned and documented (the README's JSON Schema is generated from these types). New
fields get defaults, field types never change, and unknown fields are refused so that a
typo is an error instead of a silently ignored option.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

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
        description="Job id chosen by the client (else the AMQP message_id, else generated).",
    ),
]
IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="A key seen before returns the existing job instead of creating a new one.",
    ),
]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=100, description="Attempts for the step.")]
TimeoutSeconds = Annotated[
    float,
    msgspec.Meta(gt=0, le=7 * 24 * 3600, description="Start-to-close timeout of one attempt."),
]


class StepSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One step of a job: a call of a named task with a payload."""

    task: TaskName
    payload: Any = None
    pool: PoolName | None = None
    max_attempts: Attempts | None = None
    timeout_s: TimeoutSeconds | None = None

    def __post_init__(self) -> None:
        _full(_NAME, self.task, "task name")
        _full(_POOL, self.pool, "pool name")


class SubmitJob(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="submit",
    tag_field="kind",
):
    """A job submission. Give either ``task`` (a one-step job) or ``steps``.

    The ``kind`` tag is optional on the wire; ``v`` is the schema version.
    """

    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    job_id: JobId | None = None
    idempotency_key: IdempotencyKey | None = None
    task: TaskName | None = None
    payload: Any = None
    pool: PoolName | None = None
    max_attempts: Attempts | None = None
    timeout_s: TimeoutSeconds | None = None
    steps: Annotated[list[StepSpec], msgspec.Meta(min_length=1, max_length=100)] | None = None

    def __post_init__(self) -> None:
        _full(_NAME, self.task, "task name")
        _full(_POOL, self.pool, "pool name")
        _full(_JOB_ID, self.job_id, "job id")

    def step_specs(self) -> list[StepSpec]:
        """The steps, with the one-step shorthand expanded. Raises ValueError when invalid."""
        if self.steps is not None:
            shorthand = (self.task, self.payload, self.pool, self.max_attempts, self.timeout_s)
            if any(v is not None for v in shorthand):
                raise ValueError(
                    "with `steps`, give `task`, `payload`, `pool`, `max_attempts` and "
                    "`timeout_s` on each step, not at the top level"
                )
            return list(self.steps)
        if self.task is None:
            raise ValueError("a job needs `task` or `steps`")
        return [
            StepSpec(
                task=self.task,
                payload=self.payload,
                pool=self.pool,
                max_attempts=self.max_attempts,
                timeout_s=self.timeout_s,
            )
        ]
