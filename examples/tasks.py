"""Example task handlers, used by the demo, the benchmark and the tests.

Run them with ``sasfleet agent run examples.tasks`` from the repository root.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sasfleet.agent import NonRetryableError, Registry, StepContext
from sasfleet.shared.messages.submit import StepSpec

tasks = Registry()


@tasks.task()
async def echo(payload: Any) -> Any:
    """Returns its payload."""
    return payload


class SleepArgs(msgspec.Struct, frozen=True):
    seconds: float


@tasks.task()
async def sleep(args: SleepArgs) -> dict[str, float]:
    """Sleeps ``seconds`` (asynchronously) and says so."""
    await asyncio.sleep(args.seconds)
    return {"slept": args.seconds}


@tasks.task()
def blocking_sleep(args: SleepArgs) -> dict[str, float]:
    """Sleeps ``seconds`` in a plain function (it runs in a worker thread)."""
    time.sleep(args.seconds)
    return {"slept": args.seconds}


class FailArgs(msgspec.Struct, frozen=True):
    message: str = "told to fail"
    retryable: bool = True


@tasks.task()
async def fail(args: FailArgs) -> None:
    """Always raises (non-retryable if asked)."""
    if args.retryable:
        raise RuntimeError(args.message)
    raise NonRetryableError(args.message)


class OrderArgs(msgspec.Struct, frozen=True):
    """Payload of each step of the three-step order job."""

    order_id: str
    amount_cents: int = 1000
    fail_rate: float = 0.0  # chance that an attempt fails (retryably)
    work_s: float = 0.0
    fail_step: str = ""  # this step fails, non-retryably
    flaky_step: str = ""  # this step fails (retryably) until its attempt `flaky_until`
    flaky_until: int = 0


def _maybe_fail(args: OrderArgs, what: str, ctx: StepContext | None = None) -> None:
    if args.fail_step == what:
        raise NonRetryableError(f"{what} refused order {args.order_id}")
    if ctx is not None and args.flaky_step == what and ctx.attempt < args.flaky_until:
        raise RuntimeError(f"{what} flaked on attempt {ctx.attempt} (simulated)")
    if args.fail_rate and random.random() < args.fail_rate:
        raise RuntimeError(f"{what} failed for order {args.order_id} (simulated)")


@tasks.task()
async def reserve_stock(args: OrderArgs, ctx: StepContext) -> dict[str, Any]:
    """Step 1: reserve the order's items."""
    await asyncio.sleep(args.work_s)
    _maybe_fail(args, "reserve_stock", ctx)
    return {"reservation": f"res-{ctx.idempotency_key}", "order_id": args.order_id}


@tasks.task()
async def charge_card(args: OrderArgs, ctx: StepContext) -> dict[str, Any]:
    """Step 2: charge the card (the idempotency key de-duplicates the charge)."""
    await asyncio.sleep(args.work_s)
    _maybe_fail(args, "charge_card", ctx)
    return {
        "charge": f"ch-{ctx.idempotency_key}",
        "amount_cents": args.amount_cents,
        "fencing_token": ctx.fencing_token,
    }


@tasks.task()
async def ship(args: OrderArgs, ctx: StepContext) -> dict[str, Any]:
    """Step 3: hand the order to the carrier."""
    await asyncio.sleep(args.work_s)
    _maybe_fail(args, "ship", ctx)
    return {"shipment": f"sh-{ctx.idempotency_key}", "order_id": args.order_id}


@tasks.task()
async def release_stock(args: OrderArgs, ctx: StepContext) -> dict[str, Any]:
    """Compensation of reserve_stock: it receives the step's payload; the reservation made
    is the compensated step's result."""
    reserved = await ctx.compensated_result()
    _maybe_fail(args, "release_stock", ctx)
    return {"released": reserved["reservation"]}


@tasks.task()
async def refund_card(args: OrderArgs, ctx: StepContext) -> dict[str, Any]:
    """Compensation of charge_card."""
    charged = await ctx.compensated_result()
    _maybe_fail(args, "refund_card", ctx)
    return {"refunded": charged["charge"], "amount_cents": charged["amount_cents"]}


@tasks.task()
async def heartbeat_sleep(args: SleepArgs, ctx: StepContext) -> dict[str, float]:
    """Sleeps in small slices, reporting progress through ctx.heartbeat()."""
    slept = 0.0
    while slept < args.seconds:
        await asyncio.sleep(min(0.2, args.seconds - slept))
        slept += 0.2
        ctx.heartbeat({"slept": round(slept, 1)})
    return {"slept": args.seconds}


ORDER_STEPS = ("reserve_stock", "charge_card", "ship")
COMPENSATIONS = {"reserve_stock": "release_stock", "charge_card": "refund_card"}


def order_job(
    order_id: str,
    *,
    fail_rate: float = 0.0,
    work_s: float = 0.0,
    max_attempts: int | None = None,
    fail_step: str = "",
    flaky_step: str = "",
    flaky_until: int = 0,
) -> list[StepSpec]:
    """The steps of a three-step order job; reserve and charge are undone (compensated) if
    a later step fails or the job is cancelled."""
    payload = {
        "order_id": order_id,
        "fail_rate": fail_rate,
        "work_s": work_s,
        "fail_step": fail_step,
        "flaky_step": flaky_step,
        "flaky_until": flaky_until,
    }
    return [
        StepSpec(
            task=t, payload=payload, max_attempts=max_attempts, compensation=COMPENSATIONS.get(t)
        )
        for t in ORDER_STEPS
    ]


# --------------------------------------------------------------------------- chaos suite
# `sasfleet chaos` (shared/tools/chaos.py) runs these under faults. Every execution is
# recorded with its idempotency key, fencing token and attempt in a Redis set of the run's
# own (keys under the payload's `ns`, in the fleet's Redis: SASFLEET_REDIS_URL), and each
# step's effect is committed *fenced*: a write carrying a token lower than (or equal to) the
# one already stored is refused and counted, as a real downstream system would do.

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


def chaos_value(n: int, step: int) -> int:
    """What step ``step`` of job ``n`` adds to the running total its results carry."""
    return (n * 7919 + step * 104729) % 1_000_003


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
