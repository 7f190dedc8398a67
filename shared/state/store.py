"""The state store: one typed async method per state change, each one Lua script.

Every change checks the expected status (from the pure state machine) and the lease token,
and appends to the job's history in the same atomic step. No read-modify-write in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sasfleet.shared.clock import Clock, SystemClock
from sasfleet.shared.messages.codec import encode
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.keys import Keys, deadline_member
from sasfleet.shared.state.scripts import SCRIPT_NAMES, script_source
from sasfleet.shared.statemachine import (
    JOB_TERMINAL,
    STEP_TERMINAL,
    Move,
    StepStatus,
    step_sources,
)


def _csv(statuses: frozenset[StepStatus]) -> str:
    return ",".join(sorted(statuses))


_CLAIM_FROM = _csv(step_sources(Move.CLAIM))
_SUCCEED_FROM = _csv(step_sources(Move.SUCCEED))
_FAIL_FROM = _csv(step_sources(Move.FAIL))
_REDISPATCH_FROM = _csv(step_sources(Move.REDISPATCH))
_RECORDED = _csv(STEP_TERMINAL)


@dataclass(frozen=True, slots=True)
class NewStep:
    task: str
    pool: str
    payload: bytes  # JSON
    max_attempts: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: str
    steps: list[NewStep]
    idempotency_key: str = ""
    reply_to: str = ""
    correlation_id: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class DispatchOrder:
    """What to publish to an agent pool for one attempt of one step."""

    job_id: str
    step: int
    lease: int
    attempt: int
    task: str
    pool: str
    payload: str
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class CreateResult:
    created: bool
    job_status: str
    step_status: str
    order: DispatchOrder | None  # the current step's dispatch; None when the job has none


@dataclass(frozen=True, slots=True)
class Finished:
    """A job reached a terminal state (now, or before this duplicate announcement)."""

    status: str
    reply_to: str
    correlation_id: str
    result: str  # JSON or ""
    error: str  # JSON or ""


@dataclass(frozen=True, slots=True)
class Announce:
    """A recorded outcome (or a final timeout) that the scheduler must take up."""

    attempt: int
    lease: int


AdvanceResult = DispatchOrder | Finished | int | None  # int: retry due (ms); None: stale
RecoverResult = DispatchOrder | Announce | None  # None: nothing to do


def connect_redis(url: str, max_connections: int = 64) -> aioredis.Redis:
    """A Redis client that retries briefly on connection errors (Redis restarts, failovers).

    The pool blocks callers when all connections are busy instead of failing, so a burst of
    concurrent calls queues up rather than raising "Too many connections".
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


