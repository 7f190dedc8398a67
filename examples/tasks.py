"""Example task handlers: what the demo, the benchmark, the container image and the tests
run, and a model for your own.

Shipped in the package, so ``sasfleet agent run sasfleet.examples.tasks`` works from any
directory.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import msgspec

from sasfleet import NonRetryableError, Registry, StepContext, StepSpec

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
