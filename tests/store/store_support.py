"""What the store tests share: the state scripts on a real Redis (or Redis Cluster) under a
prefix of their own, with time under the test's control (ManualClock): no services, no
sleeps; and the saga harness that drives a job through them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from uuid import uuid4

import msgspec
import redis.asyncio as aioredis
from redis_cluster_support import RedisTarget

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.codec import any_decoder, dispatch_decoder
from sasfleet.shared.messages.dispatch import DispatchOrder, StepDispatch
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.messages.submit import StepOptions, StepSpec
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import Announce, FollowUp, RecordAnswer, Recorded
from sasfleet.shared.state.store import (
    CreateResult,
    NewJob,
    StateStore,
    StoreTimings,
    step_record,
)
from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.shared.statemachine import RetryPolicy

LEASE_MS, ANNOUNCE_MS, TTL_S = 2_000, 30_000, 600
TIMINGS = StoreTimings(lease_ms=LEASE_MS, announce_after_ms=ANNOUNCE_MS, ttl_s=TTL_S)
# The fleet's step defaults (seconds, as a submission gives them) and its retry policy.
DISPATCH_S, TIMEOUT_S = 5, 60
DISPATCH_MS, TIMEOUT_MS = 1000 * DISPATCH_S, 1000 * TIMEOUT_S
DEFAULTS = StepOptions(pool="default", timeout_s=TIMEOUT_S, schedule_to_start_s=DISPATCH_S)
FLEET = RetryPolicy(max_attempts=3)
FIRST_BACKOFF_MS = FLEET.initial_ms  # the wait after a first failed attempt
BOOM = ErrorInfo(type="RuntimeError", message="boom", retryable=True)
DECLINED = ErrorInfo(type="PaymentDeclined", message="card declined", retryable=False)
STUCK = ErrorInfo(type="RefundRejected", message="the bank said no", retryable=False)
# Events that hand out a new lease (a fencing token): it must only grow within a job.
LEASING_EVENTS = ("dispatch", "retry", "release")


def step(i: int, compensation: str = "", **options: Any) -> dict[str, Any]:
    """Forward step ``i``'s record: task ``task<i>``, payload ``{"i": i}``, the fleet's
    defaults for the options (in seconds, by their submit names) it does not set."""
    spec = StepSpec(task=f"task{i}", payload={"i": i}, compensation=compensation or None, **options)
    return step_record(spec, DEFAULTS, FLEET)


def saga_steps(*compensations: str) -> list[dict[str, Any]]:
    return [step(i, c) for i, c in enumerate(compensations)]


def of(history: list[HistoryEntry], event: str) -> list[HistoryEntry]:
    return [h for h in history if h.event == event]


def compensation_dispatches(view: JobView) -> list[HistoryEntry]:
    """The first dispatch of each compensation (a step past the forward ones)."""
    forward = len([s for s in view.steps if s.compensates is None])
    return [h for h in of(view.history, "dispatch") if (h.step or 0) >= forward]


def dispatched(order: DispatchOrder) -> StepDispatch:
    """The StepDispatch message an order carries."""
    return dispatch_decoder.decode(order.message)


def payload(order: DispatchOrder) -> Any:
    return any_decoder.decode(dispatched(order).payload)


def again(order: DispatchOrder) -> DispatchOrder:
    """The same order, handed out again."""
    return msgspec.structs.replace(order, again=True)


def repeated(answer: Any) -> Any:
    """A duplicate's answer: the same end, which this call did not make."""
    return msgspec.structs.replace(answer, ended=False)


H = TypeVar("H")


@contextlib.asynccontextmanager
async def scripts_on(
    target: RedisTarget, harness: Callable[[Any, str, ManualClock, StateStore, JobReader], H]
) -> AsyncIterator[H]:
    """``harness(redis, prefix, clock, store, reader)`` on ``target`` under a fresh prefix;
    the prefix's keys are deleted afterwards. Fails, never skips, when Redis is missing."""
    redis = target.connect()
    await redis.ping()
    prefix, clock = f"t-{uuid4().hex[:8]}", ManualClock()
    try:
        yield harness(
            redis,
            prefix,
            clock,
            StateStore(redis, prefix, clock, TIMINGS),
            JobReader(redis, prefix),
        )
    finally:
        await delete_keys(redis, prefix)
        await redis.aclose()