class StateStore:
    """Typed access to job, step and agent state in Redis, under one fleet prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str, clock: Clock | None = None) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.clock = clock or SystemClock()
        self._scripts = {name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    def _order(self, job_id: str, reply: list[Any]) -> DispatchOrder:
        _kind, lease, attempt, task, pool, payload, timeout_ms, step = reply
        return DispatchOrder(
            job_id, int(step), int(lease), int(attempt), task, pool, payload, int(timeout_ms)
        )

    async def reserve_idempotency_key(self, key: str, job_id: str, ttl_s: int) -> str:
        """Bind ``key`` to ``job_id`` unless it is bound already; returns the bound job id."""
        rkey = self.keys.idempotency(key)
        if await self.redis.set(rkey, job_id, nx=True, ex=ttl_s):
            return job_id
        existing = await self.redis.get(rkey)
        return str(existing) if existing is not None else job_id

    async def create_job(self, job: NewJob, by: str, dispatch_timeout_ms: int) -> CreateResult:
        """Record a job and dispatch its first step; an existing id returns the existing job."""
        k, now = self.keys, self.clock.now_ms()
        args: list[Any] = [
            job.job_id,
            now,
            by,
            k.step_prefix(job.job_id),
            now + dispatch_timeout_ms,
            job.idempotency_key,
            job.reply_to,
            job.correlation_id,
            job.traceparent,
            len(job.steps),
        ]
        for s in job.steps:
            args += [s.task, s.pool, s.payload, s.max_attempts, s.timeout_ms]
        keys = [
            k.job(job.job_id),
            k.history(job.job_id),
            k.jobs,
            k.deadlines,
            k.step(job.job_id, 0),
        ]
        reply = await self._run("create_job", keys, args)
        if reply[0] == "created":
            return CreateResult(True, "running", "dispatched", self._order(job.job_id, reply))
        _, job_status, _current, step_status, order = reply
        return CreateResult(
            False, job_status, step_status or "", self._order(job.job_id, order) if order else None
        )

    async def fail_submission(
        self,
        job_id: str,
        error: ErrorInfo,
        by: str,
        reply_to: str,
        correlation_id: str,
        ttl_s: int,
    ) -> bool:
        """Record a rejected submission as a FAILED job; False if the id already exists."""
        k = self.keys
        reply = await self._run(
            "fail_submission",
            [k.job(job_id), k.history(job_id), k.jobs],
            [job_id, self.clock.now_ms(), by, encode(error), reply_to, correlation_id, ttl_s],
        )
        return bool(reply)

    def _step_keys(self, job_id: str, step: int) -> list[str]:
        k = self.keys
        return [k.job(job_id), k.step(job_id, step), k.history(job_id), k.deadlines]

    async def claim(self, job_id: str, step: int, lease: int, agent: str, lease_ms: int) -> bool:
        """DISPATCHED -> RUNNING for the holder of ``lease``; False (recorded) otherwise."""
        reply = await self._run(
            "claim",
            self._step_keys(job_id, step),
            [
                deadline_member(job_id, step),
                lease,
                agent,
                self.clock.now_ms(),
                lease_ms,
                _CLAIM_FROM,
                step,
            ],
        )
        return bool(reply[0] == "ok")

    async def renew(self, job_id: str, step: int, lease: int, lease_ms: int) -> bool:
        """Extend a running step's lease; False when the lease was taken over."""
        k = self.keys
        reply = await self._run(
            "renew",
            [k.step(job_id, step), k.deadlines],
            [
                deadline_member(job_id, step),
                lease,
                self.clock.now_ms(),
                lease_ms,
                _csv(frozenset({StepStatus.RUNNING})),
            ],
        )
        return bool(reply)

    async def lease_is_current(self, job_id: str, step: int, lease: int) -> bool:
        """Whether ``lease`` still holds the step (ask before an irreversible act)."""
        status, current = await self.redis.hmget(self.keys.step(job_id, step), "status", "lease")
        return status == StepStatus.RUNNING and current == str(lease)

    async def record(
        self,
        job_id: str,
        step: int,
        lease: int,
        agent: str,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        announce_after_ms: int,
    ) -> bool:
        """Record an attempt's outcome (error given: FAILED, else SUCCEEDED).

        Returns False when the lease is no longer current: the result is rejected as stale
        and the rejection is written to the job's history.
        """
        succeeded = error is None
        status = StepStatus.SUCCEEDED if succeeded else StepStatus.FAILED
        now = self.clock.now_ms()
        reply = await self._run(
            "record",
            self._step_keys(job_id, step),
            [
                deadline_member(job_id, step),
                lease,
                agent,
                now,
                status.value,
                result if result is not None else b"",
                encode(error) if error else b"",
                now + announce_after_ms,
                _SUCCEED_FROM if succeeded else _FAIL_FROM,
                step,
            ],
        )
        return bool(reply[0] == "ok")

    async def advance(
        self,
        job_id: str,
        step: int,
        lease: int,
        by: str,
        *,
        retry_delay_ms: int,
        dispatch_timeout_ms: int,
        ttl_s: int,
    ) -> AdvanceResult:
        """Take up a recorded outcome: dispatch the next step, wait to retry, or end the job."""
        k, now = self.keys, self.clock.now_ms()
        reply = await self._run(
            "advance",
            [
                k.job(job_id),
                k.step(job_id, step),
                k.step(job_id, step + 1),
                k.history(job_id),
                k.deadlines,
            ],
            [
                job_id,
                step,
                lease,
                by,
                now,
                retry_delay_ms,
                now + dispatch_timeout_ms,
                ttl_s,
                k.step_prefix(job_id),
            ],
        )
        kind = reply[0]
        if kind == "dispatch":
            return self._order(job_id, reply)
        if kind == "finished":
            return Finished(*reply[1:6])
        if kind == "retry_later":
            return int(reply[1])
        return None

    async def finished(self, job_id: str) -> Finished | None:
        """The final state of a job that has ended; None while it runs (or is unknown)."""
        status, reply_to, correlation_id, result, error = await self.redis.hmget(
            self.keys.job(job_id), "status", "reply_to", "correlation_id", "result", "error"
        )
        if status not in JOB_TERMINAL:
            return None
        return Finished(*(str(v or "") for v in (status, reply_to, correlation_id, result, error)))

    async def due(self, limit: int) -> list[str]:
        """Deadline members (``job_id|step``) that are due now, oldest first."""
        members = await self.redis.zrangebyscore(
            self.keys.deadlines, "-inf", self.clock.now_ms(), start=0, num=limit
        )
        return [str(m) for m in members]

    async def recover(
        self, job_id: str, step: int, by: str, *, dispatch_timeout_ms: int, announce_after_ms: int
    ) -> RecoverResult:
        """Claim one overdue deadline atomically and apply the recovery it calls for."""
        now = self.clock.now_ms()
        reply = await self._run(
            "recover",
            self._step_keys(job_id, step),
            [
                deadline_member(job_id, step),
                now,
                by,
                now + dispatch_timeout_ms,
                now + announce_after_ms,
                _REDISPATCH_FROM,
                _RECORDED,
                step,
            ],
        )
        if reply[0] == "dispatch":
            return self._order(job_id, reply)
        if reply[0] == "announce":
            return Announce(int(reply[1]), int(reply[2]))
        return None
