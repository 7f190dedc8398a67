"""What the store tests share: the state scripts on a real Redis (or Redis Cluster) under a
prefix of their own, with time under the test's control (ManualClock): no services, no
sleeps; and the saga harness that drives a job through them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from uuid import uuid4

import redis.asyncio as aioredis
from redis_cluster_support import RedisTarget

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import (
    Announce,
    CreateResult,
    NewJob,
    NewStep,
)
from sasfleet.shared.state.store import (
    StateStore,
)
from sasfleet.shared.state.views import HistoryEntry, JobView

DISPATCH_MS, LEASE_MS, TIMEOUT_MS, ANNOUNCE_MS, TTL_S = 5_000, 2_000, 60_000, 30_000, 600
BOOM = ErrorInfo(type="RuntimeError", message="boom", retryable=True)
DECLINED = ErrorInfo(type="PaymentDeclined", message="card declined", retryable=False)
STUCK = ErrorInfo(type="RefundRejected", message="the bank said no", retryable=False)
# Events that hand out a new lease (a fencing token): it must only grow within a job.
LEASING_EVENTS = ("dispatch", "redispatch", "retry", "compensate")


def step(i: int, compensation: str = "", **options: Any) -> NewStep:
    """Forward step ``i``: task ``task<i>``, payload ``{"i": i}``."""
    return NewStep(
        f"task{i}",
        "default",
        f'{{"i":{i}}}'.encode(),
        options.pop("max_attempts", 3),
        options.pop("timeout_ms", TIMEOUT_MS),
        schedule_to_start_ms=options.pop("schedule_to_start_ms", DISPATCH_MS),
        compensation=compensation,
        **options,
    )


def saga_steps(*compensations: str) -> list[NewStep]:
    return [step(i, c) for i, c in enumerate(compensations)]


def of(history: list[HistoryEntry], event: str) -> list[HistoryEntry]:
    return [h for h in history if h.event == event]


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
            redis, prefix, clock, StateStore(redis, prefix, clock), JobReader(redis, prefix)
        )
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


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
        return StateStore(redis, self.prefix, self.clock)

    async def create(self, steps: list[NewStep], job_id: str = "j1", **job: Any) -> CreateResult:
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

    async def claim(
        self, index: int, lease: int, *, job_id: str = "j1", max_attempts: int | None = None
    ) -> bool:
        """The agent claims; it resolves max attempts to the step's own unless told."""
        if max_attempts is None:
            recorded = await self.redis.hget(self.store.keys.step(job_id, index), "max_attempts")
            max_attempts = int(recorded or 1)
        return await self.store.claim(job_id, index, lease, "agent-a", LEASE_MS, max_attempts)

    async def record(
        self,
        index: int,
        lease: int,
        *,
        job_id: str = "j1",
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        retry_delay_ms: int | None = None,
    ) -> bool:
        return await self.store.record(
            job_id,
            index,
            lease,
            "agent-a",
            result=result,
            error=error,
            retry_delay_ms=retry_delay_ms,
            announce_after_ms=ANNOUNCE_MS,
        )

    async def advance(self, index: int, lease: int, job_id: str = "j1") -> Any:
        return await self.store.advance(job_id, index, lease, "scheduler-1", ttl_s=TTL_S)

    async def recover(self, index: int, job_id: str = "j1") -> Any:
        return await self.store.recover(
            job_id, index, "supervisor-1", announce_after_ms=ANNOUNCE_MS
        )

    async def fire(self, index: int, job_id: str = "j1", store: StateStore | None = None) -> Any:
        return await (store or self.store).fire_timer(
            job_id, index, "scheduler-1", announce_after_ms=ANNOUNCE_MS
        )

    async def cancel(self, job_id: str = "j1") -> Announce | str:
        return await self.store.cancel(
            job_id, "client-1", announce_after_ms=ANNOUNCE_MS, ttl_s=TTL_S
        )

    async def run(
        self,
        index: int,
        *,
        job_id: str = "j1",
        result: bytes = b"null",
        error: ErrorInfo | None = None,
        retry_delay_ms: int | None = None,
    ) -> Any:
        """One attempt of the current dispatch of ``index``: claim, record, advance."""
        lease = await self.lease(index, job_id)
        assert await self.claim(index, lease, job_id=job_id), f"claim of step {index}"
        assert await self.record(
            index,
            lease,
            job_id=job_id,
            result=None if error else result,
            error=error,
            retry_delay_ms=retry_delay_ms,
        )
        return await self.advance(index, lease, job_id)
