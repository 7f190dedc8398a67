"""The state store: one typed async method per state change, each one Lua script.

Every change checks the expected status (the state machine's tables, in the scripts'
prelude) and the lease token, and appends to the job's history in the same atomic step.
No read-modify-write in Python. Each script takes one named input record and answers with
one (records.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from sasfleet.shared.clock import Clock, SystemClock
from sasfleet.shared.config import Settings
from sasfleet.shared.errors import DispatchMismatch
from sasfleet.shared.messages.codec import any_decoder, encode
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.messages.submit import StepOptions, StepSpec
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.batching import BatchedScripts
from sasfleet.shared.state.connection import RedisClient
from sasfleet.shared.state.keys import Keys, deadline_member
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import (
    ANSWERS,
    Announce,
    CancelAnswer,
    Claim,
    ClaimAnswer,
    ClaimDue,
    Claimed,
    ClaimedDue,
    CreateAnswer,
    Created,
    CreateJob,
    ExpireAgent,
    FailSubmission,
    Finished,
    FireAnswer,
    Fired,
    FollowUp,
    MadeDue,
    Record,
    RecordAnswer,
    RecoverAnswer,
    Recovered,
    Refused,
    Rejected,
    ReleaseAnswer,
    Renew,
    Renewal,
    Scheduled,
    Settle,
    StepInput,
)
from sasfleet.shared.state.scripts import SCRIPT_NAMES, script_source
from sasfleet.shared.statemachine import JOB_TERMINAL, RetryPolicy, StepStatus, resolve_policy

_DEFAULTS = Settings.model_fields  # the one home of the timings' default values


@dataclass(frozen=True, slots=True)
class StoreTimings:
    """How long a lease runs, how long a recorded outcome waits to be taken up before a
    supervisor takes it up, and how long an ended job's keys stay (by default, the
    settings' defaults)."""

    lease_ms: int = int(_DEFAULTS["lease_s"].default * 1000)
    announce_after_ms: int = int(_DEFAULTS["advance_grace_s"].default * 1000)
    ttl_s: int = _DEFAULTS["job_ttl_s"].default

    @classmethod
    def of(cls, s: Settings) -> StoreTimings:
        return cls(int(s.lease_s * 1000), int(s.advance_grace_s * 1000), s.job_ttl_s)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to record: its steps' records (:func:`step_record`) and where to tell its end."""

    job_id: str
    steps: list[dict[str, Any]]
    idempotency_key: str = ""
    reply_to: str = ""
    correlation_id: str = ""
    traceparent: str = ""
    notify: str = ""  # a Redis channel told of the job's end (the Python client's)
    start_at_ms: int = 0  # 0 or the past: start at once


@dataclass(frozen=True, slots=True)
class CreateResult:
    created: bool
    job_status: str
    step_status: str
    order: DispatchOrder | None  # the current step's dispatch; None when there is none
    start_at_ms: int = 0  # a delayed job's start
    ended: Finished | None = None  # the job ended as it was recorded (cancelled before)


def step_record(spec: StepSpec, defaults: StepOptions, fleet: RetryPolicy) -> dict[str, Any]:
    """A step as create_job.lua stores it: each option under its submit-message name (the
    fleet's ``defaults`` filling what the step leaves open), and the retry policy resolved
    from the fleet's and the step's own choices."""
    record: dict[str, Any] = {}
    for name in StepSpec.__struct_fields__:
        value = getattr(spec, name)
        if value is None and name != "payload":
            value = getattr(defaults, name, None)
            if value is None:
                continue
        # Strings and numbers as they are; the payload, structs and lists as JSON text.
        plain = isinstance(value, str | int | float) and not isinstance(value, bool)
        record[name] = value if plain and name != "payload" else encode(value).decode()
    policy = resolve_policy(fleet, (spec.max_attempts, spec.retry))
    record["policy"] = encode(policy).decode()
    return record