async def delete_keys(redis: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (in pipelines: a test may leave thousands)."""
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1_000)]
    for i in range(0, len(keys), 1_000):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[i : i + 1_000]:
                pipe.delete(key)
            await pipe.execute()


@dataclass
class Saga:
    """One test's store under its own prefix, plus short-hands for the agent's and the
    services' calls (agent ``agent-a``, scheduler ``scheduler-1``, supervisor
    ``supervisor-1``)."""

    redis: aioredis.Redis
    prefix: str
    clock: ManualClock
    store: StateStore
    reader: JobReader

    def other_store(self, redis: aioredis.Redis) -> StateStore:
        """A second service instance: its own connection, the same prefix and clock."""
        return StateStore(redis, self.prefix, self.clock, TIMINGS)

    async def create(
        self, steps: list[dict[str, Any]], job_id: str = "j1", **job: Any
    ) -> CreateResult:
        return await self.store.create_job(NewJob(job_id, steps, **job), "scheduler-1")

    async def step(self, index: int, job_id: str = "j1") -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.store.keys.step(job_id, index)))

    async def lease(self, index: int, job_id: str = "j1") -> int:
        return int(await self.redis.hget(self.store.keys.step(job_id, index), "lease") or 0)

    async def job_status(self, job_id: str = "j1") -> str | None:
        return cast(str | None, await self.redis.hget(self.store.keys.job(job_id), "status"))

    async def view(self, job_id: str = "j1") -> JobView:
        view = await self.reader.job(job_id)
        assert view is not None, f"no job {job_id}"
        return view

    async def events(self, job_id: str = "j1") -> list[str]:
        return [h.event for h in (await self.view(job_id)).history]

    async def deadline(self, index: int, job_id: str = "j1") -> float | None:
        """When the supervisor looks at the step next (None: not in the deadline set)."""
        k = self.store.keys
        return cast(
            float | None,
            await self.redis.zscore(k.deadlines(k.bucket_of(job_id)), f"{job_id}|{index}"),
        )

    async def timer(self, index: int, job_id: str = "j1") -> float | None:
        """When the step's retry (or a delayed start) is due (None: no timer)."""
        k = self.store.keys
        return cast(
            float | None,
            await self.redis.zscore(k.timers(k.bucket_of(job_id)), f"{job_id}|{index}"),
        )

    async def stored_policy(self, index: int, job_id: str = "j1") -> RetryPolicy:
        raw = await self.redis.hget(self.store.keys.step(job_id, index), "policy")
        assert raw, f"step {index} of {job_id} has no retry policy"
        return msgspec.json.decode(raw, type=RetryPolicy)

    async def claim(
        self,
        index: int,
        lease: int,
        *,
        job_id: str = "j1",
        agent: str = "agent-a",
        policy: RetryPolicy | None = None,
    ) -> bool:
        """The agent claims; the policy it resolves is the step's stored one unless told
        (an agent whose task has no defaults of its own resolves just that)."""
        if policy is None:
            raw = await self.redis.hget(self.store.keys.step(job_id, index), "policy")
            policy = msgspec.json.decode(raw, type=RetryPolicy) if raw else FLEET
        return await self.store.claim(job_id, index, lease, agent, policy)

    async def record(
        self,
        index: int,
        lease: int,
        *,
        job_id: str = "j1",
        agent: str = "agent-a",
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        retry_after_ms: int | None = None,
        advance: bool = False,
    ) -> RecordAnswer:
        return await self.store.record(
            job_id,
            index,
            lease,
            agent,
            result=result,
            error=error,
            retry_after_ms=retry_after_ms,
            advance=advance,
        )

    async def advance(self, index: int, lease: int, job_id: str = "j1") -> FollowUp:
        return await self.store.advance(job_id, index, lease, "scheduler-1")

    async def recover(self, index: int, job_id: str = "j1", store: StateStore | None = None) -> Any:
        return await (store or self.store).recover(job_id, index, "supervisor-1")

    async def fire(self, index: int, job_id: str = "j1", store: StateStore | None = None) -> Any:
        return await (store or self.store).fire_timer(job_id, index, "scheduler-1")

    async def cancel(self, job_id: str = "j1") -> Announce | str:
        return await self.store.cancel(job_id, "client-1")

    async def run(
        self,
        index: int,
        *,
        job_id: str = "j1",
        result: bytes = b"null",
        error: ErrorInfo | None = None,
        retry_after_ms: int | None = None,
        policy: RetryPolicy | None = None,
    ) -> FollowUp:
        """One attempt of the current dispatch of ``index``: claim, record (announced to
        the scheduler), advance."""
        lease = await self.lease(index, job_id)
        assert await self.claim(index, lease, job_id=job_id, policy=policy), f"claim of {index}"
        recorded = await self.record(
            index,
            lease,
            job_id=job_id,
            result=None if error else result,
            error=error,
            retry_after_ms=retry_after_ms,
        )
        assert recorded == Recorded(), recorded
        return await self.advance(index, lease, job_id)
