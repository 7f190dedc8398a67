"""The chaos suite's task handlers (``sasfleet chaos`` runs its agents on this module).

Every execution is recorded with its idempotency key, fencing token and attempt in a Redis
set of the run's own (keys under the payload's ``ns``, in the fleet's Redis:
``SASFLEET_REDIS_URL``), and each step's effect is committed *fenced*: a write carrying a
token lower than (or equal to) the one already stored is refused and counted, as a real
downstream system would do. Like any handler module, it talks to its own systems (here
Redis) itself.
"""

from __future__ import annotations

import asyncio
import os

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sasfleet import NonRetryableError, Registry, StepContext
from sasfleet.tools.chaos_workload import chaos_value

tasks = Registry()

# KEYS[1] effects hash  KEYS[2] refused-writes hash  ARGV[1] field  [2] token  [3] value
_FENCED_WRITE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(string.match(cur, '^(%d+)|')) >= tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return 1
"""

_chaos_clients: dict[str, aioredis.Redis] = {}


def _chaos_redis() -> aioredis.Redis:
    url = os.environ.get("SASFLEET_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = _chaos_clients.get(url)
    if client is None:
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        _chaos_clients[url] = client
    return client


class ChaosArgs(msgspec.Struct, frozen=True):
    """Payload of a chaos step (and of its compensation, which receives the same)."""

    ns: str  # key prefix of the run's records
    n: int  # the job's number: every result is computed from it
    work_s: float = 0.0
    fail: bool = False  # this step fails, non-retryably (the job compensates)
    flaky: int = 0  # attempts up to this one fail, retryably


async def _chaos_begin(args: ChaosArgs, ctx: StepContext, kind: str) -> aioredis.Redis:
    r = _chaos_redis()
    await r.sadd(
        f"{args.ns}:executions",
        f"{ctx.idempotency_key}|{ctx.fencing_token}|{ctx.attempt}|{kind}|{ctx.agent_id}",
    )
    slept = 0.0
    while slept < args.work_s:
        piece = min(0.1, args.work_s - slept)
        await asyncio.sleep(piece)
        slept += piece
        ctx.heartbeat()
    return r


async def _chaos_commit(
    r: aioredis.Redis, args: ChaosArgs, ctx: StepContext, what: str, key: str, value: int
) -> None:
    if not await ctx.lease_is_current():
        raise NonRetryableError(f"lease {ctx.fencing_token} superseded: effect not committed")
    await r.eval(
        _FENCED_WRITE, 2, f"{args.ns}:{what}", f"{args.ns}:refused", key, ctx.fencing_token, value
    )


@tasks.task()
async def chaos_step(args: ChaosArgs, ctx: StepContext) -> dict[str, int]:
    """A step of a chaos job: its result is the running total of chaos_value over the
    job's steps so far (read from the earlier steps' results)."""
    r = await _chaos_begin(args, ctx, "step")
    if args.fail:
        raise NonRetryableError(f"chaos job {args.n} step {ctx.step} fails (as planned)")
    if ctx.attempt <= args.flaky:
        raise RuntimeError(f"chaos job {args.n} step {ctx.step} flaked on attempt {ctx.attempt}")
    earlier = await ctx.results()
    acc = (earlier[-1]["acc"] if earlier else 0) + chaos_value(args.n, ctx.step)
    await _chaos_commit(r, args, ctx, "effects", ctx.idempotency_key, acc)
    return {"n": args.n, "step": ctx.step, "acc": acc}


@tasks.task()
async def chaos_undo(args: ChaosArgs, ctx: StepContext) -> dict[str, int]:
    """Compensation of chaos_step: undoes the total the compensated step committed."""
    r = await _chaos_begin(args, ctx, "undo")
    done = await ctx.compensated_result()
    await _chaos_commit(r, args, ctx, "undone", f"{ctx.job_id}:{ctx.compensates}", done["acc"])
    return {"n": args.n, "undone": done["acc"]}
