"""The chaos suite's workload and fault plan: what is submitted, what each job must end as.

Jobs run the ``chaos_step`` / ``chaos_undo`` tasks of ``chaos_tasks``. Every outcome
is decided by the payload, so the expected final state and result of each job is known
before it runs: single-step and three-step jobs that succeed (some steps fail retryably on
their first attempts), single-step jobs that fail, and three-step sagas whose second or
third step fails non-retryably, so the steps before it are compensated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sasfleet.shared.messages.submit import RetrySpec, StepSpec, SubmitJob

# Attempts per step: faults consume attempts too (a killed agent's step is retried), and
# the suite checks outcomes decided by the payload, not by attempts running out.
MAX_ATTEMPTS = 30
RETRY = RetrySpec(initial_interval_s=0.05, backoff_coefficient=2.0, max_interval_s=0.5)

FAULT_KINDS = (
    "agent-kill",
    "agent-stop",
    "scheduler-kill",
    "supervisor-kill",
    "rabbitmq-restart",
    "redis-restart",
    "garbage",
)
# After one fault of each kind, further faults cycle through this (agents die most often).
_MORE_FAULTS = (
    "agent-kill",
    "scheduler-kill",
    "garbage",
    "agent-stop",
    "redis-restart",
    "agent-kill",
    "supervisor-kill",
    "rabbitmq-restart",
)


def chaos_value(n: int, step: int) -> int:
    """What step ``step`` of job ``n`` adds to the running total its results carry (the
    handlers in ``chaos_tasks`` compute results with it, the verdict checks them)."""
    return (n * 7919 + step * 104729) % 1_000_003


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job of the workload and what it must end as."""

    job_id: str
    n: int
    nsteps: int
    fail_at: int | None  # the step that fails non-retryably, if any
    flaky: tuple[int, ...]  # per step: attempts that fail retryably first
    work_s: tuple[float, ...]  # per step: how long its handler works

    @property
    def expected_status(self) -> str:
        if self.fail_at is None:
            return "succeeded"
        return "compensated" if self.fail_at > 0 else "failed"

    def acc(self, step: int) -> int:
        """The result total of ``step`` (it adds its value to the previous step's)."""
        return sum(chaos_value(self.n, i) for i in range(step + 1))

    @property
    def expected_result(self) -> dict[str, int] | None:
        if self.fail_at is not None:
            return None
        last = self.nsteps - 1
        return {"n": self.n, "step": last, "acc": self.acc(last)}

    @property
    def compensated_steps(self) -> list[int]:
        """Forward steps whose compensation must run exactly once (those that succeeded
        before the failing one)."""
        return list(range(self.fail_at)) if self.fail_at else []

    def submission(self, ns: str) -> SubmitJob:
        steps = []
        for i in range(self.nsteps):
            payload: dict[str, Any] = {"ns": ns, "n": self.n, "work_s": self.work_s[i]}
            if self.fail_at == i:
                payload["fail"] = True
            if self.flaky[i]:
                payload["flaky"] = self.flaky[i]
            steps.append(
                StepSpec(
                    task="chaos_step",
                    payload=payload,
                    compensation="chaos_undo",
                    max_attempts=MAX_ATTEMPTS,
                    retry=RETRY,
                )
            )
        return SubmitJob(job_id=self.job_id, steps=steps)


def _work_s(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.60:
        return 0.02
    if roll < 0.88:
        return round(rng.uniform(0.2, 0.6), 2)
    return round(rng.uniform(1.0, 2.5), 2)


def plan_jobs(prefix: str, n: int, seed: int) -> list[PlannedJob]:
    """``n`` jobs: 45% one-step, 5% one-step failing, 38% three-step, 12% three-step sagas
    that fail at step 1 or 2 and compensate; 10% of steps fail once before succeeding."""
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.45:
            nsteps, fail_at = 1, None
        elif roll < 0.50:
            nsteps, fail_at = 1, 0
        elif roll < 0.88:
            nsteps, fail_at = 3, None
        else:
            nsteps, fail_at = 3, rng.choice((1, 2))
        flaky = tuple(1 if rng.random() < 0.10 and fail_at != s else 0 for s in range(nsteps))
        jobs.append(
            PlannedJob(
                job_id=f"{prefix}-j{i:05d}",
                n=i,
                nsteps=nsteps,
                fail_at=fail_at,
                flaky=flaky,
                work_s=tuple(_work_s(rng) for _ in range(nsteps)),
            )
        )
    return jobs


def plan_faults(count: int, seed: int, kinds: tuple[str, ...] = FAULT_KINDS) -> list[str]:
    """``count`` faults: one of each kind first (in a seeded order), then the cycle."""
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    more = [k for k in _MORE_FAULTS if k in kinds] or list(kinds)
    plan = first[:count]
    while len(plan) < count:
        plan.append(more[(len(plan) - len(first)) % len(more)])
    return plan
