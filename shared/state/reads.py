"""Read-only queries of job state, for the CLI, the client and the demo."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from sasfleet.shared.messages.codec import any_decoder
from sasfleet.shared.state.connection import RedisClient
from sasfleet.shared.state.keys import Keys
from sasfleet.shared.state.views import HistoryEntry, JobView, StepView
from sasfleet.shared.statemachine import RetryPolicy

_policy_decoder = msgspec.json.Decoder(RetryPolicy)


def _json(value: str | None) -> Any:
    return any_decoder.decode(value) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _history(raw: str) -> HistoryEntry:
    e = any_decoder.decode(raw)
    return HistoryEntry(
        ts=e["ts"],
        by=e["by"],
        event=e["event"],
        step=e.get("step"),
        attempt=e.get("attempt"),
        lease=e.get("lease"),
        status=e.get("to"),
        previous=e.get("from"),
        detail=e.get("detail"),
    )


def _step(h: dict[str, str]) -> StepView:
    return StepView(
        index=int(h["index"]),
        task=h["task"],
        pool=h["pool"],
        status=h["status"],
        attempt=int(h["attempt"]),
        max_attempts=_policy_decoder.decode(h["policy"]).max_attempts,
        lease=int(h["lease"]),
        timeout_s=float(h["timeout_s"]),
        payload=_json(h.get("payload")),
        result=_json(h.get("result")),
        error=_json(h.get("error")),
        locked_by=h.get("locked_by") or None,
        compensates=_int(h.get("compensates")),
        progress=_json(h.get("progress")),
        dispatched_at=_int(h.get("dispatched_at")),
        started_at=_int(h.get("started_at")),
        finished_at=_int(h.get("finished_at")),
    )


class JobReader:
    """Builds :class:`JobView` documents from Redis."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)

    async def job(self, job_id: str, *, with_history: bool = True) -> JobView | None:
        """The whole job document, or None when no such job (or it expired)."""
        k = self.keys
        job = cast(dict[str, str], await self.redis.hgetall(k.job(job_id)))
        if not job:
            return None
        # Forward steps are 0..n-1; the compensation of step i, if it ran, is step n+i.
        nsteps = 2 * int(job.get("nsteps", 0))
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in range(nsteps):
                pipe.hgetall(k.step(job_id, i))
            if with_history:
                pipe.lrange(k.history(job_id), 0, -1)
            replies = await pipe.execute()
        steps = [_step(h) for h in replies[:nsteps] if h]
        history = [_history(r) for r in replies[nsteps]] if with_history else []
        return JobView(
            job_id=job_id,
            status=job["status"],
            created_at=int(job["created_at"]),
            updated_at=int(job["updated_at"]),
            finished_at=_int(job.get("finished_at")),
            submitted_by=job.get("submitted_by") or None,
            idempotency_key=job.get("idempotency_key") or None,
            traceparent=job.get("traceparent") or None,
            result=_json(job.get("result")),
            error=_json(job.get("error")),
            steps=steps,
            history=history,
        )

    async def statuses(self, job_ids: list[str]) -> dict[str, str | None]:
        """Current status of many jobs in one round trip (None: unknown or expired)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "status")
            replies = await pipe.execute()
        return dict(zip(job_ids, replies, strict=True))

    async def job_ids(self, limit: int, newest_first: bool = True, offset: int = 0) -> list[str]:
        """Ids of the most recent (or oldest) jobs, merged over every bucket's index."""
        end = offset + limit - 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in self.keys.buckets:
                if newest_first:
                    pipe.zrevrange(self.keys.jobs(b), 0, end, withscores=True)
                else:
                    pipe.zrange(self.keys.jobs(b), 0, end, withscores=True)
            replies: list[list[tuple[str, float]]] = await pipe.execute()
        merged = sorted(
            ((score, str(i)) for reply in replies for i, score in reply), reverse=newest_first
        )
        return [i for _, i in merged[offset : offset + limit]]

    async def jobs(self, status: str | None, limit: int) -> list[JobView]:
        """Recent jobs (newest first), optionally only those in ``status``."""
        found: list[JobView] = []
        offset, page = 0, max(limit, 100)
        while len(found) < limit:
            ids = await self.job_ids(page, offset=offset)
            if not ids:
                break
            offset += page
            for job_id in ids:
                view = await self.job(str(job_id), with_history=False)
                if view is not None and (status is None or view.status == status):
                    found.append(view)
                    if len(found) == limit:
                        break
        return found
