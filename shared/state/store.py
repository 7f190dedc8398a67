"""The state store: one typed async method per state change, each one Lua script.

Every change checks the expected status (from the pure state machine) and the lease token,
and appends to the job's history in the same atomic step. No read-modify-write in Python.
"""

from __future__ import annotations

from typing import Any

from sasfleet.shared.clock import Clock, SystemClock
from sasfleet.shared.messages.codec import any_decoder, encode
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.batching import BatchedScripts
from sasfleet.shared.state.connection import RedisClient
from sasfleet.shared.state.keys import Keys, deadline_member
from sasfleet.shared.state.records import (
    AdvanceResult,
    Announce,
    CreateResult,
    DispatchOrder,
    Finished,
    NewJob,
    RecoverResult,
)
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
_RENEW_FROM = _csv(frozenset({StepStatus.RUNNING}))
_RECORDED = _csv(STEP_TERMINAL)

RENEWED, LEASE_LOST, CANCEL_REQUESTED = 1, 0, 2


class StateStore:
    """Typed access to job and step state in Redis, under one fleet prefix."""

    def __init__(self, redis: RedisClient, prefix: str, clock: Clock | None = None) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.clock = clock or SystemClock()
        self._scripts = BatchedScripts(redis, {n: script_source(n) for n in SCRIPT_NAMES})

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts.call(name, keys, args)

    def _step_keys(self, job_id: str, step: int) -> list[str]:
        k = self.keys
        return [
            k.job(job_id),
            k.step(job_id, step),
            k.history(job_id),
            k.deadlines(k.bucket_of(job_id)),
        ]

    def _agent_steps(self, agent: str, job_id: str) -> str:
        return self.keys.agent_steps(agent, self.keys.bucket_of(job_id))

    async def reserve_idempotency_key(self, key: str, job_id: str, ttl_s: int) -> str:
        """Bind ``key`` to ``job_id`` unless it is bound already; returns the bound job id."""
        rkey = self.keys.idempotency(key)
        if await self.redis.set(rkey, job_id, nx=True, ex=ttl_s):
            return job_id
        existing = await self.redis.get(rkey)
        return str(existing) if existing is not None else job_id

    async def create_job(self, job: NewJob, by: str) -> CreateResult:
        """Record a job and dispatch its first step (or set its start timer); an existing
        id returns the existing job."""
        k, now, jid = self.keys, self.clock.now_ms(), job.job_id
        args: list[Any] = [
            jid,
            now,
            by,
            k.step_prefix(jid),
            job.idempotency_key,
            job.reply_to,
            job.correlation_id,
            job.traceparent,
            job.start_at_ms,
            job.ttl_s,
            len(job.steps),
            job.notify,
            *(s.fields() for s in job.steps),
        ]
        b = k.bucket_of(jid)
        keys = [
            k.job(jid),
            k.history(jid),
            k.jobs(b),
            k.deadlines(b),
            k.timers(b),
            k.step(jid, 0),
            k.cancel_marker(jid),
        ]
        reply = await self._run("create_job", keys, args)
        if reply[0] == "created":
            return CreateResult(True, "running", "dispatched", DispatchOrder.from_reply(jid, reply))
        if reply[0] == "cancelled":
            return CreateResult(True, "cancelled", "pending", None)
        if reply[0] == "scheduled":
            return CreateResult(True, "pending", "pending", None, int(reply[1]))
        _, job_status, _current, step_status, order = reply
        return CreateResult(
            False,
            job_status,
            step_status or "",
            DispatchOrder.from_reply(jid, order) if order else None,
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
            [k.job(job_id), k.history(job_id), k.jobs(k.bucket_of(job_id))],
            [job_id, self.clock.now_ms(), by, encode(error), reply_to, correlation_id, ttl_s],
        )
        return bool(reply)

    async def claim(
        self, job_id: str, step: int, lease: int, agent: str, lease_ms: int, max_attempts: int
    ) -> bool:
        """DISPATCHED -> RUNNING for the holder of ``lease``; False (recorded) otherwise."""
        reply = await self._run(
            "claim",
            [*self._step_keys(job_id, step), self._agent_steps(agent, job_id)],
            [
                deadline_member(job_id, step),
                lease,
                agent,
                self.clock.now_ms(),
                lease_ms,
                _CLAIM_FROM,
                step,
                max_attempts,
            ],
        )
        return bool(reply[0] == "ok")

    async def renew(
        self, job_id: str, step: int, lease: int, lease_ms: int, progress: bytes = b""
    ) -> int:
        """Extend a running step's lease: RENEWED, LEASE_LOST, or CANCEL_REQUESTED."""
        k = self.keys
        reply = await self._run(
            "renew",
            [k.step(job_id, step), k.deadlines(k.bucket_of(job_id)), k.job(job_id)],
            [
                deadline_member(job_id, step),
                lease,
                self.clock.now_ms(),
                lease_ms,
                _RENEW_FROM,
                progress,
            ],
        )
        return int(reply)

    async def release(self, job_id: str, step: int, lease: int, agent: str) -> DispatchOrder | None:
        """Hand a running step back for another agent (shutdown); None if the lease is gone."""
        reply = await self._run(
            "release",
            [*self._step_keys(job_id, step), self._agent_steps(agent, job_id)],
            [deadline_member(job_id, step), lease, agent, self.clock.now_ms(), step],
        )
        return DispatchOrder.from_reply(job_id, reply) if reply[0] == "dispatch" else None

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
        retry_delay_ms: int | None,
        announce_after_ms: int,
        finish_ttl_s: int | None = None,
    ) -> bool | Finished | DispatchOrder:
        """Record an attempt's outcome (error given: FAILED, else SUCCEEDED), with the delay
        before the next attempt (None: no further attempt).

        Returns False when the lease is no longer current: the result is rejected as stale
        and the rejection is written to the job's history. With ``finish_ttl_s``, a success
        of a running job's forward step also advances the job: the last step ends it (kept
        ``finish_ttl_s``) and returns its :class:`Finished` state; an earlier one
        dispatches the next step and returns its :class:`DispatchOrder`, for the caller to
        publish and then :meth:`settle_advance`. Otherwise True: announce the outcome to a
        scheduler.
        """
        succeeded = error is None
        status = StepStatus.SUCCEEDED if succeeded else StepStatus.FAILED
        now = self.clock.now_ms()
        reply = await self._run(
            "record",
            [*self._step_keys(job_id, step), self._agent_steps(agent, job_id)],
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
                -1 if retry_delay_ms is None else retry_delay_ms,
                "" if finish_ttl_s is None else finish_ttl_s,
                self.keys.step_prefix(job_id),
            ],
        )
        if reply[0] == "finished":
            return Finished(*reply[1:6])
        if reply[0] == "dispatch":
            return DispatchOrder.from_reply(job_id, reply)
        return bool(reply[0] == "ok")

    async def settle_advance(self, job_id: str, step: int) -> None:
        """The next step's dispatch that :meth:`record` returned for ``step`` is published:
        the supervisor need not publish it (see ``recover``)."""
        k = self.keys
        await self._run(
            "settle_advance",
            [k.job(job_id), k.deadlines(k.bucket_of(job_id))],
            [deadline_member(job_id, step), step],
        )

    async def advance(
        self, job_id: str, step: int, lease: int, by: str, *, ttl_s: int
    ) -> AdvanceResult:
        """Take up a recorded outcome: dispatch the next step or a compensation, wait to
        retry, or end the job."""
        k = self.keys
        b = k.bucket_of(job_id)
        reply = await self._run(
            "advance",
            [
                k.job(job_id),
                k.step(job_id, step),
                k.history(job_id),
                k.deadlines(b),
                k.timers(b),
                k.escalations(b),
            ],
            [job_id, step, lease, by, self.clock.now_ms(), ttl_s, k.step_prefix(job_id)],
        )
        kind = reply[0]
        if kind == "dispatch":
            return DispatchOrder.from_reply(job_id, reply)
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
        return await self._due([self.keys.deadlines(b) for b in self.keys.buckets], limit)

    async def timers_due(self, limit: int) -> list[str]:
        """Timer members (``job_id|step``: retry backoffs, delayed starts) due now."""
        return await self._due([self.keys.timers(b) for b in self.keys.buckets], limit)

    async def _due(self, keys: list[str], limit: int) -> list[str]:
        """The ``limit`` most overdue members of the sorted sets ``keys`` (one pipeline;
        a cluster client sends it to each node holding some of them)."""
        now = self.clock.now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrangebyscore(key, "-inf", now, start=0, num=limit, withscores=True)
            replies: list[list[tuple[str, float]]] = await pipe.execute()
        due = sorted((score, str(m)) for reply in replies for m, score in reply)
        return [m for _, m in due[:limit]]

    async def recover(
        self, job_id: str, step: int, by: str, *, announce_after_ms: int
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
                now + announce_after_ms,
                _REDISPATCH_FROM,
                _RECORDED,
                step,
                self.keys.step_prefix(job_id),
            ],
        )
        if reply[0] == "dispatch":
            return DispatchOrder.from_reply(job_id, reply)
        if reply[0] == "announce":
            return Announce(step, int(reply[1]), int(reply[2]))
        return None

    async def fire_timer(
        self, job_id: str, step: int, by: str, *, announce_after_ms: int
    ) -> RecoverResult:
        """Claim one due timer atomically: dispatch the retry or the delayed start."""
        k, now = self.keys, self.clock.now_ms()
        reply = await self._run(
            "fire_timer",
            [*self._step_keys(job_id, step), k.timers(k.bucket_of(job_id))],
            [deadline_member(job_id, step), now, by, step, now + announce_after_ms],
        )
        if reply[0] == "dispatch":
            return DispatchOrder.from_reply(job_id, reply)
        if reply[0] == "announce":
            return Announce(step, int(reply[1]), int(reply[2]))
        return None

    async def cancel(
        self, job_id: str, by: str, *, announce_after_ms: int, ttl_s: int
    ) -> Announce | str:
        """Ask a job to stop. Returns the step to announce when one was stopped before it
        ran, else what the job is doing ("running" step, "compensating", "unknown": not
        recorded yet, it will be cancelled on arrival; or a final status)."""
        k, now, b = self.keys, self.clock.now_ms(), self.keys.bucket_of(job_id)
        reply = await self._run(
            "cancel",
            [
                k.job(job_id),
                k.history(job_id),
                k.deadlines(b),
                k.timers(b),
                k.cancel_marker(job_id),
            ],
            [job_id, now, by, k.step_prefix(job_id), now + announce_after_ms, ttl_s],
        )
        if reply[0] == "announce":
            return Announce(int(reply[1]), int(reply[2]), int(reply[3]))
        return str(reply[1])

    async def expire_agent(self, agent_id: str) -> int:
        """Make the steps a dead or hung agent still holds due for recovery now."""
        k, now, made_due = self.keys, self.clock.now_ms(), 0
        for b in k.buckets:
            before, after = k.step_key_format(b)
            made_due += int(
                await self._run(
                    "expire_agent",
                    [k.agent_steps(agent_id, b), k.deadlines(b)],
                    [agent_id, now, before, after],
                )
            )
        return made_due

    async def claim_escalations(self, limit: int, retry_after_ms: int) -> list[str]:
        """Escalated jobs to report now. Each is claimed for ``retry_after_ms`` (so one
        supervisor reports it); call :meth:`escalation_reported` when done."""
        k, now = self.keys, self.clock.now_ms()
        due = await self._due([k.escalations(b) for b in k.buckets], limit)
        claimed = []
        for job_id in due:
            escalations = k.escalations(k.bucket_of(job_id))
            if await self._run("claim_due", [escalations], [job_id, now, now + retry_after_ms]):
                claimed.append(job_id)
        return claimed

    async def escalation_reported(self, job_id: str) -> None:
        await self.redis.zrem(self.keys.escalations(self.keys.bucket_of(job_id)), job_id)

    async def step_results(self, job_id: str, steps: range) -> list[Any]:
        """The recorded results (decoded JSON, None where none) of ``steps``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in steps:
                pipe.hget(self.keys.step(job_id, i), "result")
            raws = await pipe.execute()
        return [any_decoder.decode(r) if r else None for r in raws]