_decoders = {name: msgspec.json.Decoder(answer, strict=False) for name, answer in ANSWERS.items()}


class StateStore:
    """Typed access to job and step state in Redis, under one fleet prefix."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        clock: Clock | None = None,
        timings: StoreTimings | None = None,
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.clock = clock or SystemClock()
        self.timings = timings or StoreTimings()
        self._scripts = BatchedScripts(redis, {n: script_source(n) for n in SCRIPT_NAMES})
        self.reader = JobReader(redis, prefix)  # the read models (job show, waiting)
        self.agents = AgentRegistry(redis, prefix)  # agents' liveness records

    async def run(self, name: str, keys: list[str], record: msgspec.Struct) -> Any:
        """Run script ``name`` with its input ``record``; its decoded answer."""
        raw = await self._scripts.call(name, keys, [encode(record)])
        return _decoders[name].decode(raw)

    def _job_keys(self, job_id: str, step: int, *extra: str) -> list[str]:
        """The keys of a job script (_lib.lua's job_context), then its own."""
        k = self.keys
        b = k.bucket_of(job_id)
        return [
            k.job(job_id),
            k.step(job_id, step),
            k.history(job_id),
            k.deadlines(b),
            k.timers(b),
            k.escalations(b),
            *extra,
        ]

    def _input(
        self, job_id: str, step: int, by: str, kind: type[StepInput] = StepInput, **more: Any
    ) -> StepInput:
        """The input record of a script acting on ``step`` of ``job_id``, for ``by``."""
        now = self.clock.now_ms()
        return kind(
            job_id=job_id,
            now=now,
            by=by,
            step_prefix=self.keys.step_prefix(job_id),
            ttl_s=self.timings.ttl_s,
            step=step,
            announce_at=now + self.timings.announce_after_ms,
            rand=random.random(),
            **more,
        )

    def _agent_steps(self, agent: str, job_id: str) -> str:
        return self.keys.agent_steps(agent, self.keys.bucket_of(job_id))

    async def create_job(self, job: NewJob, by: str) -> CreateResult:
        """Record a job and dispatch its first step (or set its start timer); an existing
        id returns the existing job."""
        k, jid = self.keys, job.job_id
        record = CreateJob(
            job_id=jid,
            now=self.clock.now_ms(),
            by=by,
            step_prefix=k.step_prefix(jid),
            ttl_s=self.timings.ttl_s,
            steps=job.steps,
            idempotency_key=job.idempotency_key,
            reply_to=job.reply_to,
            correlation_id=job.correlation_id,
            traceparent=job.traceparent,
            notify=job.notify,
            start_at=job.start_at_ms,
        )
        keys = self._job_keys(jid, 0, k.jobs(k.bucket_of(jid)), k.cancel_marker(jid))
        answer: CreateAnswer = await self.run("create_job", keys, record)
        if isinstance(answer, Created):
            return CreateResult(True, "running", "dispatched", answer.order)
        if isinstance(answer, Finished):
            return CreateResult(True, answer.status, "pending", None, ended=answer)
        if isinstance(answer, Scheduled):
            return CreateResult(True, "pending", "pending", None, answer.start_at)
        return CreateResult(False, answer.job_status, answer.step_status, answer.order)

    async def fail_submission(
        self, job_id: str, error: ErrorInfo, by: str, reply_to: str, correlation_id: str
    ) -> bool:
        """Record a rejected submission as a FAILED job; False if the id already exists."""
        k = self.keys
        answer: Refused = await self.run(
            "fail_submission",
            [k.job(job_id), k.history(job_id), k.jobs(k.bucket_of(job_id))],
            FailSubmission(
                job_id=job_id,
                now=self.clock.now_ms(),
                by=by,
                error=encode(error).decode(),
                reply_to=reply_to,
                correlation_id=correlation_id,
                ttl_s=self.timings.ttl_s,
            ),
        )
        return answer.recorded

    async def claim(
        self,
        job_id: str,
        step: int,
        lease: int,
        agent: str,
        policy: RetryPolicy,
        *,
        digest: str | None = None,
    ) -> bool:
        """DISPATCHED -> RUNNING for the holder of ``lease``, storing the step's retry
        ``policy`` as the agent resolved it; False (recorded) otherwise.

        ``digest``, the SHA-1 of the delivered dispatch message (an agent always gives
        it), must be the recorded dispatch's: else :class:`DispatchMismatch` is raised
        (the rejection is in the history) and nothing is claimed."""
        answer: ClaimAnswer = await self.run(
            "claim",
            self._job_keys(job_id, step, self._agent_steps(agent, job_id)),
            self._input(
                job_id,
                step,
                agent,
                Claim,
                lease=lease,
                lease_ms=self.timings.lease_ms,
                policy=encode(policy).decode(),
                digest=digest,
            ),
        )
        if isinstance(answer, Rejected) and answer.mismatch:
            raise DispatchMismatch(
                f"dispatch of {job_id} step {step} lease {lease} does not match the recorded step"
            )
        return isinstance(answer, Claimed)

    async def renew(self, job_id: str, step: int, lease: int, progress: bytes = b"") -> str:
        """Extend a running step's lease: "renewed", "lost" or "cancel_requested"."""
        k = self.keys
        answer: Renewal = await self.run(
            "renew",
            [k.step(job_id, step), k.deadlines(k.bucket_of(job_id)), k.job(job_id)],
            Renew(
                member=deadline_member(job_id, step),
                lease=lease,
                now=self.clock.now_ms(),
                lease_ms=self.timings.lease_ms,
                progress=progress.decode() if progress else None,
            ),
        )
        return answer.outcome

    async def release(self, job_id: str, step: int, lease: int, agent: str) -> DispatchOrder | None:
        """Hand a running step back for another agent (shutdown); None if the lease is gone."""
        answer: ReleaseAnswer = await self.run(
            "release",
            self._job_keys(job_id, step, self._agent_steps(agent, job_id)),
            self._input(job_id, step, agent, lease=lease),
        )
        return answer if isinstance(answer, DispatchOrder) else None

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
        retry_after_ms: int | None = None,
        advance: bool = False,
    ) -> RecordAnswer:
        """Record an attempt's outcome (error given: FAILED, else SUCCEEDED; a handler's
        ``retry_after_ms`` replaces the backoff before its next attempt).

        Returns Stale when the lease is no longer current: the result is rejected and the
        rejection is written to the job's history. With ``advance``, a success of a
        running job's forward step is followed at once: the answer is what follows (the
        next step's :class:`DispatchOrder`, to publish and then :meth:`settle`, or the
        job's :class:`Finished` end). Otherwise Recorded: announce it to a scheduler.
        """
        record = self._input(
            job_id,
            step,
            agent,
            Record,
            lease=lease,
            result=result.decode() if result is not None else None,
            error=encode(error).decode() if error is not None else None,
            retry_after_ms=retry_after_ms,
            advance=advance,
        )
        keys = self._job_keys(job_id, step, self._agent_steps(agent, job_id))
        return cast(RecordAnswer, await self.run("record", keys, record))

    async def settle(self, job_id: str, step: int) -> None:
        """The dispatch that :meth:`record` returned for ``step`` is published: a
        supervisor need not publish it (see ``recover``)."""
        k = self.keys
        await self.run(
            "settle",
            [k.job(job_id), k.deadlines(k.bucket_of(job_id))],
            Settle(job_id=job_id, step=step),
        )

    async def advance(self, job_id: str, step: int, lease: int, by: str) -> FollowUp:
        """Take up a recorded outcome: what follows it (_lib.lua's ``follow``)."""
        return cast(
            FollowUp,
            await self.run(
                "advance",
                self._job_keys(job_id, step),
                self._input(job_id, step, by, lease=lease),
            ),
        )

    async def finished(self, job_id: str) -> Finished | None:
        """The final state of a job that has ended; None while it runs (or is unknown)."""
        status, reply_to, correlation_id, result, error = await self.redis.hmget(
            self.keys.job(job_id), "status", "reply_to", "correlation_id", "result", "error"
        )
        if status not in JOB_TERMINAL:
            return None
        return Finished(
            status=str(status),
            reply_to=str(reply_to or ""),
            correlation_id=str(correlation_id or ""),
            result=str(result or ""),
            error=str(error or ""),
        )

    async def traceparent(self, job_id: str) -> str:
        """The trace context recorded with a job ("" for none)."""
        return str(await self.redis.hget(self.keys.job(job_id), "traceparent") or "")

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

    async def recover(self, job_id: str, step: int, by: str) -> Recovered | None:
        """Claim one overdue deadline atomically and apply the recovery it calls for;
        None when there is nothing to recover."""
        answer: RecoverAnswer = await self.run(
            "recover", self._job_keys(job_id, step), self._input(job_id, step, by)
        )
        return answer if isinstance(answer, Recovered) else None

    async def fire_timer(self, job_id: str, step: int, by: str) -> Fired | None:
        """Claim one due timer atomically: dispatch the retry or the delayed start; None
        when it is gone (fired by another scheduler, or the job moved on)."""
        answer: FireAnswer = await self.run(
            "fire_timer", self._job_keys(job_id, step), self._input(job_id, step, by)
        )
        return answer if isinstance(answer, Fired) else None

    async def cancel(self, job_id: str, by: str) -> Announce | str:
        """Ask a job to stop. Returns the step to announce when one was stopped before it
        ran, else what the job is doing ("running" step, "compensating", "unknown": not
        recorded yet, it will be cancelled on arrival; or a final status)."""
        answer: CancelAnswer = await self.run(
            "cancel",
            self._job_keys(job_id, 0, self.keys.cancel_marker(job_id)),
            self._input(job_id, 0, by),
        )
        return answer.announce if answer.announce is not None else answer.phase

    async def expire_agent(self, agent_id: str) -> int:
        """Make the steps a dead or hung agent still holds due for recovery now."""
        k, now, made_due = self.keys, self.clock.now_ms(), 0
        for b in k.buckets:
            before, after = k.step_key_format(b)
            answer: MadeDue = await self.run(
                "expire_agent",
                [k.agent_steps(agent_id, b), k.deadlines(b)],
                ExpireAgent(agent=agent_id, now=now, before=before, after=after),
            )
            made_due += answer.made_due
        return made_due

    async def claim_due(
        self, key: str, member: str, until_ms: int, *, now_ms: int | None = None
    ) -> bool:
        """Claim ``member`` of sorted set ``key``, due by ``now_ms`` (default: now), until
        ``until_ms``: whoever moves its score first owns it."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        answer: ClaimedDue = await self.run(
            "claim_due", [key], ClaimDue(member=member, now=now, until_ms=until_ms)
        )
        return answer.claimed

    async def claim_escalations(self, limit: int, retry_after_ms: int) -> list[str]:
        """Escalated jobs to report now. Each is claimed for ``retry_after_ms`` (so one
        supervisor reports it); call :meth:`escalation_reported` when done."""
        k, now = self.keys, self.clock.now_ms()
        due = await self._due([k.escalations(b) for b in k.buckets], limit)
        return [
            job_id
            for job_id in due
            if await self.claim_due(
                k.escalations(k.bucket_of(job_id)), job_id, now + retry_after_ms
            )
        ]

    async def escalation_reported(self, job_id: str) -> None:
        await self.redis.zrem(self.keys.escalations(self.keys.bucket_of(job_id)), job_id)

    async def step_results(self, job_id: str, steps: range) -> list[Any]:
        """The recorded results (decoded JSON, None where none) of ``steps``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in steps:
                pipe.hget(self.keys.step(job_id, i), "result")
            raws = await pipe.execute()
        return [any_decoder.decode(r) if r else None for r in raws]
