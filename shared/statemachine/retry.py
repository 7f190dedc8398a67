"""A step's attempt budget and backoff, resolved once from its layers of choice.

The state scripts decide from the resolved policy, stored with the step, whether an
outcome is retried and after how long (``_lib.lua``'s ``retry_delay``); nothing else does.
"""

from __future__ import annotations

import msgspec

from sasfleet.shared.messages.submit import RetrySpec


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Up to ``max_attempts`` attempts; the wait after the ``n``-th failed one is
    ``initial_ms * coefficient**(n-1)``, capped at ``max_ms`` and spread by ``jitter`` (a
    fraction of the delay, both ways). Errors whose type is in ``non_retryable`` end the
    step at once."""

    max_attempts: int = 3
    initial_ms: int = 500
    coefficient: float = 2.0
    max_ms: int = 30_000
    jitter: float = 0.0
    non_retryable: list[str] = []


def resolve_policy(
    fleet: RetryPolicy,
    *layers: tuple[int | None, RetrySpec | None],
) -> RetryPolicy:
    """The fleet's policy overlaid by each ``(max_attempts, retry)`` layer in turn (the
    task's defaults, then the step's own choices): a layer sets what it names."""
    changes: dict[str, object] = {}
    for max_attempts, spec in layers:
        if max_attempts:
            changes["max_attempts"] = max_attempts
        if spec is None:
            continue
        if spec.initial_interval_s is not None:
            changes["initial_ms"] = int(spec.initial_interval_s * 1000)
        if spec.backoff_coefficient is not None:
            changes["coefficient"] = spec.backoff_coefficient
        if spec.max_interval_s is not None:
            changes["max_ms"] = int(spec.max_interval_s * 1000)
        if spec.jitter is not None:
            changes["jitter"] = spec.jitter
        if spec.non_retryable_errors is not None:
            changes["non_retryable"] = list(spec.non_retryable_errors)
    return msgspec.structs.replace(fleet, **changes) if changes else fleet
