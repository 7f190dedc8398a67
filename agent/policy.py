"""Which retry policy applies to a step: its own choices, else its task's, else the fleet's."""

from __future__ import annotations

import dataclasses

from sasfleet.agent.registry import TaskDef
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.dispatch import StepDispatch
from sasfleet.shared.messages.submit import RetrySpec
from sasfleet.shared.statemachine import RetryPolicy


def fleet_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        initial_ms=int(settings.retry_initial_s * 1000),
        coefficient=settings.retry_backoff,
        max_ms=int(settings.retry_max_s * 1000),
    )


def _apply(policy: RetryPolicy, spec: RetrySpec | None) -> RetryPolicy:
    if spec is None:
        return policy
    changes: dict[str, object] = {}
    if spec.initial_interval_s is not None:
        changes["initial_ms"] = int(spec.initial_interval_s * 1000)
    if spec.backoff_coefficient is not None:
        changes["coefficient"] = spec.backoff_coefficient
    if spec.max_interval_s is not None:
        changes["max_ms"] = int(spec.max_interval_s * 1000)
    if spec.jitter is not None:
        changes["jitter"] = spec.jitter
    if spec.non_retryable_errors is not None:
        changes["non_retryable"] = frozenset(spec.non_retryable_errors)
    return dataclasses.replace(policy, **changes)  # type: ignore[arg-type]


def step_policy(base: RetryPolicy, task: TaskDef | None, d: StepDispatch) -> RetryPolicy:
    """The policy for one dispatched step."""
    policy = _apply(base, task.retry if task else None)
    policy = _apply(policy, d.retry)
    max_attempts = d.max_attempts or (task.max_attempts if task else None)
    if max_attempts:
        policy = dataclasses.replace(policy, max_attempts=max_attempts)
    return policy
